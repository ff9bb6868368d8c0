"""Each audit of marts.stock_metrics fails on a planted bad row, and passes on clean data
whose warm-up rows are NULL (the audits are NULL-aware)."""

import datetime as dt

import duckdb
import pytest

from financial_etl.transform.audits import audit_names, evaluate_audits
from financial_etl_tests import mesh

START, END = dt.date(2024, 1, 2), dt.date(2024, 6, 28)
PLANTS = {
    "valid_rsi_range": "UPDATE scratch.mart SET rsi_14_day = 100.5 WHERE rowid = 40",
    "valid_ohlc_prices": "UPDATE scratch.mart SET high_price = low_price - 1 WHERE rowid = 40",
    "open_close_within_high_low": "UPDATE scratch.mart SET open_price = high_price + 0.01 WHERE rowid = 40",
    "positive_volume": "UPDATE scratch.mart SET volume = 0 WHERE rowid = 40",
    "valid_atr": "UPDATE scratch.mart SET atr_14_day = -0.01 WHERE rowid = 40",
    "valid_rsi_wilder_range": "UPDATE scratch.mart SET rsi_14_wilder = 100.5 WHERE rowid = 40",
    "valid_atr_wilder": "UPDATE scratch.mart SET atr_14_wilder = -0.01 WHERE rowid = 40",
    "macd_histogram_identity": "UPDATE scratch.mart SET macd_histogram = macd_histogram + 0.01 WHERE rowid = 40",
    "not_null": "UPDATE scratch.mart SET close_price = NULL WHERE rowid = 40",
    "unique_combination_of_columns": "INSERT INTO scratch.mart SELECT * FROM scratch.mart WHERE rowid = 40",
}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    db = tmp_path_factory.mktemp("audits") / "w.duckdb"
    mesh.write_raw(db, mesh.history_with_gaps(START, END))
    ctx = mesh.context(db, START)
    mesh.plan_prod(ctx, END)
    ctx.close()
    return db


def _outcomes(db, table):
    ctx = mesh.context(db, START)
    try:
        return {o.name: o for o in evaluate_audits(ctx, mesh.MODEL, START, END, table=table)}
    finally:
        ctx.close()


def test_the_model_has_the_seeds_audits_and_only_data_errors_block(warehouse):
    ctx = mesh.context(warehouse, START)
    names = audit_names(ctx, mesh.MODEL)
    ctx.close()
    assert names == [
        ("not_null", True), ("unique_combination_of_columns", True), ("valid_rsi_range", True),
        ("valid_ohlc_prices", True), ("open_close_within_high_low", False), ("positive_volume", False),
        ("valid_atr", True), ("valid_rsi_wilder_range", True), ("valid_atr_wilder", True),
        ("macd_histogram_identity", True),
    ]


def test_clean_data_with_warm_up_nulls_passes_every_audit(warehouse):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM marts.stock_metrics WHERE rsi_14_day IS NULL").fetchone()[0] > 0
    outcomes = _outcomes(warehouse, None)
    assert set(outcomes) == set(PLANTS)
    assert all(o.passed for o in outcomes.values()), {n: o.violations for n, o in outcomes.items()}


@pytest.mark.parametrize("audit", list(PLANTS))
def test_a_planted_bad_row_fails_its_audit(warehouse, tmp_path, audit):
    db = tmp_path / "w.duckdb"
    db.write_bytes(warehouse.read_bytes())
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA scratch")
        con.execute("CREATE TABLE scratch.mart AS SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date")
        con.execute(PLANTS[audit])
    outcomes = _outcomes(db, "scratch.mart")
    assert outcomes[audit].violations == 1
    assert not outcomes[audit].passed
    assert len(outcomes[audit].sample) == 1
    assert "scratch" in outcomes[audit].query
    # A high below the low necessarily puts open and close outside [low, high] too.
    also = {"open_close_within_high_low"} if audit == "valid_ohlc_prices" else set()
    others = {n: o.violations for n, o in outcomes.items() if n != audit and n not in also}
    assert all(v == 0 for v in others.values()), others
