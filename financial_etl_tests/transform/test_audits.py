"""Each audit of marts.stock_metrics fails on a planted bad row, and passes on clean data
whose warm-up rows are NULL (the audits are NULL-aware)."""

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from financial_etl.extract import contract as c
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
    "finite_values": "UPDATE scratch.mart SET daily_return_pct = 'Infinity'::DOUBLE WHERE rowid = 40",
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
        ("not_null", True),
        ("unique_combination_of_columns", True),
        ("valid_rsi_range", True),
        ("valid_ohlc_prices", True),
        ("open_close_within_high_low", False),
        ("positive_volume", False),
        ("valid_atr", True),
        ("valid_rsi_wilder_range", True),
        ("valid_atr_wilder", True),
        ("macd_histogram_identity", True),
        ("finite_values", True),
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


def test_finite_values_covers_every_double_column_of_the_model(warehouse):
    ctx = mesh.context(warehouse, START)
    try:
        model = ctx.get_model(mesh.MODEL)
        doubles = [name for name, kind in model.columns_to_types.items() if kind.is_type("double")]
        (args,) = [args for audit, args in model.audits_with_args if audit.name == "finite_values"]
    finally:
        ctx.close()
    assert [column.name for column in args["columns"].expressions] == doubles


@pytest.mark.parametrize(
    ("column", "value"),
    [("volume_ratio", "'NaN'"), ("macd_signal", "'-Infinity'"), ("close_price", "'Infinity'"), ("sma_50_day", "'NaN'")],
)
def test_finite_values_names_the_row_with_infinity_or_nan(warehouse, tmp_path, column, value):
    db = tmp_path / "w.duckdb"
    db.write_bytes(warehouse.read_bytes())
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA scratch")
        con.execute("CREATE TABLE scratch.mart AS SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date")
        planted = con.execute(
            f"UPDATE scratch.mart SET {column} = {value}::DOUBLE WHERE rowid = 60 RETURNING ticker, trade_date"
        ).fetchone()
    outcome = _outcomes(db, "scratch.mart")["finite_values"]
    assert outcome.blocking and outcome.violations == 1
    row = outcome.sample.iloc[0]
    assert (row["ticker"], row["trade_date"].date()) == planted and outcome.dates == (planted[1],)


def test_prices_at_the_contracts_bounds_and_a_halt_without_volume_keep_the_mart_finite(tmp_path):
    """Whatever the raw contract lets through, every indicator stays finite: closes jumping
    between MIN_PRICE and MAX_PRICE for more than one 2,048-row block of the recursions
    (whose weights reach 0.8^-2047, about 1e198), volumes at MAX_VOLUME, and 30 sessions
    with volume 0 (a ratio to a mean of 0 is NULL, where DuckDB's 0 / 0 is NaN)."""
    n = 2_100
    close = np.where(np.arange(n) % 2, c.MAX_PRICE, c.MIN_PRICE)
    volume = np.full(n, int(c.MAX_VOLUME))
    volume[100:130] = 0
    days = pd.bdate_range("2010-01-04", periods=n).date
    frame = pd.DataFrame(
        {
            "ticker": "EDGE",
            "date": days,
            "open_price": close,
            "high_price": close,
            "low_price": close,
            "close_price": close,
            "volume": volume,
        }
    )
    db = tmp_path / "w.duckdb"
    mesh.write_raw(db, frame)
    ctx = mesh.context(db, days[0])
    try:
        mesh.plan_prod(ctx, days[-1])
        outcomes = {o.name: o for o in evaluate_audits(ctx, mesh.MODEL, days[0], days[-1])}
        doubles = [name for name, kind in ctx.get_model(mesh.MODEL).columns_to_types.items() if kind.is_type("double")]
    finally:
        ctx.close()
    assert all(o.passed for o in outcomes.values() if o.blocking), {n: o.violations for n, o in outcomes.items()}
    with duckdb.connect(str(db), read_only=True) as con:
        not_finite = con.execute(
            f"SELECT {', '.join(f'count(*) FILTER (NOT isfinite({col}))' for col in doubles)} FROM marts.stock_metrics"
        ).fetchone()
        assert dict(zip(doubles, not_finite, strict=True)) == dict.fromkeys(doubles, 0)
        assert con.execute("SELECT count(*), max(abs(daily_return_pct)) FROM marts.stock_metrics").fetchone() == (
            n,
            pytest.approx((c.MAX_PRICE - c.MIN_PRICE) / c.MIN_PRICE * 100),
        )
        halted = con.execute(
            "SELECT trade_date FROM marts.stock_metrics WHERE volume_ratio IS NULL AND "
            "volume_sma_20 = 0 ORDER BY trade_date"
        ).fetchall()
        assert [d for (d,) in halted] == list(days[119:130])
