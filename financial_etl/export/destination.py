"""The export's destination: which target, with which credentials, and its errors.

Resolution order, first match wins:
1. FINANCIAL_ETL_MSSQL_URL, or FINANCIAL_ETL_MSSQL_HOST with _PORT, _DATABASE, _USERNAME,
   _PASSWORD, _DRIVER, _TRUST_SERVER_CERTIFICATE (passed to Dagster as EnvVars, so the UI
   shows variable names, never values);
2. dlt's own conventions: DESTINATION__MSSQL__CREDENTIALS* variables or
   `.dlt/secrets.toml` [destination.mssql.credentials];
3. the seed's credentials.json: key `ms_target_01` -> `info` -> server, port, database,
   username, password (FINANCIAL_ETL_MSSQL_CREDENTIALS_FILE, _CREDENTIALS_KEY);
4. FINANCIAL_ETL_EXPORT_URL with another dlt destination (postgresql://, duckdb:///);
5. else the local DuckDB stand-in, said so in the log and metadata.
Every export setting that is set is checked while resolving (even one an earlier target
shadows), so the CLI's preflight refuses a bad one before anything is written.

Credentials live only in `_credentials` (excluded from repr); `description` names host,
port and database, never the password. A failed load is classified into one clear error
(exit code 4 for connections) with every credential redacted: database drivers bury the
cause in chained exceptions (dlt wraps pyodbc or psycopg2).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import dlt
from dagster import ConfigurableResource, EnvVar

from financial_etl.errors import (
    ConfigError,
    DestinationUnreachableError,
    ExportFailedError,
    FinancialEtlError,
    LoginFailedError,
    MissingDatabaseError,
    NoOdbcDriverError,
    chain,
    redact_secrets,
)
from financial_etl.settings import Settings, check_path, parse_bool, refuse_blank
from financial_etl.warehouse.engines import duckdb_credentials
from financial_etl.warehouse.lock import held_elsewhere

MSSQL_PREFIX = "FINANCIAL_ETL_MSSQL_"
MSSQL_FIELDS = (
    "HOST",
    "PORT",
    "DATABASE",
    "USERNAME",
    "PASSWORD",
    "DRIVER",
    "TRUST_SERVER_CERTIFICATE",
    "URL",
    "CONNECT_TIMEOUT",
)
# What FINANCIAL_ETL_MSSQL_URL holds itself: these beside it would be ignored.
URL_FIELDS = ("HOST", "PORT", "DATABASE", "USERNAME", "PASSWORD", "DRIVER")
EXPORT_URL_ENV = "FINANCIAL_ETL_EXPORT_URL"
DEFAULT_DRIVER = "ODBC Driver 18 for SQL Server"
SUPPORTED_DRIVERS = ("ODBC Driver 18 for SQL Server", "ODBC Driver 17 for SQL Server")
NAMING = "sql_cs_v1"  # keeps Dim_Stock_Metrics' case, as the seed's TARGET_TABLE intends


@dataclass(frozen=True)
class ExportTarget:
    kind: str  # "mssql", "postgres" or "duckdb-standin"
    schema: str
    table: str
    description: str
    _credentials: Any = field(repr=False, default=None)  # None: dlt resolves its own config
    secrets: tuple[str, ...] = field(repr=False, default=())  # values to redact from errors
    # dlt's loader file format: PostgreSQL loads Parquet through ADBC, 3x COPY's rows/s and 9x
    # INSERT VALUES' (docs/scaling-out.md); None is dlt's default, INSERT VALUES, which SQL
    # Server keeps (its ADBC driver is not installable offline).
    load_format: str | None = None

    @property
    def is_standin(self) -> bool:
        return self.kind == "duckdb-standin"

    @property
    def dagster_kind(self) -> str:
        return {"mssql": "mssql", "postgres": "postgres"}.get(self.kind, "duckdb")

    def destination(self, replace_strategy: str | None = None):
        # insert-from-staging: a full refresh loads a staging table, then swaps the rows in
        # one transaction, so readers never see an empty or half-loaded table.
        options: dict[str, Any] = {"naming_convention": NAMING}
        if replace_strategy:
            options["replace_strategy"] = replace_strategy
        if self.kind == "mssql":
            return dlt.destinations.mssql(credentials=self._credentials, **options)
        if self.kind == "postgres":
            return dlt.destinations.postgres(credentials=self._credentials, **options)
        return dlt.destinations.duckdb(duckdb_credentials(Path(self._credentials)), **options)

    def rename_sql(self, client, old: str, new: str) -> str:
        """Rename table `old` of the target's schema to `new` (both plain identifiers)."""
        if self.kind == "mssql":
            return f"EXEC sp_rename '{self.schema}.{old}', '{new}'"
        return f"ALTER TABLE {client.make_qualified_table_name(old)} RENAME TO {client.escape_column_name(new)}"

    def redact(self, text: str) -> str:
        return redact_secrets(text, self.secrets)


def _port(name: str, value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        raise ConfigError(f"{name}={value!r} is not a port number (1 to 65535)")
    return port


def _url_port(name: str, parts, default: int) -> int:
    """The URL's port; the URL itself stays out of the message (it may hold a password)."""
    try:
        return parts.port or default
    except ValueError:  # not a number, or beyond 65535
        raise ConfigError(f"{name} has a port that is not a number from 1 to 65535") from None


def _seconds(name: str, value: Any) -> int:
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        seconds = 0
    if seconds <= 0:
        raise ConfigError(f"{name}={value!r} is not a whole number of seconds above 0")
    return seconds


def _trust(name: str, value: Any) -> bool:
    return parse_bool(name, None if value is None else str(value), False)


def mssql_from_fields(fields: Mapping[str, Any], settings: Settings) -> ExportTarget:
    """Build the SQL Server target from resolved field values (HOST, PORT, ... or URL)."""
    trust = _trust(MSSQL_PREFIX + "TRUST_SERVER_CERTIFICATE", fields.get("TRUST_SERVER_CERTIFICATE"))
    timeout = fields.get("CONNECT_TIMEOUT")
    if fields.get("URL"):
        if beside := [MSSQL_PREFIX + name for name in URL_FIELDS if fields.get(name)]:
            raise ConfigError(
                f"FINANCIAL_ETL_MSSQL_URL is set beside {', '.join(beside)}: give the SQL Server "
                "target one way, the URL or the separate settings"
            )
        return _mssql_from_url(str(fields["URL"]), settings, trust=trust, connect_timeout=timeout)
    host = fields.get("HOST")
    if not host:
        raise ConfigError(
            f"{', '.join(MSSQL_PREFIX + name for name in fields)} set without FINANCIAL_ETL_MSSQL_HOST "
            "(or FINANCIAL_ETL_MSSQL_URL): set the server, or unset them"
        )
    return _mssql(
        settings,
        host=str(host),
        port=_port(MSSQL_PREFIX + "PORT", fields.get("PORT") or 1433),
        database=str(fields.get("DATABASE") or "FINANCIAL_MART"),
        username=fields.get("USERNAME"),
        password=fields.get("PASSWORD"),
        driver=str(fields.get("DRIVER") or DEFAULT_DRIVER),
        trust=trust,
        origin="FINANCIAL_ETL_MSSQL_* settings",
        connect_timeout=timeout,
    )


def _mssql(
    settings, *, host, port, database, username, password, driver, trust, origin, connect_timeout=None
) -> ExportTarget:
    if not username or not password:
        missing = " and ".join(n for n, v in (("username", username), ("password", password)) if not v)
        raise ConfigError(
            f"the SQL Server target ({origin}) has no {missing}: set FINANCIAL_ETL_MSSQL_USERNAME "
            "and FINANCIAL_ETL_MSSQL_PASSWORD (or give them in the URL or credentials file)"
        )
    if driver not in SUPPORTED_DRIVERS:
        raise ConfigError(
            f"FINANCIAL_ETL_MSSQL_DRIVER={driver!r}: dlt's mssql destination needs "
            f"{' or '.join(repr(d) for d in SUPPORTED_DRIVERS)} (FreeTDS is not supported)"
        )
    query = {"TrustServerCertificate": "yes"} if trust else {}
    credentials = {
        "host": host,
        "port": port,
        "database": database,
        "username": username,
        "password": password,
        "driver": driver,
        "query": query,
    }
    if connect_timeout is not None:
        credentials["connect_timeout"] = _seconds(MSSQL_PREFIX + "CONNECT_TIMEOUT", connect_timeout)
    return ExportTarget(
        kind="mssql",
        schema=settings.export_schema,
        table=settings.export_table,
        description=(
            f"SQL Server {host}:{port}/{database} table {settings.export_schema}.{settings.export_table} ({origin})"
        ),
        _credentials=credentials,
        secrets=(password,) if password else (),
    )


def _mssql_from_url(
    url: str, settings: Settings, trust: bool, name: str = MSSQL_PREFIX + "URL", connect_timeout: Any = None
) -> ExportTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("mssql", "mssql+pyodbc"):
        raise ConfigError(f"{name} must start with mssql://")
    if not parts.hostname:
        raise ConfigError(f"{name} has no host")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return _mssql(
        settings,
        host=parts.hostname,
        port=_url_port(name, parts, 1433),
        database=unquote(parts.path.lstrip("/")) or "FINANCIAL_MART",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        driver=query.get("driver", DEFAULT_DRIVER),
        trust=trust or _trust(f"{name}'s TrustServerCertificate", query.get("TrustServerCertificate")),
        origin=name,
        connect_timeout=connect_timeout,
    )


def _dlt_configures_mssql(env: Mapping[str, str]) -> bool:
    if any(key.startswith("DESTINATION__MSSQL__CREDENTIALS") for key in env):
        return True
    secrets = Path(".dlt") / "secrets.toml"
    if secrets.is_file():
        try:
            import tomllib

            data = tomllib.loads(secrets.read_text())
        except (OSError, ValueError):
            return False
        return bool(data.get("destination", {}).get("mssql", {}).get("credentials"))
    return False


def _from_credentials_file(path: Path, key: str, settings: Settings) -> ExportTarget:
    try:
        info = json.loads(path.read_text())[key]["info"]
        return _mssql(
            settings,
            host=str(info["server"]),
            port=_port(f"{path} port", info.get("port", 1433)),
            database=str(info["database"]),
            username=info.get("username"),
            password=info.get("password"),
            driver=str(info.get("driver", DEFAULT_DRIVER)),
            trust=_trust(f"{path} trust_server_certificate", info.get("trust_server_certificate")),
            origin=f"{path.name} key {key}",
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else type(exc).__name__
        raise ConfigError(
            f'{path}: expected {{"{key}": {{"info": {{"server", "port", "database", "username", '
            f'"password"}}}}}} ({detail})'
        ) from None


def _from_export_url(url: str, settings: Settings) -> ExportTarget:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    where = f"table {settings.export_schema}.{settings.export_table}"
    if scheme in ("postgres", "postgresql"):
        if not parts.hostname:
            raise ConfigError(f"{EXPORT_URL_ENV} has no host")
        return ExportTarget(
            kind="postgres",
            schema=settings.export_schema,
            table=settings.export_table,
            description=f"PostgreSQL {parts.hostname}:{_url_port(EXPORT_URL_ENV, parts, 5432)}{parts.path} {where}",
            _credentials=url,
            secrets=(unquote(parts.password),) if parts.password else (),
            load_format="parquet",
        )
    if scheme == "duckdb":
        path = url.split("///", 1)[-1]
        if "///" not in url or not path:
            raise ConfigError(f"{EXPORT_URL_ENV}={url!r} names no file: write duckdb:///<path>")
        check_path(EXPORT_URL_ENV, Path(path))
        return ExportTarget(
            "duckdb-standin", settings.export_schema, settings.export_table, f"DuckDB {path} {where}", path
        )
    if scheme in ("mssql",):
        return _mssql_from_url(url, settings, trust=False, name=EXPORT_URL_ENV)
    raise ConfigError(f"{EXPORT_URL_ENV} must be a postgresql://, mssql:// or duckdb:/// URL")


def mssql_env_fields(env: Mapping[str, str]) -> dict[str, str]:
    """The FINANCIAL_ETL_MSSQL_* variables that are set (names without the prefix)."""
    return {name: env[MSSQL_PREFIX + name] for name in MSSQL_FIELDS if env.get(MSSQL_PREFIX + name)}


def export_target_for(
    settings: Settings, env: Mapping[str, str] | None = None, mssql_fields: Mapping[str, Any] | None = None
) -> ExportTarget:
    """The target by the resolution order above, every set export setting checked;
    `mssql_fields` are resolved EnvVar values."""
    env = os.environ if env is None else env
    refuse_blank(env)
    fields = mssql_fields if mssql_fields is not None else mssql_env_fields(env)
    url_target = _from_export_url(env[EXPORT_URL_ENV], settings) if env.get(EXPORT_URL_ENV) else None
    named_file = env.get(MSSQL_PREFIX + "CREDENTIALS_FILE")
    if named_file and not Path(named_file).is_file():
        raise ConfigError(f"FINANCIAL_ETL_MSSQL_CREDENTIALS_FILE={named_file!r} is not a file")
    if fields:
        return mssql_from_fields(fields, settings)
    if _dlt_configures_mssql(env):
        return ExportTarget(
            kind="mssql",
            schema=settings.export_schema,
            table=settings.export_table,
            description=f"SQL Server from dlt's configuration, table {settings.export_schema}.{settings.export_table}",
        )
    creds_file = Path(named_file or "credentials.json")
    if creds_file.is_file():
        return _from_credentials_file(creds_file, env.get(MSSQL_PREFIX + "CREDENTIALS_KEY") or "ms_target_01", settings)
    if url_target is not None:
        return url_target
    path = str(settings.export_duckdb_path)
    return ExportTarget(
        kind="duckdb-standin",
        schema=settings.export_schema,
        table=settings.export_table,
        description=(
            f"local stand-in {path} table {settings.export_schema}.{settings.export_table} "
            f"(no SQL Server configured: set FINANCIAL_ETL_MSSQL_HOST)"
        ),
        _credentials=path,
    )


class ExportDestination(ConfigurableResource):
    """The SQL Server settings as Dagster resource config: definitions pass EnvVars, so the
    UI and run config show variable names, never a password."""

    host: str | None = None
    port: str | None = None
    database: str | None = None
    username: str | None = None
    password: str | None = None
    driver: str | None = None
    trust_server_certificate: str | None = None
    url: str | None = None
    connect_timeout: str | None = None

    @classmethod
    def from_environment(cls, env=None) -> ExportDestination:
        names = mssql_env_fields(os.environ if env is None else env)
        return cls(**{name.lower(): EnvVar(MSSQL_PREFIX + name) for name in names})

    def target(self, settings: Settings) -> ExportTarget:
        fields = {name: getattr(self, name.lower()) for name in MSSQL_FIELDS if getattr(self, name.lower())}
        return export_target_for(settings, mssql_fields=fields)


# What a failed connection is, from the codes the drivers give: the SQLSTATE (pyodbc's
# args[0], psycopg2's pgcode, psycopg's and ADBC's sqlstate) and SQL Server's own error
# number where its SQLSTATE (42000) is too general.
NO_DRIVER, LOGIN, NO_DATABASE, UNREACHABLE = "no driver", "login", "no database", "unreachable"
SQLSTATES = {
    "IM002": NO_DRIVER,
    "IM003": NO_DRIVER,
    "28000": LOGIN,
    "28P01": LOGIN,
    "3D000": NO_DATABASE,
    **dict.fromkeys(
        ("08001", "08003", "08004", "08006", "08S01", "HYT00", "HYT01", "57P01", "57P02", "57P03"), UNREACHABLE
    ),
}
MSSQL_NUMBERS = {18456: LOGIN, 4060: NO_DATABASE}
# ODBC puts the server's error number in the message, "... Login failed for user 'etl'. (18456) (SQLDriverConnect)".
ODBC_NUMBER = re.compile(r"\((\d+)\) \(SQL\w+\)")


def sqlstate(exc: BaseException) -> str | None:
    for name in ("sqlstate", "pgcode"):
        if isinstance(code := getattr(exc, name, None), str) and code:
            return code
    if _is_pyodbc_error(exc) and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return None


def _is_pyodbc_error(exc: BaseException) -> bool:
    try:
        import pyodbc
    except ImportError:  # no pyodbc, or no unixODBC under it: no pyodbc error either
        return False
    return isinstance(exc, pyodbc.Error)


def kind_from_codes(exc: BaseException) -> str | None:
    """The kind of failure the first driver error in the chain reports by its codes."""
    for cause in chain(exc):
        if isinstance(cause, ModuleNotFoundError) and cause.name == "pyodbc":
            return NO_DRIVER
        if _is_pyodbc_error(cause) and len(cause.args) > 1 and (number := ODBC_NUMBER.search(str(cause.args[1]))):
            if (kind := MSSQL_NUMBERS.get(int(number.group(1)))) is not None:
                return kind
        if (kind := SQLSTATES.get(sqlstate(cause) or "")) is not None:
            return kind
    return None


def kind_from_text(lowered: str) -> str | None:
    """Where a driver gives no code, only its text names the failure: libpq's connection
    errors through psycopg2 (refused, bad password, missing database: no pgcode), the ODBC
    driver manager's "Can't open lib" (SQLSTATE 01000, a mere warning class), a missing
    libodbc under pyodbc (an ImportError) and dlt's own check for a supported driver."""
    if (
        "can't open lib" in lowered
        or "data source name not found" in lowered
        or "libodbc" in lowered
        or "no supported odbc driver" in lowered
    ):
        return NO_DRIVER
    if "login failed" in lowered or "password authentication failed" in lowered:
        return LOGIN
    if "cannot open database" in lowered or re.search(r'database "[^"]+" does not exist', lowered):
        return NO_DATABASE
    if (
        "could not connect" in lowered
        or "connection refused" in lowered
        or "server closed the connection" in lowered
        or "terminating connection" in lowered
        or "timeout expired" in lowered
        or "connection already closed" in lowered
        or "no route to host" in lowered
        or "name or service not known" in lowered
        or "could not translate host name" in lowered
    ):
        return UNREACHABLE
    return None


def installed_odbc_drivers() -> list[str]:
    try:
        import pyodbc

        return list(pyodbc.drivers())
    except Exception:  # pyodbc itself missing or unixODBC not installed
        return []


def classify(exc: BaseException, target: ExportTarget) -> FinancialEtlError:
    if (held := held_elsewhere(exc)) is not None:  # the DuckDB stand-in open in another program
        return held
    text = target.redact(" | ".join(f"{type(e).__name__}: {e}" for e in chain(exc)))
    where = target.description
    kind = kind_from_codes(exc) or kind_from_text(text.lower())
    if kind == NO_DRIVER and target.kind == "mssql":
        installed = installed_odbc_drivers()
        return NoOdbcDriverError(
            f"no usable SQL Server ODBC driver for {where}. Installed ODBC drivers: "
            f"{', '.join(installed) if installed else 'none'}. dlt's mssql destination needs "
            f"{' or '.join(SUPPORTED_DRIVERS)}: install Microsoft's msodbcsql18 package (Debian/Ubuntu: "
            "apt-get install msodbcsql18 from Microsoft's repository), or register the driver shipped in the "
            "PyPI package mssql-python-odbc (see the README), and unixODBC (apt-get install unixodbc)."
        )
    if kind == LOGIN:
        return LoginFailedError(f"login to {where} failed: check the username and password (detail: {_short(text)})")
    if kind == NO_DATABASE:
        return MissingDatabaseError(
            f"the database of {where} does not exist: create it or fix the database name (detail: {_short(text)})"
        )
    if kind == UNREACHABLE:
        return DestinationUnreachableError(
            f"cannot reach {where}: is the server running and the host and port right? The target was left as "
            f"it was; the next run repeats the export (detail: {_short(text)})"
        )
    return ExportFailedError(f"export to {where} failed: {_short(text, 600)}")


def _short(text: str, limit: int = 300) -> str:
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
