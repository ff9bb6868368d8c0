"""Ticker symbols are checked before they reach a path, a SQL statement or a request, from
every place they come from; the CSV source never reads outside its folder; a tickers file
that is not UTF-8 and a warehouse path the libraries cannot quote are refused."""

from __future__ import annotations

import pytest

from financial_etl.cli.main import main
from financial_etl.errors import EXIT_CONFIG, ConfigError
from financial_etl.extract.resource import fetch_batch
from financial_etl.extract.sources import csv as csv_source
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.runs import TICKERS_TAG, run_tickers
from financial_etl.settings import load_settings, validate_tickers
from financial_etl_tests.helpers import day, files_under, settings_for, write_yahoo_csv

HOSTILE = ["AAPL'; DROP TABLE x;--", "../../etc/passwd", "AAPL\nMSFT", "A" * 16, "$(rm -rf ~)", "aapl%00"]


@pytest.mark.parametrize("symbol", HOSTILE)
def test_a_hostile_symbol_is_refused_from_the_environment(symbol):
    with pytest.raises(ConfigError, match="FINANCIAL_ETL_TICKERS.*not a valid ticker symbol|lists a ticker twice"):
        settings_for(tickers=f"MSFT,{symbol}")


@pytest.mark.parametrize("symbol", HOSTILE[:2])
def test_a_hostile_symbol_is_refused_from_the_tickers_file_naming_the_line(tmp_path, symbol):
    universe = tmp_path / "tickers.txt"
    universe.write_text(f"AAPL\n{symbol}\n")
    with pytest.raises(ConfigError, match=rf"{universe}:2: .* is not a valid ticker symbol"):
        settings_for(tickers_file=str(universe))


@pytest.mark.parametrize("symbol", HOSTILE[:2])
def test_a_hostile_symbol_is_refused_from_a_run_tag_set_by_a_sensor_or_the_ui(symbol):
    with pytest.raises(ConfigError, match=f"run tag {TICKERS_TAG}"):
        run_tickers({TICKERS_TAG: symbol}, settings_for(tickers="AAPL"))


@pytest.mark.parametrize("symbol", HOSTILE[:2])
def test_the_source_boundary_refuses_a_hostile_symbol_even_from_code(symbol):
    asked = []

    def fetch(tickers, start, end):
        asked.append(list(tickers))
        return fetch_synthetic(tickers, start, end)

    with pytest.raises(ConfigError, match="refusing ticker symbol"):
        fetch_batch(fetch, ["AAPL", symbol], day("2024-01-02"), day("2024-01-31"))
    assert asked == []  # refused before the source was asked
    with pytest.raises(ConfigError, match="refusing ticker symbol"):
        validate_tickers(["AAPL", symbol])
    with pytest.raises(ConfigError, match="refusing ticker symbol"):
        csv_source.ticker_file(csv_source.Path("/tmp"), symbol)


def test_a_hostile_symbol_on_the_command_line_exits_2_and_writes_nothing(workdir, clean_env, capsys):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAPL,../../etc/passwd")
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-05"]) == EXIT_CONFIG
    assert "'../../ETC/PASSWD' is not a valid ticker symbol" in capsys.readouterr().err
    assert not (workdir / "data").exists()


def test_a_tickers_file_that_is_not_utf8_exits_2_naming_the_line_and_writes_nothing(workdir, clean_env, capsys):
    universe = workdir / "tickers.txt"
    universe.write_bytes(b"AAPL\nMSFT\nNESTL\xc9\n")  # Latin-1, as a spreadsheet export may save it
    clean_env.setenv("FINANCIAL_ETL_TICKERS_FILE", str(universe))
    clean_env.setenv("DAGSTER_HOME", str(workdir))
    before = files_under(workdir)
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-05"]) == EXIT_CONFIG
    assert f"{universe}:3: byte 0xc9 is not UTF-8 text" in capsys.readouterr().err
    assert files_under(workdir) == before


# ' % ? = each broke a run inside dlt or DuckDB (exit 1); a newline stands for the control
# characters, refused with them (see UNSAFE_PATH_CHARS).
@pytest.mark.parametrize("char", ["'", "%", "?", "=", "\n"])
@pytest.mark.parametrize("setting", ["DUCKDB_PATH", "EXPORT_DUCKDB_PATH", "EXPORT_URL"])
def test_a_warehouse_path_the_libraries_cannot_quote_exits_2_and_writes_nothing(
    workdir, clean_env, capsys, char, setting
):
    folder = workdir / f"it{char}s;x"
    value = str(folder / "financial_etl.duckdb")
    clean_env.setenv(f"FINANCIAL_ETL_{setting}", f"duckdb:///{value}" if setting == "EXPORT_URL" else value)
    clean_env.setenv("DAGSTER_HOME", str(workdir))
    before = files_under(workdir)
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-05"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"FINANCIAL_ETL_{setting}=" in err and f"its path holds {char!r}" in err
    assert files_under(workdir) == before and not folder.exists()


def test_a_symlink_leading_outside_the_csv_folder_is_refused(workdir, clean_env, tmp_path, capsys):
    inside, outside = tmp_path / "csv", tmp_path / "elsewhere"
    frame = fetch_synthetic(["AAA"], day("2024-01-02"), day("2024-01-31")).frame
    write_yahoo_csv(inside / "AAA.csv", frame)
    write_yahoo_csv(outside / "BBB.csv", frame.assign(ticker="BBB"))
    (inside / "BBB.csv").symlink_to(outside / "BBB.csv")
    with pytest.raises(ConfigError, match=r"BBB.csv resolves to .*elsewhere/BBB.csv, outside FINANCIAL_ETL_CSV_DIR"):
        csv_source.make_csv_fetch(inside)(["AAA", "BBB"], day("2024-01-02"), day("2024-01-31"))

    for key, value in {
        "SOURCE": "csv",
        "CSV_DIR": str(inside),
        "TICKERS": "AAA,BBB",
        "START_DATE": "2024-01-02",
    }.items():
        clean_env.setenv(f"FINANCIAL_ETL_{key}", value)
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-31"]) == EXIT_CONFIG
    assert "outside FINANCIAL_ETL_CSV_DIR" in capsys.readouterr().err
    assert not (workdir / "data" / "financial_etl.duckdb").exists()


def test_a_symlink_that_stays_inside_the_csv_folder_is_fine(tmp_path):
    inside = tmp_path / "csv"
    frame = fetch_synthetic(["AAA"], day("2024-01-02"), day("2024-01-31")).frame
    write_yahoo_csv(inside / "archive" / "AAA-2024.csv", frame)
    (inside / "AAA.csv").symlink_to(inside / "archive" / "AAA-2024.csv")
    batch = csv_source.make_csv_fetch(inside)(["AAA"], day("2024-01-02"), day("2024-01-31"))
    assert len(batch.frame) == len(frame)


def test_a_csv_folder_that_is_itself_a_symlink_is_followed_once(tmp_path):
    real = tmp_path / "real"
    write_yahoo_csv(real / "AAA.csv", fetch_synthetic(["AAA"], day("2024-01-02"), day("2024-01-31")).frame)
    (tmp_path / "link").symlink_to(real)
    settings = load_settings(
        {"FINANCIAL_ETL_SOURCE": "csv", "FINANCIAL_ETL_CSV_DIR": str(tmp_path / "link"), "FINANCIAL_ETL_TICKERS": "AAA"}
    )
    batch = csv_source.make_csv_fetch(settings.csv_dir)(["AAA"], day("2024-01-02"), day("2024-01-31"))
    assert set(batch.frame.ticker) == {"AAA"}
