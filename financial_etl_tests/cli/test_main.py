"""`financial-etl`'s exit codes for what is wrong before any data moves: bad arguments and
settings (2), a CSV folder that does not hold Yahoo's files (2), a folder it cannot write
(5), a warehouse file another program holds (4). Nothing is written: no data file, no dlt
pipeline state, no Dagster run storage."""

import datetime as dt
import sys
from pathlib import Path

import duckdb
import pytest

from financial_etl.cli.main import main
from financial_etl.errors import EXIT_CONFIG, EXIT_CONNECTION, EXIT_DATA_QUALITY, EXIT_STORAGE
from financial_etl.settings import DEFAULT_DATA_DIR, REPO_ROOT
from financial_etl_tests.helpers import files_under, held_open, in_mount_namespace, query

RUN = ["run", "--start", "2024-01-02", "--end", "2024-01-05"]
NEXT_YEAR = dt.date.today().year + 1
SECRET = "Sup3r-Secret-Pw"
MSSQL = {
    "FINANCIAL_ETL_MSSQL_HOST": "sql.example.internal",
    "FINANCIAL_ETL_MSSQL_USERNAME": "etl",
    "FINANCIAL_ETL_MSSQL_PASSWORD": SECRET,
}


@pytest.fixture
def dagster_home(workdir, clean_env) -> Path:
    """An empty DAGSTER_HOME under the test's folder, so a run's storage would show."""
    home = workdir / "dagster"
    home.mkdir()
    clean_env.setenv("DAGSTER_HOME", str(home))
    return home


def refused(workdir: Path, clean_env, capsys, args, env=None) -> tuple[int, str]:
    """Run the CLI with `env` set; assert it wrote nothing under the test's folder (data,
    dlt state, DAGSTER_HOME) nor in the repository's data/; return the exit code and stderr."""
    for key, value in (env or {}).items():
        clean_env.setenv(key, value)
    before, repo_data = files_under(workdir), files_under(DEFAULT_DATA_DIR)
    code = main(args)
    assert files_under(workdir) == before
    assert files_under(DEFAULT_DATA_DIR) == repo_data
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "--start", "2024-02-01", "--end", "2024-01-01"], {}, "is after the end date"),
        (["run", "--start", "2019-06-03"], {}, "before FINANCIAL_ETL_START_DATE"),
        (["run", "--start", "yesterday"], {}, "--start='yesterday'"),
        (["run"], {"FINANCIAL_ETL_SOURCE": "nope"}, "FINANCIAL_ETL_SOURCE='nope'"),
        (
            ["run", "--start", "2024-01-02", "--end", f"{NEXT_YEAR}-01-04"],
            {},
            f"--end {NEXT_YEAR}-01-04 is in a year that has not begun",
        ),
        (RUN, {"DAGSTER_HOME": "/no/such/dagster"}, "DAGSTER_HOME='/no/such/dagster' is not an existing folder"),
    ],
)
def test_configuration_errors_exit_2_before_anything_is_written(
    workdir, dagster_home, clean_env, capsys, args, env, message
):
    code, err = refused(workdir, clean_env, capsys, args, env)
    assert code == EXIT_CONFIG and message in err


@pytest.mark.parametrize(
    "name", ["DUCKDB_PATH", "SOURCE", "START_DATE", "WAREHOUSE", "EXPORT_TABLE", "TICKERS", "MSSQL_PASSWORD"]
)
def test_a_setting_set_but_empty_exits_2_naming_it_instead_of_meaning_its_default(
    workdir, dagster_home, clean_env, capsys, name
):
    # An empty DUCKDB_PATH once meant the default: a whole warehouse in the repository's data/.
    code, err = refused(workdir, clean_env, capsys, RUN, {f"FINANCIAL_ETL_{name}": ""})
    assert code == EXIT_CONFIG and f"set but empty: FINANCIAL_ETL_{name};" in err


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        (
            {"FINANCIAL_ETL_START_DATE": "0001-01-01"},
            RUN,
            "FINANCIAL_ETL_START_DATE='0001-01-01' is before 1990-01-02, the first session of the NYSE calendar",
        ),
        (
            {"FINANCIAL_ETL_START_DATE": "1900-01-01"},
            ["run", "--start", "1900-01-02", "--end", "1900-01-31"],
            "FINANCIAL_ETL_START_DATE='1900-01-01' is before 1990-01-02",
        ),
        ({}, ["check", "--start", "1989-12-29"], "--start='1989-12-29' is before 1990-01-02"),
        ({"FINANCIAL_ETL_END_DATE": "2041-01-02"}, RUN, "FINANCIAL_ETL_END_DATE='2041-01-02' is after 2040-12-31"),
        ({}, ["run", "--start", "2024-01-02", "--end", "2999-01-04"], "--end='2999-01-04' is after 2040-12-31"),
    ],
)
def test_a_date_outside_the_nyse_calendar_exits_2_naming_the_bound(
    workdir, dagster_home, clean_env, capsys, env, args, message
):
    code, err = refused(workdir, clean_env, capsys, args, env)
    assert code == EXIT_CONFIG and message in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**MSSQL, "FINANCIAL_ETL_MSSQL_PORT": "abc"}, "FINANCIAL_ETL_MSSQL_PORT='abc' is not a port number"),
        ({**MSSQL, "FINANCIAL_ETL_MSSQL_PORT": "70000"}, "FINANCIAL_ETL_MSSQL_PORT='70000' is not a port number"),
        (
            {**MSSQL, "FINANCIAL_ETL_MSSQL_CONNECT_TIMEOUT": "-5"},
            "FINANCIAL_ETL_MSSQL_CONNECT_TIMEOUT='-5' is not a whole number of seconds above 0",
        ),
        (
            {**MSSQL, "FINANCIAL_ETL_MSSQL_TRUST_SERVER_CERTIFICATE": "maybe"},
            "FINANCIAL_ETL_MSSQL_TRUST_SERVER_CERTIFICATE='maybe' is not a boolean",
        ),
        (
            {"FINANCIAL_ETL_MSSQL_PORT": "1433", "FINANCIAL_ETL_MSSQL_PASSWORD": SECRET},
            "FINANCIAL_ETL_MSSQL_PORT, FINANCIAL_ETL_MSSQL_PASSWORD set without FINANCIAL_ETL_MSSQL_HOST",
        ),
        (
            {**MSSQL, "FINANCIAL_ETL_MSSQL_URL": f"mssql://etl:{SECRET}@h/db"},
            "FINANCIAL_ETL_MSSQL_URL is set beside FINANCIAL_ETL_MSSQL_HOST",
        ),
        (
            {"FINANCIAL_ETL_MSSQL_URL": f"mssql://etl:{SECRET}@h:99999/db"},
            "FINANCIAL_ETL_MSSQL_URL has a port that is not a number",
        ),
        ({"FINANCIAL_ETL_EXPORT_URL": "bogus://x"}, "FINANCIAL_ETL_EXPORT_URL must be a postgresql://"),
        (
            {**MSSQL, "FINANCIAL_ETL_EXPORT_URL": "bogus://x"},
            "FINANCIAL_ETL_EXPORT_URL must be",
        ),  # shadowed, still checked
        (
            {"FINANCIAL_ETL_EXPORT_URL": f"postgresql://etl:{SECRET}@h:port/db"},
            "FINANCIAL_ETL_EXPORT_URL has a port that is not a number",
        ),
        (
            {"FINANCIAL_ETL_MSSQL_CREDENTIALS_FILE": "/no/such/credentials.json"},
            "FINANCIAL_ETL_MSSQL_CREDENTIALS_FILE='/no/such/credentials.json' is not a file",
        ),
    ],
)
def test_a_bad_export_setting_exits_2_before_the_extract_or_dagster_writes_anything(
    workdir, dagster_home, clean_env, capsys, env, message
):
    code, err = refused(workdir, clean_env, capsys, RUN, env)
    assert code == EXIT_CONFIG and message in err and SECRET not in err


def test_a_warehouse_file_held_by_another_program_exits_4_naming_the_file(workdir, dagster_home, clean_env, capsys):
    db = workdir / "data" / "financial_etl.duckdb"
    db.parent.mkdir()
    with held_open(db) as pid:
        code, err = refused(workdir, clean_env, capsys, RUN)
    assert code == EXIT_CONNECTION
    assert f"the DuckDB file {db} is held by another process" in err and f"pid {pid}" in err
    assert "Conflicting lock" not in err  # DuckDB's own message, no longer the whole story


def test_a_csv_file_with_a_foreign_header_fails_with_exit_2_and_writes_nothing(workdir, csv_history, capsys):
    (workdir / "csv" / "BBB.csv").write_text("Date;Open;High;Low;Close;Volume\n2024-01-02;1;2;0.5;1;10\n")
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-31"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "BBB.csv:1" in err and "not Yahoo's CSV format" in err
    db = workdir / "data" / "financial_etl.duckdb"
    rows = (
        query(db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'eod_prices_raw'")
        if db.exists()
        else [(0,)]
    )
    assert rows == [(0,)]


def test_a_csv_file_with_only_its_header_is_a_missing_ticker_exit_3_naming_the_file(workdir, csv_history, capsys):
    (workdir / "csv" / "BBB.csv").write_text("Date,Open,High,Low,Close,Adj Close,Volume\n")
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-31"]) == EXIT_DATA_QUALITY
    err = capsys.readouterr().err
    assert f"BBB: {workdir / 'csv' / 'BBB.csv'} has only its header" in err and "nothing was loaded" in err
    db = workdir / "data" / "financial_etl.duckdb"
    rows = (
        query(db, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw'")
        if db.exists()
        else [(0,)]
    )
    assert rows == [(0,)]


def test_missing_csv_file_is_a_configuration_error(workdir, csv_history, clean_env, capsys):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,ZZZ")
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-31"]) == EXIT_CONFIG
    assert "ZZZ.csv" in capsys.readouterr().err


def _cli_with_read_only(folder: Path, out: Path, *args: str) -> tuple[int, str]:
    """`financial-etl args` (this test's environment) with `folder` mounted read-only: a
    real EROFS, which root meets too, in a private mount namespace."""
    out.mkdir()
    done = in_mount_namespace(f"""
        mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}
        cd {REPO_ROOT}
        set +e
        {sys.executable} -m financial_etl.cli {" ".join(args)} 2> {out}/err.txt
        echo $? > {out}/rc.txt
    """)
    assert done.returncode == 0, done.stderr
    return int((out / "rc.txt").read_text()), (out / "err.txt").read_text()


def test_check_on_a_read_only_data_folder_exits_5_naming_the_folder(workdir, dagster_home):
    data = workdir / "data"
    data.mkdir()
    duckdb.connect(str(data / "financial_etl.duckdb")).close()
    before = files_under(data)
    code, err = _cli_with_read_only(data, workdir / "out", "check")
    assert code == EXIT_STORAGE, err
    assert f"FINANCIAL_ETL_DUCKDB_PATH: the folder {data} is not writable (Read-only file system)" in err
    assert files_under(data) == before and files_under(dagster_home) == {}


def test_a_read_only_dagster_home_exits_5_naming_it(workdir, dagster_home):
    code, err = _cli_with_read_only(dagster_home, workdir / "out", *RUN)
    assert code == EXIT_STORAGE, err
    assert f"DAGSTER_HOME='{dagster_home}': Dagster cannot write its run storage" in err
    assert "Read-only file system" in err and "Traceback" not in err
    assert files_under(dagster_home) == {} and files_under(workdir / "data") == {}
