"""Issue 8: credentials never appear in logs, Dagster event metadata, the run config the UI
shows, or exception messages.

Each test makes a real `financial-etl run` fail on purpose with a distinctive password
configured, then scans every place it could have been written: the console output, every
file under DAGSTER_HOME (sqlite event log and run storage, cell by cell with compressed
snapshots expanded, and the compute logs), every file under the data directory (DuckDB
tables cell by cell, dlt's working dirs with state, load packages and trace.pickle), the
run's config, tags and job snapshot, every event serialized with its metadata and error
chain, and Python's log records. Each scan also asserts that a configured value that is
NOT secret (the host and port, the login failure) is there, so it cannot pass vacuously.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import re
import secrets
import sqlite3
import subprocess
import zlib
from collections import defaultdict
from pathlib import Path
from urllib.parse import quote, quote_plus

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._serdes import serialize_value

from financial_etl.cli.main import main
from financial_etl.errors import EXIT_CONFIG, EXIT_CONNECTION
from financial_etl.settings import REPO_ROOT
from financial_etl_tests.dagster_dev import instance_yaml
from financial_etl_tests.servers import free_port

TOKEN = secrets.token_hex(8)
SECRET = f"S3cret-Pw-{TOKEN}"
# URL-reserved characters, a space, a quote and a backslash: the URL-quoted, form-quoted
# and repr-escaped forms differ from the raw one. SECRET sits inside every form.
PASSWORD = SECRET + "/+# '\\"
USERNAME = f"etl_user_{TOKEN[:6]}"
RUN = ["run", "--start", "2024-01-02", "--end", "2024-01-05"]
CLI = REPO_ROOT / ".venv" / "bin" / "financial-etl"


def secret_forms() -> dict[str, bytes]:
    quoted = quote(PASSWORD, safe="")
    forms = {
        "raw": PASSWORD,
        "url-quoted": quoted,
        "form-quoted": quote_plus(PASSWORD),
        "repr-escaped": repr(PASSWORD)[1:-1],
        "json-escaped": json.dumps(PASSWORD)[1:-1],
        "user:password": f"{USERNAME}:{PASSWORD}",
        "user:url-quoted": f"{USERNAME}:{quoted}",
        "core": SECRET,
    }
    needles = {name: text.encode() for name, text in forms.items()}
    needles["utf-16"] = SECRET.encode("utf-16-le")
    return needles


BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]{24,}$")


def _expanded(value) -> bytes:
    """A stored value as bytes, plus what it holds compressed (Dagster's zlib snapshots,
    dlt's base64+zlib state)."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            return data + b"\n" + zlib.decompress(data)
        except zlib.error:
            return data
    text = str(value)
    data = text.encode("utf-8", "backslashreplace")
    if BASE64.match(text):
        try:
            return data + b"\n" + zlib.decompress(base64.b64decode(text))
        except (binascii.Error, zlib.error, ValueError):
            pass
    return data


def _sqlite_cells(path: Path) -> bytes:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return b"\n".join(
            _expanded(cell) for table in tables for row in con.execute(f'SELECT * FROM "{table}"') for cell in row
        )
    finally:
        con.close()


def _duckdb_cells(path: Path) -> bytes:
    from financial_etl.warehouse.project import duckdb_settings

    # The pipeline's settings: DuckDB refuses a second in-process connection with others.
    with duckdb.connect(str(path), read_only=True, config=duckdb_settings(path)) as con:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
        ).fetchall()
        return b"\n".join(
            _expanded(cell)
            for schema, table in tables
            for row in con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
            for cell in row
        )


class LeakScan:
    """Collects every text scanned, by place, and every secret form found in one."""

    def __init__(self) -> None:
        self.needles = secret_forms()
        self.leaks: list[tuple[str, str, bytes]] = []  # (form, where, excerpt)
        self.seen: dict[str, bytearray] = defaultdict(bytearray)
        self.files = 0

    def add(self, place: str, where: str, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "backslashreplace")
        for name, needle in self.needles.items():
            if (i := data.find(needle)) >= 0:
                self.leaks.append((name, where, data[max(0, i - 160) : i + 40]))
        self.seen[place] += data + b"\n"

    def has(self, place: str, marker: str) -> bool:
        """`marker` as written, or inside a JSON string (Dagster's event storage escapes quotes)."""
        return any(form.encode() in self.seen[place] for form in (marker, json.dumps(marker)[1:-1]))

    def tree(self, place: str, root: Path) -> None:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            self.files += 1
            self.add(place, str(path), data)
            if data[:2] == b"\x1f\x8b":
                self.add(place, f"{path} (gunzipped)", gzip.decompress(data))
            elif data.startswith(b"SQLite format 3\x00"):
                self.add(place, f"{path} (every cell)", _sqlite_cells(path))
            elif path.suffix == ".duckdb":
                self.add(place, f"{path} (every cell)", _duckdb_cells(path))

    def dagster(self, home: Path) -> list:
        """Runs, their config, tags and job snapshot, and every event with its error chain."""
        with DagsterInstance.from_config(str(home)) as instance:
            runs = instance.get_runs()
            for run in runs:
                self.add("run config and tags", f"run {run.run_id} config", json.dumps(run.run_config))
                self.add("run config and tags", f"run {run.run_id} tags", json.dumps(run.tags))
                self.add("run config and tags", f"run {run.run_id} record", serialize_value(run))
                snapshot = instance.get_job_snapshot(run.job_snapshot_id)
                self.add("job snapshot", f"run {run.run_id} job snapshot", serialize_value(snapshot))
                for record in instance.all_logs(run.run_id):
                    where = f"run {run.run_id} event {record.dagster_event_type or 'log'}"
                    self.add("events", where, serialize_value(record))
                    self.add("events", where, f"{record.message}\n{record.user_message}")
                    data = record.dagster_event and record.dagster_event.event_specific_data
                    if data is None:
                        continue
                    self.add("events", f"{where} data", repr(data))
                    error = getattr(data, "error", None)
                    while error is not None:
                        self.add(
                            "errors", f"{where} error", f"{error.cls_name}: {error.message}\n{''.join(error.stack)}"
                        )
                        error = error.cause or error.context
        return runs

    def log_records(self, records) -> None:
        for record in records:
            text = f"{record.name} {record.levelname} {record.getMessage()} {record.args!r}"
            if record.exc_info and record.exc_info[1] is not None:
                text += f" {record.exc_info[1]!r}"
            self.add("python logging", f"log record {record.name}", text + (record.exc_text or ""))

    def assert_clean(self) -> None:
        assert not self.leaks, "credential leaked:\n" + "\n".join(
            f"{form} form in {where}: ...{excerpt!r}..." for form, where, excerpt in self.leaks[:20]
        )

    def summary(self) -> str:
        sizes = ", ".join(f"{place} {len(data):,} B" for place, data in self.seen.items())
        return f"scanned {self.files} files; {sizes}"


@pytest.fixture
def run_env(workdir, clean_env):
    """DAGSTER_HOME in the temp dir (sqlite storage and compute logs there too), one
    ticker, four trading days; dlt's and pyodbc's own variables cleared."""
    for key in list(os.environ):
        if key.startswith(("DESTINATION__", "RUNTIME__")) or key == "ODBCSYSINI":
            clean_env.delenv(key)
    home = workdir / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(home))
    clean_env.setenv("DAGSTER_HOME", str(home))
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    return clean_env


def run_and_scan(workdir: Path, capfd, caplog, *, subprocess_env: dict[str, str] | None = None, args=RUN):
    """One `financial-etl run`, in process (caplog at DEBUG) or as a subprocess, then the scan."""
    if subprocess_env is None:
        caplog.set_level("DEBUG")
        code = main(list(args))
        out, err = capfd.readouterr()
        output = out + err
    else:
        proc = subprocess.run(
            [str(CLI), *args], check=False, env=subprocess_env, cwd=workdir, capture_output=True, text=True, timeout=300
        )
        code, output = proc.returncode, proc.stdout + proc.stderr
    scan = LeakScan()
    scan.add("console", "stdout and stderr", output)
    scan.tree("dagster home files", workdir / "home")
    scan.tree("data files", workdir / "data")
    runs = scan.dagster(workdir / "home")
    if subprocess_env is None:
        scan.log_records(caplog.records)
    print(scan.summary())
    return code, scan, runs


def assert_failed_run(runs) -> None:
    assert len(runs) == 1 and runs[0].status == DagsterRunStatus.FAILURE, [r.status for r in runs]


def assert_found_in(scan: LeakScan, marker: str, places) -> None:
    missing = [p for p in places if not scan.has(p, marker)]
    assert not missing, f"{marker!r} not in {missing}: the scan looked at the wrong text"


DAGSTER_PLACES = ("console", "dagster home files", "events", "errors")


@pytest.mark.slow
def test_postgres_wrong_password(workdir, run_env, postgres, capfd, caplog):
    url = f"postgresql://{postgres.user}:{quote(PASSWORD, safe='')}@127.0.0.1:{postgres.port}/{postgres.database}"
    run_env.setenv("FINANCIAL_ETL_EXPORT_URL", url)
    code, scan, runs = run_and_scan(workdir, capfd, caplog)
    assert code == EXIT_CONNECTION, scan.seen["console"].decode()[-3000:]
    assert_failed_run(runs)
    scan.assert_clean()
    assert_found_in(scan, f"login to PostgreSQL 127.0.0.1:{postgres.port}/financial_mart", DAGSTER_PLACES)
    assert_found_in(scan, f'password authentication failed for user "{postgres.user}"', [*DAGSTER_PLACES, "data files"])
    # Dagster's and dlt's loggers do not propagate: the records are the libraries' own (SQLMesh's).
    assert_found_in(scan, str(workdir / "data" / "financial_etl.duckdb"), ["python logging"])


@pytest.mark.slow
def test_postgres_closed_port(workdir, run_env, capfd, caplog):
    port = free_port()
    run_env.setenv(
        "FINANCIAL_ETL_EXPORT_URL",
        f"postgresql://{USERNAME}:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/financial_mart",
    )
    code, scan, runs = run_and_scan(workdir, capfd, caplog)
    assert code == EXIT_CONNECTION, scan.seen["console"].decode()[-3000:]
    assert_failed_run(runs)
    scan.assert_clean()
    assert_found_in(scan, f"cannot reach PostgreSQL 127.0.0.1:{port}/financial_mart", DAGSTER_PLACES)
    assert_found_in(scan, f"port {port} failed: Connection refused", ["data files"])  # dlt's trace.pickle


def _mssql_settings(run_env, port: int) -> None:
    for name, value in {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "USERNAME": USERNAME,
        "PASSWORD": PASSWORD,
        "CONNECT_TIMEOUT": "1",
    }.items():
        run_env.setenv(f"FINANCIAL_ETL_MSSQL_{name}", value)


@pytest.mark.slow
def test_mssql_settings_with_the_real_odbc_driver(workdir, run_env, capfd, caplog):
    """Microsoft's ODBC Driver 18 (from mssql-python-odbc) tries a closed port; without the
    package the run fails on the missing driver instead: either is the export failing."""
    from financial_etl.export.odbc import register_pypi_driver

    try:
        run_env.setenv("ODBCSYSINI", str(register_pypi_driver(workdir / "odbc")))
        failure = "cannot reach SQL Server"
    except RuntimeError:
        failure = "no usable SQL Server ODBC driver for SQL Server"
    port = free_port()
    _mssql_settings(run_env, port)
    code, scan, runs = run_and_scan(workdir, capfd, caplog)
    assert code == EXIT_CONNECTION, scan.seen["console"].decode()[-3000:]
    assert_failed_run(runs)
    scan.assert_clean()
    assert_found_in(scan, f"{failure} 127.0.0.1:{port}/FINANCIAL_MART", DAGSTER_PLACES)
    # The UI shows the resource's settings as the variables' names, never their values.
    assert_found_in(scan, "FINANCIAL_ETL_MSSQL_PASSWORD", ["job snapshot"])


@pytest.mark.slow
def test_mssql_url(workdir, run_env, capfd, caplog):
    port = free_port()
    # Driver 17 is registered nowhere: the run fails on the missing driver whatever an
    # earlier test registered in this process (the URL form takes no connect timeout).
    run_env.setenv(
        "FINANCIAL_ETL_MSSQL_URL",
        f"mssql://{USERNAME}:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/"
        "FINANCIAL_MART?driver=ODBC+Driver+17+for+SQL+Server",
    )
    code, scan, runs = run_and_scan(workdir, capfd, caplog)
    assert code == EXIT_CONNECTION, scan.seen["console"].decode()[-3000:]
    assert_failed_run(runs)
    scan.assert_clean()
    assert_found_in(
        scan, f"no usable SQL Server ODBC driver for SQL Server 127.0.0.1:{port}/FINANCIAL_MART", DAGSTER_PLACES
    )
    assert_found_in(scan, "FINANCIAL_ETL_MSSQL_URL", ["job snapshot"])


@pytest.mark.slow
def test_dlt_mssql_credentials_in_a_subprocess_with_dlt_debug_logging(workdir, run_env, capfd, caplog):
    """dlt resolves DESTINATION__MSSQL__CREDENTIALS itself (the project never sees the
    password, so cannot redact it); dlt logs at DEBUG into the captured output."""
    port = free_port()
    run_env.setenv(
        "DESTINATION__MSSQL__CREDENTIALS",
        f"mssql://{USERNAME}:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/FINANCIAL_MART",
    )
    run_env.setenv("RUNTIME__LOG_LEVEL", "DEBUG")
    code, scan, runs = run_and_scan(workdir, capfd, caplog, subprocess_env=dict(os.environ))
    assert code == EXIT_CONNECTION, scan.seen["console"].decode()[-3000:]
    assert_failed_run(runs)
    scan.assert_clean()
    assert_found_in(scan, "no usable SQL Server ODBC driver for SQL Server from dlt's configuration", DAGSTER_PLACES)


@pytest.mark.slow
def test_a_non_export_failure_in_the_run_with_every_secret_set(workdir, run_env, capfd, caplog):
    """A CSV with a bad header fails the extract step while the mssql settings, a
    PostgreSQL URL and dlt's variable all hold the password."""
    csv_dir = workdir / "csv"
    csv_dir.mkdir()
    (csv_dir / "AAA.csv").write_text("Date,Open,High,Low,Close,Volume,Bogus\n2024-01-02,1,2,0.5,1.5,100,x\n")
    run_env.setenv("FINANCIAL_ETL_SOURCE", "csv")
    run_env.setenv("FINANCIAL_ETL_CSV_DIR", str(csv_dir))
    _mssql_settings(run_env, free_port())
    run_env.setenv("FINANCIAL_ETL_EXPORT_URL", f"postgresql://{USERNAME}:{quote(PASSWORD, safe='')}@127.0.0.1:1/db")
    run_env.setenv("DESTINATION__MSSQL__CREDENTIALS", f"mssql://{USERNAME}:{quote(PASSWORD, safe='')}@127.0.0.1:1/db")
    code, scan, runs = run_and_scan(workdir, capfd, caplog)
    assert code == EXIT_CONFIG, scan.seen["console"].decode()[-3000:]
    assert_failed_run(runs)
    scan.assert_clean()
    assert_found_in(scan, "is not Yahoo's CSV format", DAGSTER_PLACES)
    assert_found_in(scan, "FINANCIAL_ETL_MSSQL_PASSWORD", ["job snapshot"])


def test_a_configuration_error_before_the_run_with_the_password_set(workdir, run_env, capfd, caplog):
    _mssql_settings(run_env, free_port())
    run_env.setenv("FINANCIAL_ETL_START_DATE", "2024-13-45")
    code, scan, runs = run_and_scan(workdir, capfd, caplog)
    assert code == EXIT_CONFIG
    assert runs == []  # nothing reached Dagster
    scan.assert_clean()
    assert_found_in(scan, "FINANCIAL_ETL_START_DATE='2024-13-45' is not a date", ["console"])


def test_the_scan_finds_a_secret_planted_in_each_encoding(tmp_path):
    """The scan itself: every encoding the stores above use hides no planted password."""
    import pickle

    (tmp_path / "log.txt").write_text(f"url=postgresql://{USERNAME}:{quote(PASSWORD, safe='')}@host/db\n")
    (tmp_path / "package.gz").write_bytes(gzip.compress(f"PWD={{{PASSWORD}}}".encode()))
    (tmp_path / "trace.pickle").write_bytes(pickle.dumps({"config": repr(PASSWORD)}))
    con = sqlite3.connect(tmp_path / "runs.db")
    con.execute("CREATE TABLE snapshots (body BLOB)")
    con.execute("INSERT INTO snapshots VALUES (?)", (zlib.compress(json.dumps({"password": PASSWORD}).encode()),))
    con.commit()
    con.close()
    with duckdb.connect(str(tmp_path / "state.duckdb")) as db:
        db.execute("CREATE TABLE s (state VARCHAR)")
        db.execute("INSERT INTO s VALUES (?)", [base64.b64encode(zlib.compress(PASSWORD.encode())).decode()])
    scan = LeakScan()
    scan.tree("files", tmp_path)
    found = {where.split(" (")[0] for _, where, _ in scan.leaks}
    assert found == {
        str(tmp_path / name) for name in ("log.txt", "package.gz", "trace.pickle", "runs.db", "state.duckdb")
    }, scan.leaks
    assert "user:url-quoted" in {form for form, _, _ in scan.leaks}
