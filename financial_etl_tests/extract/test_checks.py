"""The raw checks' reading of raw: `complete_sessions` streams the rows into a bitmap and
names exactly the sessions a ticker lacks."""

import duckdb

from financial_etl.calendar import trading_sessions
from financial_etl.extract import checks
from financial_etl.warehouse.engines import Warehouse
from financial_etl_tests.helpers import day

START, END = day("2024-03-01"), day("2024-03-28")


def test_complete_sessions_names_each_missing_session_reading_a_batch_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "READ_ROWS", 7)  # many batches
    sessions = trading_sessions(START, END)
    rows = [("AAA", d) for d in sessions] + [("BBB", d) for d in sessions if d != day("2024-03-12")]
    rows += [
        ("BBB", day("2024-03-29")),
        ("BBB", day("2024-03-16")),
        ("ZZZ", day("2024-03-12")),
    ]  # a holiday, a Saturday, not asked
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA raw; CREATE TABLE raw.eod_prices_raw (ticker TEXT, date DATE)")
        con.executemany("INSERT INTO raw.eod_prices_raw VALUES (?, ?)", rows)
    with Warehouse("duckdb", db).connect() as con:
        missing = checks.missing_sessions(con, ["AAA", "BBB", "CCC"], START, END)
        assert missing == {"BBB": [day("2024-03-12")], "CCC": sessions}
        assert checks.missing_sessions(con, ["AAA"], day("2024-03-29"), day("2024-03-29")) == {}  # Good Friday
