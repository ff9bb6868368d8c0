"""Turn a failed export into one clear error with the seed's exit code (4 for connection).

Database drivers bury the cause in chained exceptions (dlt wraps pyodbc or psycopg2).
This walks the chain, classifies the first recognised cause, and writes a message that
says what to do, with every credential redacted.
"""

from __future__ import annotations

import re

from financial_etl.errors import DestinationConnectionError, FinancialEtlError
from financial_etl.export_target import SUPPORTED_DRIVERS, ExportTarget


class DestinationUnreachableError(DestinationConnectionError):
    """The server did not answer (down, wrong host or port, a firewall, killed mid-load)."""


class PermanentDestinationError(DestinationConnectionError):
    """Retrying will not help: fix the settings first."""


class NoOdbcDriverError(PermanentDestinationError):
    pass


class LoginFailedError(PermanentDestinationError):
    pass


class MissingDatabaseError(PermanentDestinationError):
    pass


class ExportFailedError(FinancialEtlError):
    """The export failed for another reason (the message says which)."""


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 30:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def installed_odbc_drivers() -> list[str]:
    try:
        import pyodbc

        return list(pyodbc.drivers())
    except Exception:  # pyodbc itself missing or unixODBC not installed
        return []


def classify(exc: BaseException, target: ExportTarget) -> FinancialEtlError:
    text = target.redact(" | ".join(f"{type(e).__name__}: {e}" for e in _chain(exc)))
    lowered = text.lower()
    where = target.description

    if target.kind == "mssql" and (
        "im002" in lowered or "can't open lib" in lowered or "data source name not found" in lowered
        or "no module named 'pyodbc'" in lowered or "libodbc" in lowered
        or "no supported odbc driver" in lowered  # dlt's own check, with DESTINATION__MSSQL__CREDENTIALS
    ):
        installed = installed_odbc_drivers()
        return NoOdbcDriverError(
            f"no usable SQL Server ODBC driver for {where}. Installed ODBC drivers: "
            f"{', '.join(installed) if installed else 'none'}. dlt's mssql destination needs "
            f"{' or '.join(SUPPORTED_DRIVERS)}: install Microsoft's msodbcsql18 package (Debian/Ubuntu: "
            "apt-get install msodbcsql18 from Microsoft's repository), or register the driver shipped in the "
            "PyPI package mssql-python-odbc (see the README), and unixODBC (apt-get install unixodbc)."
        )
    if re.search(r"\b28000\b", text) or "login failed" in lowered or "password authentication failed" in lowered:
        return LoginFailedError(f"login to {where} failed: check the username and password (detail: {_short(text)})")
    if ("cannot open database" in lowered or re.search(r"\b4060\b", text)
            or re.search(r'database "[^"]+" does not exist', lowered)):
        return MissingDatabaseError(f"the database of {where} does not exist: create it or fix the database name "
                                    f"(detail: {_short(text)})")
    if (re.search(r"\b(08001|08S01|HYT00|HYT01)\b", text) or "could not connect" in lowered
            or "connection refused" in lowered or "server closed the connection" in lowered
            or "terminating connection" in lowered or "timeout expired" in lowered
            or "connection already closed" in lowered or "no route to host" in lowered
            or "name or service not known" in lowered or "could not translate host name" in lowered):
        return DestinationUnreachableError(
            f"cannot reach {where}: is the server running and the host and port right? The target was left as "
            f"it was; the next run repeats the export (detail: {_short(text)})"
        )
    return ExportFailedError(f"export to {where} failed: {_short(text, 600)}")


def _short(text: str, limit: int = 300) -> str:
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
