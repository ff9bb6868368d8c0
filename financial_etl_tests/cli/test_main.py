"""`financial-etl`'s exit codes for what is wrong before any data moves: bad arguments and
settings, a CSV folder that does not hold Yahoo's files. Nothing is written."""

import pytest

from financial_etl.cli.main import main
from financial_etl.errors import EXIT_CONFIG, EXIT_DATA_QUALITY
from financial_etl_tests.helpers import query


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "--start", "2024-02-01", "--end", "2024-01-01"], {}, "is after the end date"),
        (["run", "--start", "2019-06-03"], {}, "before FINANCIAL_ETL_START_DATE"),
        (["run", "--start", "yesterday"], {}, "--start='yesterday'"),
        (["run"], {"FINANCIAL_ETL_SOURCE": "nope"}, "FINANCIAL_ETL_SOURCE='nope'"),
        (["run", "--start", "2024-01-02", "--end", "2999-01-04"], {}, "--end 2999-01-04 is in a year that has not begun"),
    ],
)
def test_configuration_errors_exit_2_before_anything_is_written(workdir, clean_env, capsys, args, env, message):
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert main(args) == EXIT_CONFIG
    assert message in capsys.readouterr().err
    assert not (workdir / "data" / "financial_etl.duckdb").exists()


def test_a_csv_file_with_a_foreign_header_fails_with_exit_2_and_writes_nothing(workdir, csv_history, capsys):
    (workdir / "csv" / "BBB.csv").write_text("Date;Open;High;Low;Close;Volume\n2024-01-02;1;2;0.5;1;10\n")
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-31"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "BBB.csv:1" in err and "not Yahoo's CSV format" in err
    db = workdir / "data" / "financial_etl.duckdb"
    rows = query(db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'eod_prices_raw'") if db.exists() else [(0,)]
    assert rows == [(0,)]


def test_a_csv_file_with_only_its_header_is_a_missing_ticker_exit_3_naming_the_file(workdir, csv_history, capsys):
    (workdir / "csv" / "BBB.csv").write_text("Date,Open,High,Low,Close,Adj Close,Volume\n")
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-31"]) == EXIT_DATA_QUALITY
    err = capsys.readouterr().err
    assert f"BBB: {workdir / 'csv' / 'BBB.csv'} has only its header" in err and "nothing was loaded" in err
    db = workdir / "data" / "financial_etl.duckdb"
    rows = query(db, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw'") if db.exists() else [(0,)]
    assert rows == [(0,)]


def test_missing_csv_file_is_a_configuration_error(workdir, csv_history, clean_env, capsys):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,ZZZ")
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-31"]) == EXIT_CONFIG
    assert "ZZZ.csv" in capsys.readouterr().err
