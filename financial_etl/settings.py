"""One typed settings object, read from FINANCIAL_ETL_* environment variables.

Every default works on a fresh clone (synthetic source, DuckDB under data/). Parsing
fails at once, naming the setting and the bad value, before anything is written. A
variable set but empty is refused, never read as its default.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from financial_etl.automation.freshness import DEFAULT_DEADLINE_CRON, deadline_policy
from financial_etl.calendar import FIRST_DAY, LAST_DAY
from financial_etl.errors import ConfigError
from financial_etl.warehouse.engines import Warehouse, parse_warehouse

ENV_PREFIX = "FINANCIAL_ETL_"
REPO_ROOT = Path(__file__).resolve().parent.parent
SQLMESH_PROJECT_DIR = REPO_ROOT / "sqlmesh_project"
DEFAULT_DATA_DIR = REPO_ROOT / "data"
DEFAULT_TICKERS_FILE = REPO_ROOT / "tickers.txt"

SOURCES = ("synthetic", "csv", "yfinance")
DEFAULT_EXPORT_SCHEMA = "dbo"
DEFAULT_EXPORT_TABLE = "Dim_Stock_Metrics"  # the seed's target table
DEFAULT_OWNER = "team:data-engineering"
SEED_TICKERS = ("AAPL", "MSFT", "GOOGL", "AMZN", "META", "NVDA", "TSLA")
DEFAULT_START = dt.date(2020, 1, 1)
DEFAULT_SUSPICIOUS_MOVE_PCT = 30.0  # catches a missed 3-for-2 split (-33%) and anything larger
# Symbols reach file paths, SQL and HTTP requests, so only plain exchange-symbol
# characters pass: the one validator, used by every setting, run tag and source.
TICKER_CHARS = r"[A-Z0-9.^=-]{1,15}"
TICKER_PATTERN = re.compile(rf"^{TICKER_CHARS}$")
TICKER_RULE = "allowed: A-Z, 0-9 and . ^ = -, at most 15 characters"
# Characters a warehouse path cannot hold, found with a run per character: dlt's duckdb
# loader splices the path into read_parquet('…') unquoted (') and %-formats it (%), and
# parses it as a SQLAlchemy URL, which control characters break; DuckDB cuts a path at `?`
# (its write-ahead log goes astray) and reads a `name=value` folder as a hive partition (=).
UNSAFE_PATH_CHARS = re.compile(r"['%?=\x00-\x1f\x7f]")


@dataclass(frozen=True)
class EmailAlerts:
    """Where failed-run e-mails go, through the SMTP server that relays them."""

    host: str
    port: int
    security: str  # "STARTTLS" or "SSL", the names Dagster's e-mail sensor takes
    sender: str
    recipients: tuple[str, ...]
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class SlackAlerts:
    """The Slack channel failed runs are posted to, and the bot token that posts."""

    channel: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    """What one pipeline run needs to know; see the README's configuration table."""

    source: str = "synthetic"
    csv_dir: Path | None = None
    tickers: tuple[str, ...] = SEED_TICKERS  # the universe when the settings were read
    tickers_file: Path | None = None  # re-read by current_tickers(); None when set by env
    start_date: dt.date = DEFAULT_START
    end_date: dt.date | None = None  # None: today, resolved when asked
    duckdb_path: Path = DEFAULT_DATA_DIR / "financial_etl.duckdb"
    export_duckdb_path: Path = DEFAULT_DATA_DIR / "export.duckdb"
    export_schema: str = DEFAULT_EXPORT_SCHEMA
    export_table: str = DEFAULT_EXPORT_TABLE
    sqlmesh_project_dir: Path = SQLMESH_PROJECT_DIR
    owner: str = DEFAULT_OWNER
    alert_log: Path = DEFAULT_DATA_DIR / "alerts.log"
    alert_email: EmailAlerts | None = None  # FINANCIAL_ETL_ALERT_SMTP_*: None sends no e-mail
    alert_slack: SlackAlerts | None = None  # FINANCIAL_ETL_ALERT_SLACK_*: None posts nothing
    allow_partial_loads: bool = False  # load the other tickers when some return nothing
    # A close-to-close move beyond this many percent with no split or dividend is reported.
    suspicious_move_pct: float = DEFAULT_SUSPICIOUS_MOVE_PCT
    freshness_deadline_cron: str = DEFAULT_DEADLINE_CRON  # when the mart and the export are due
    warehouse_url: str | None = field(default=None, repr=False)  # FINANCIAL_ETL_WAREHOUSE: may hold a password
    spark_metastore: str | None = None  # FINANCIAL_ETL_SPARK_METASTORE: thrift://host:port
    sqlmesh_state_url: str | None = field(default=None, repr=False)  # FINANCIAL_ETL_SQLMESH_STATE: has a password

    @property
    def warehouse(self) -> Warehouse:
        return parse_warehouse(
            self.warehouse_url, self.duckdb_path, self.sqlmesh_project_dir, self.spark_metastore, self.sqlmesh_state_url
        )

    @property
    def data_dir(self) -> Path:
        return self.duckdb_path.parent

    @property
    def pipelines_dir(self) -> Path:
        """dlt's local working state lives beside the warehouse, not in ~/.dlt."""
        return self.data_dir / ".dlt_pipelines"

    def current_tickers(self) -> tuple[str, ...]:
        """The ticker universe now: the file is re-read, so an edit needs no reload."""
        return read_tickers_file(self.tickers_file) if self.tickers_file else self.tickers

    def resolved_end(self, today: dt.date | None = None) -> dt.date:
        return self.end_date or (today or dt.date.today())

    def with_range(self, start: dt.date | None, end: dt.date | None) -> Settings:
        """The same settings for another date range, validated the same way."""
        updated = replace(
            self,
            start_date=start or self.start_date,
            end_date=end or self.end_date,
        )
        _check_range(updated.start_date, updated.resolved_end())
        return updated


def refuse_blank(env: Mapping[str, str]) -> None:
    """No FINANCIAL_ETL_* variable may be set but empty: a deployment template that renders
    a missing value as "" must not silently get the default (a warehouse in the
    repository's data/ folder, the synthetic source, the seed's start date)."""
    blank = sorted(name for name, value in env.items() if name.startswith(ENV_PREFIX) and not value.strip())
    if blank:
        raise ConfigError(f"set but empty: {', '.join(blank)}; give a value, or unset the variable to use its default")


def parse_date(name: str, value: str) -> dt.date:
    """A YYYY-MM-DD date inside the NYSE calendar the pipeline knows (calendar.py)."""
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a date in YYYY-MM-DD form") from None
    if day < FIRST_DAY:
        raise ConfigError(f"{name}={value!r} is before {FIRST_DAY}, the first session of the NYSE calendar")
    if day > LAST_DAY:
        raise ConfigError(f"{name}={value!r} is after {LAST_DAY}, the last day of the NYSE calendar")
    return day


def parse_tickers(name: str, value: str) -> tuple[str, ...]:
    tickers = tuple(t.strip().upper() for t in value.split(",") if t.strip())
    if not tickers:
        raise ConfigError(f"{name}={value!r} holds no ticker; give a comma-separated list")
    for ticker in tickers:
        if not TICKER_PATTERN.match(ticker):
            raise ConfigError(f"{name}: {ticker!r} is not a valid ticker symbol ({TICKER_RULE})")
    if len(set(tickers)) != len(tickers):
        raise ConfigError(f"{name}={value!r} lists a ticker twice")
    return tickers


def validate_tickers(tickers: Sequence[str]) -> None:
    """Refuse any symbol outside the pattern, even one handed over by code."""
    bad = [t for t in tickers if not isinstance(t, str) or not TICKER_PATTERN.match(t)]
    if bad:
        raise ConfigError(f"refusing ticker symbol(s) {', '.join(repr(t) for t in bad)}: {TICKER_RULE}")


def read_tickers_file(path: Path) -> tuple[str, ...]:
    """One symbol per line (commas allowed), `#` starts a comment; errors name the line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"FINANCIAL_ETL_TICKERS_FILE={str(path)!r} cannot be read ({exc.strerror})") from None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8 text; save the file as UTF-8"
        ) from None
    tickers: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            try:
                tickers.extend(parse_tickers(f"{path}:{number}", text))
            except ConfigError as exc:
                raise ConfigError(str(exc)) from None
    if not tickers:
        raise ConfigError(f"{path} lists no ticker")
    if len(set(tickers)) != len(tickers):
        twice = sorted({t for t in tickers if tickers.count(t) > 1})
        raise ConfigError(f"{path} lists {', '.join(twice)} twice")
    return tuple(tickers)


def check_path(name: str, path: Path) -> Path:
    """Refuse a warehouse path the libraries would mangle or splice into SQL unquoted;
    checked as they receive it, made absolute (so the folder it sits in counts too)."""
    if match := UNSAFE_PATH_CHARS.search(str(path.absolute())):
        raise ConfigError(
            f"{name}={str(path)!r}: its path holds {match.group(0)!r}, which dlt and DuckDB cannot take in a "
            "path safely; use a folder whose path has none of ' % ? = or control characters"
        )
    return path


def parse_bool(name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use true or false")


def _check_range(start: dt.date, end: dt.date) -> None:
    if start > end:
        raise ConfigError(
            f"the start date {start.isoformat()} is after the end date {end.isoformat()} "
            f"(FINANCIAL_ETL_START_DATE / FINANCIAL_ETL_END_DATE or --start / --end)"
        )


def parse_percent(name: str, value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 < number < 10_000:
        raise ConfigError(f"{name}={value!r} is not a percentage above 0 (e.g. 30)")
    return number


def parse_deadline_cron(name: str, value: str | None) -> str:
    if value is None:
        return DEFAULT_DEADLINE_CRON
    try:
        deadline_policy(value)
    except ValueError as exc:
        raise ConfigError(
            f"{name}={value!r} is not a deadline cron, New York time: {exc} (e.g. {DEFAULT_DEADLINE_CRON!r})"
        ) from None
    return " ".join(value.split())


EMAIL_ADDRESS = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+$")
SMTP_SECURITY = {"starttls": ("STARTTLS", 587), "ssl": ("SSL", 465)}  # Dagster's names, default ports
SLACK_CHANNEL = re.compile(r"^#?[A-Za-z0-9._-]{1,80}$")


def _missing(group: str, names: Sequence[str], get) -> None:
    """A channel half configured is refused, naming what it still needs."""
    missing = [f"FINANCIAL_ETL_{n}" for n in names if get(n) is None]
    if missing:
        raise ConfigError(f"{group} needs {', '.join(missing)} as well")


def parse_email_alerts(get) -> EmailAlerts | None:
    """FINANCIAL_ETL_ALERT_SMTP_*: e-mail alerts when the host is set. The password is never
    quoted in an error."""
    keys = ("HOST", "PORT", "TLS", "USER", "PASSWORD", "FROM", "TO")
    if get("ALERT_SMTP_HOST") is None:
        stray = [f"FINANCIAL_ETL_ALERT_SMTP_{k}" for k in keys if get(f"ALERT_SMTP_{k}") is not None]
        if stray:
            raise ConfigError(
                f"{', '.join(stray)} set without FINANCIAL_ETL_ALERT_SMTP_HOST, the server to send through"
            )
        return None
    required = ("ALERT_SMTP_PASSWORD", "ALERT_SMTP_FROM", "ALERT_SMTP_TO")
    _missing("e-mail alerts (FINANCIAL_ETL_ALERT_SMTP_HOST)", required, get)
    host = get("ALERT_SMTP_HOST").strip()
    if not re.match(r"^[A-Za-z0-9.:\[\]-]+$", host):
        raise ConfigError(f"FINANCIAL_ETL_ALERT_SMTP_HOST={host!r} is not a host name or address")
    tls = get("ALERT_SMTP_TLS") or "starttls"
    if tls.strip().lower() not in SMTP_SECURITY:
        raise ConfigError(f"FINANCIAL_ETL_ALERT_SMTP_TLS={tls!r} is not one of {', '.join(SMTP_SECURITY)}")
    security, default_port = SMTP_SECURITY[tls.strip().lower()]
    raw_port = get("ALERT_SMTP_PORT") or str(default_port)
    if not raw_port.strip().isdigit() or not 0 < int(raw_port) < 65536:
        raise ConfigError(f"FINANCIAL_ETL_ALERT_SMTP_PORT={raw_port!r} is not a port number (1-65535)")
    sender = get("ALERT_SMTP_FROM").strip()
    recipients = tuple(a.strip() for a in get("ALERT_SMTP_TO").split(",") if a.strip())
    for name, address in [("FROM", sender), *(("TO", a) for a in recipients)]:
        if not EMAIL_ADDRESS.match(address):
            raise ConfigError(f"FINANCIAL_ETL_ALERT_SMTP_{name}: {address!r} is not an e-mail address")
    if not recipients:
        raise ConfigError("FINANCIAL_ETL_ALERT_SMTP_TO holds no address; give a comma-separated list")
    return EmailAlerts(
        host=host,
        port=int(raw_port),
        security=security,
        sender=sender,
        recipients=recipients,
        user=(get("ALERT_SMTP_USER") or sender).strip(),
        password=get("ALERT_SMTP_PASSWORD"),
    )


def parse_slack_alerts(get) -> SlackAlerts | None:
    """FINANCIAL_ETL_ALERT_SLACK_TOKEN and _CHANNEL: Slack alerts when both are set. The
    token is never quoted in an error."""
    if get("ALERT_SLACK_TOKEN") is None and get("ALERT_SLACK_CHANNEL") is None:
        return None
    _missing("Slack alerts", ("ALERT_SLACK_TOKEN", "ALERT_SLACK_CHANNEL"), get)
    channel, token = get("ALERT_SLACK_CHANNEL").strip(), get("ALERT_SLACK_TOKEN").strip()
    if not SLACK_CHANNEL.match(channel):
        raise ConfigError(f"FINANCIAL_ETL_ALERT_SLACK_CHANNEL={channel!r} is not a channel name (#alerts) or id")
    if re.search(r"\s", token):
        raise ConfigError("FINANCIAL_ETL_ALERT_SLACK_TOKEN holds whitespace; give the bot token (xoxb-...) alone")
    return SlackAlerts(channel=channel, token=token)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raises ConfigError naming the bad setting."""
    env = os.environ if env is None else env

    refuse_blank(env)

    def get(key: str) -> str | None:
        return env.get(ENV_PREFIX + key)

    source = (get("SOURCE") or "synthetic").strip().lower()
    if source not in SOURCES:
        raise ConfigError(
            f"FINANCIAL_ETL_SOURCE={env.get(ENV_PREFIX + 'SOURCE')!r} is not a known source; "
            f"choose one of {', '.join(SOURCES)}"
        )

    tickers_file: Path | None = None
    if (raw_tickers := get("TICKERS")) is not None:
        tickers = parse_tickers("FINANCIAL_ETL_TICKERS", raw_tickers)
    else:
        tickers_file = Path(get("TICKERS_FILE") or DEFAULT_TICKERS_FILE).expanduser()
        tickers = read_tickers_file(tickers_file)

    start = parse_date("FINANCIAL_ETL_START_DATE", get("START_DATE") or DEFAULT_START.isoformat())
    end = parse_date("FINANCIAL_ETL_END_DATE", raw) if (raw := get("END_DATE")) else None
    _check_range(start, end or dt.date.today())

    csv_dir = None
    if source == "csv":
        raw_dir = get("CSV_DIR")
        if raw_dir is None:
            raise ConfigError("FINANCIAL_ETL_SOURCE=csv needs FINANCIAL_ETL_CSV_DIR, the folder of <TICKER>.csv files")
        csv_dir = Path(raw_dir).expanduser()
        if not csv_dir.is_dir():
            raise ConfigError(f"FINANCIAL_ETL_CSV_DIR={raw_dir!r} is not an existing directory")

    duckdb_path = check_path(
        "FINANCIAL_ETL_DUCKDB_PATH", Path(get("DUCKDB_PATH") or DEFAULT_DATA_DIR / "financial_etl.duckdb").expanduser()
    )
    if duckdb_path.exists() and duckdb_path.is_dir():
        raise ConfigError(f"FINANCIAL_ETL_DUCKDB_PATH={str(duckdb_path)!r} is a directory, not a file")
    export_path = get("EXPORT_DUCKDB_PATH")
    export_duckdb_path = check_path(
        "FINANCIAL_ETL_EXPORT_DUCKDB_PATH",
        Path(export_path).expanduser() if export_path else duckdb_path.parent / "export.duckdb",
    )
    if export_duckdb_path.resolve() == duckdb_path.resolve():
        raise ConfigError(
            "FINANCIAL_ETL_EXPORT_DUCKDB_PATH must differ from FINANCIAL_ETL_DUCKDB_PATH: "
            "the export stand-in is a separate database"
        )

    identifier = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    export_schema = get("EXPORT_SCHEMA") or DEFAULT_EXPORT_SCHEMA
    export_table = get("EXPORT_TABLE") or DEFAULT_EXPORT_TABLE
    for name, value in (("EXPORT_SCHEMA", export_schema), ("EXPORT_TABLE", export_table)):
        if not identifier.match(value):
            raise ConfigError(f"FINANCIAL_ETL_{name}={value!r} is not a plain SQL identifier")

    project_dir = Path(get("SQLMESH_PROJECT") or SQLMESH_PROJECT_DIR).expanduser()
    if not (project_dir / "models").is_dir():
        raise ConfigError(
            f"FINANCIAL_ETL_SQLMESH_PROJECT={str(project_dir)!r} is not a SQLMesh project (no models/ folder)"
        )
    owner = get("OWNER") or DEFAULT_OWNER
    if not re.match(r"^(team:[A-Za-z0-9_-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$", owner):
        raise ConfigError(f"FINANCIAL_ETL_OWNER={owner!r} must be an email or team:<name>")

    warehouse_url, spark_metastore, sqlmesh_state_url = get("WAREHOUSE"), get("SPARK_METASTORE"), get("SQLMESH_STATE")
    parse_warehouse(warehouse_url, duckdb_path, None, spark_metastore, sqlmesh_state_url)  # a bad value fails here
    alert_log = Path(get("ALERT_LOG") or duckdb_path.parent / "alerts.log").expanduser()
    if get("ALERT_WEBHOOK_URL") is not None:
        raise ConfigError(
            "FINANCIAL_ETL_ALERT_WEBHOOK_URL is no longer read: failed runs are sent by e-mail "
            "(FINANCIAL_ETL_ALERT_SMTP_HOST and the other FINANCIAL_ETL_ALERT_SMTP_* settings) or to Slack "
            "(FINANCIAL_ETL_ALERT_SLACK_TOKEN and FINANCIAL_ETL_ALERT_SLACK_CHANNEL); unset it"
        )

    return Settings(
        source=source,
        csv_dir=csv_dir,
        tickers=tickers,
        tickers_file=tickers_file,
        start_date=start,
        end_date=end,
        duckdb_path=duckdb_path,
        export_duckdb_path=export_duckdb_path,
        export_schema=export_schema,
        export_table=export_table,
        sqlmesh_project_dir=project_dir,
        owner=owner,
        alert_log=alert_log,
        alert_email=parse_email_alerts(get),
        alert_slack=parse_slack_alerts(get),
        allow_partial_loads=parse_bool("FINANCIAL_ETL_ALLOW_PARTIAL_LOADS", get("ALLOW_PARTIAL_LOADS"), False),
        suspicious_move_pct=parse_percent(
            "FINANCIAL_ETL_SUSPICIOUS_MOVE_PCT", get("SUSPICIOUS_MOVE_PCT"), DEFAULT_SUSPICIOUS_MOVE_PCT
        ),
        freshness_deadline_cron=parse_deadline_cron(
            "FINANCIAL_ETL_FRESHNESS_DEADLINE_CRON", get("FRESHNESS_DEADLINE_CRON")
        ),
        warehouse_url=warehouse_url,
        spark_metastore=spark_metastore,
        sqlmesh_state_url=sqlmesh_state_url,
    )
