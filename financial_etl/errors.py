"""Error types and the exit codes the seed assigns to them.

Each error class maps to one exit code of `financial-etl`, so a failed Dagster step can be
turned back into the right code from the error's class name alone.
"""

from __future__ import annotations

EXIT_SUCCESS = 0
EXIT_UNEXPECTED = 1
EXIT_CONFIG = 2
EXIT_DATA_QUALITY = 3
EXIT_CONNECTION = 4
EXIT_STORAGE = 5


class FinancialEtlError(Exception):
    """Base class: an error this project raises on purpose, with a readable message."""

    exit_code = EXIT_UNEXPECTED


class ConfigError(FinancialEtlError):
    """A setting, input file or argument is wrong; nothing has been written."""

    exit_code = EXIT_CONFIG


class DataQualityError(FinancialEtlError):
    """Data arrived but breaks a blocking rule (an audit, a required ticker)."""

    exit_code = EXIT_DATA_QUALITY


class DestinationConnectionError(FinancialEtlError):
    """A database or server could not be reached or refused the login."""

    exit_code = EXIT_CONNECTION


class MissingTickersError(DataQualityError):
    """Some requested tickers returned no rows for a range with trading sessions."""


class SourceUnavailableError(FinancialEtlError):
    """The price source kept failing after its retries, or answered nothing at all for
    a range with trading sessions."""

    exit_code = EXIT_CONNECTION


class StorageError(FinancialEtlError):
    """A file the pipeline must write cannot be written: the disk is full, or the path
    is read-only or not permitted. The message names the path."""

    exit_code = EXIT_STORAGE


# Dagster's own error when a blocking asset check fails.
_DAGSTER_CLASS_CODES = {"DagsterAssetCheckFailedError": EXIT_DATA_QUALITY}


def exit_code_for_class_name(name: str) -> int | None:
    """The exit code of a project error class (any subclass) or a known Dagster error."""
    if name in _DAGSTER_CLASS_CODES:
        return _DAGSTER_CLASS_CODES[name]
    pending = [FinancialEtlError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name and cls is not FinancialEtlError:
            return cls.exit_code
        pending.extend(cls.__subclasses__())
    return None
