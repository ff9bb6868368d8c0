"""Every error class this project raises on purpose, and the exit code of each.

Each class carries its exit code; `financial-etl` reads it from the exception a failed
Dagster step raised (`exit_code_for`), so this module is the one place that says which
failure means which code.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

EXIT_SUCCESS = 0
EXIT_UNEXPECTED = 1
EXIT_CONFIG = 2
EXIT_DATA_QUALITY = 3
EXIT_CONNECTION = 4
EXIT_STORAGE = 5
# A run stopped by a signal exits 128 + its number, what a shell reports for a process the
# signal killed: cron, systemd and Kubernetes read it as "stopped", not as a data failure.
EXIT_SIGNAL_BASE = 128
EXIT_SIGINT = EXIT_SIGNAL_BASE + signal.SIGINT  # 130
EXIT_SIGTERM = EXIT_SIGNAL_BASE + signal.SIGTERM  # 143


def exit_code_for_signal(signum: int) -> int:
    return EXIT_SIGNAL_BASE + signum


REDACTED = "***"


def redact_secrets(text: str, secrets) -> str:
    """`text` with every (non-empty) secret replaced: what may reach a log, an error or the UI."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and what it wraps, innermost last, as a traceback shows them (a context
    suppressed by `raise ... from None` is left out)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ if exc.__cause__ is not None or exc.__suppress_context__ else exc.__context__


def interruption(exc: BaseException) -> BaseException | None:
    """The interrupt behind `exc`, if a library turned one into an ordinary error (DuckDB
    raises "Query interrupted" from Dagster's interrupt on SIGTERM): a stopped run must not
    be retried as if the database had failed."""
    from dagster import DagsterExecutionInterruptedError  # not at the top: sources use this module

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (KeyboardInterrupt, DagsterExecutionInterruptedError)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class FinancialEtlError(Exception):
    """Base class: an error this project raises on purpose, with a readable message."""

    exit_code = EXIT_UNEXPECTED


class ConfigError(FinancialEtlError):
    """A setting, input file or argument is wrong; nothing has been written."""

    exit_code = EXIT_CONFIG


class DataQualityError(FinancialEtlError):
    """Data arrived but breaks a blocking rule (an audit, a required ticker)."""

    exit_code = EXIT_DATA_QUALITY


class MissingTickersError(DataQualityError):
    """Some requested tickers returned no rows for a range with trading sessions."""


class BlockingAuditError(DataQualityError):
    """SQLMesh stopped the mart's run at a failing blocking audit; its rows stay for inspection."""


class UnknownTickerError(ConfigError):
    """The source does not know a configured symbol (misspelt or delisted): the ticker
    list is wrong, not the data."""


class SourceUnavailableError(FinancialEtlError):
    """The price source kept failing after its retries, or answered nothing at all for
    a range with trading sessions."""

    exit_code = EXIT_CONNECTION


class DestinationConnectionError(FinancialEtlError):
    """A database or server could not be reached or refused the login."""

    exit_code = EXIT_CONNECTION


class AlertDeliveryError(FinancialEtlError):
    """A failed-run alert could not be sent (e-mail or Slack) after its retries; the
    alert log still holds it."""

    exit_code = EXIT_CONNECTION


class DestinationUnreachableError(DestinationConnectionError):
    """The server did not answer (down, wrong host or port, a firewall, killed mid-load)."""


class PermanentDestinationError(DestinationConnectionError):
    """Retrying will not help: fix the settings first."""


class NoOdbcDriverError(PermanentDestinationError):
    """No SQL Server ODBC driver that dlt accepts is installed."""


class LoginFailedError(PermanentDestinationError):
    """The server refused the username or password."""


class MissingDatabaseError(PermanentDestinationError):
    """The target database does not exist."""


class ExportFailedError(FinancialEtlError):
    """The export failed for another reason (the message says which)."""


class StorageError(FinancialEtlError):
    """A file the pipeline must write cannot be written: the disk is full, or the path
    is read-only or not permitted. The message names the path."""

    exit_code = EXIT_STORAGE


class WarehouseBusyError(FinancialEtlError):
    """Another run held the warehouse for longer than the wait allows."""


class WarehouseUnavailableError(FinancialEtlError):
    """The warehouse server cannot be reached (or the DuckDB file is held by another process)."""

    exit_code = EXIT_CONNECTION


def project_error(exc: BaseException | None) -> FinancialEtlError | None:
    """The first of this project's errors in `exc`'s chain: its message says what to do."""
    return next((e for e in chain(exc) if isinstance(e, FinancialEtlError)), None)


def exit_code_for(exc: BaseException | None) -> int | None:
    """The exit code of the project's error in `exc`'s chain, or None for any other error."""
    return error.exit_code if (error := project_error(exc)) is not None else None
