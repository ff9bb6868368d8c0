"""marts.stock_metrics: correct against an independent reference (TA-Lib for the recursive
indicators too), the same however the range is cut into batches or restated, and lineage
as the seed documents it."""

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
import talib

from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.settings import SQLMESH_PROJECT_DIR
from financial_etl.transform.metadata import column_lineage
from financial_etl_tests import mesh
from financial_etl_tests.helpers import MART_COLUMNS

# Read, not imported: running the macro module again would register its macros twice.
BLOCK_ROWS = int(
    re.search(r"^BLOCK_ROWS = (\d+)$", (SQLMESH_PROJECT_DIR / "macros" / "recursions.py").read_text(), re.M)[1]
)

START, END = dt.date(2021, 1, 4), dt.date(2022, 12, 30)
# The windowed indicators: the mart's columns from the first SMA to the volume SMA.
INDICATORS = list(MART_COLUMNS[MART_COLUMNS.index("sma_9_day") : MART_COLUMNS.index("volume_sma_20") + 1])
# TA-Lib 0.8.2's EMA, MACD(12, 26, 9), RSI(14), ATR(14).
RECURSIVE = ["ema_12", "ema_26", "macd", "macd_signal", "macd_histogram", "rsi_14_wilder", "atr_14_wilder"]
INDICATORS += RECURSIVE


def assert_close(got: pd.Series, want: pd.Series, label: str) -> None:
    """Equal within 1e-9 relative (absolute 1e-12 near zero), NULLs in the same places."""
    got, want = got.astype("float64").to_numpy(), want.astype("float64").to_numpy()
    assert (np.isnan(got) == np.isnan(want)).all(), (
        f"{label}: NULLs differ at rows {np.flatnonzero(np.isnan(got) != np.isnan(want))[:10]}"
    )
    both = ~np.isnan(got)
    ok = np.isclose(got[both], want[both], rtol=1e-9, atol=1e-12)
    assert ok.all(), (
        f"{label}: {np.count_nonzero(~ok)} values differ, first {got[both][~ok][:3]} vs {want[both][~ok][:3]}"
    )


def reference(prices: pd.DataFrame) -> pd.DataFrame:
    """Indicators computed independently, per ticker, over its own rows: TA-Lib for SMA,
    Bollinger bands and true range, and its EMA, MACD, RSI and ATR (default seeding) for
    the recursive indicators; plain pandas for the rest."""
    out = []
    for ticker, g in prices.sort_values(["ticker", "date"]).groupby("ticker", sort=True):
        c, h, lo = (g[col].to_numpy("float64") for col in ("close_price", "high_price", "low_price"))
        v = g["volume"].astype("float64")
        upper, _, lower = talib.BBANDS(c, timeperiod=20, nbdevup=2, nbdevdn=2, matype=0)
        close = pd.Series(c)
        change = close.diff()
        gain, loss = change.clip(lower=0), (-change).clip(lower=0)
        avg_gain, avg_loss = gain.rolling(14).mean(), loss.rolling(14).mean()
        rsi = 100 - 100 / (1 + avg_gain / avg_loss)
        rsi = rsi.where(avg_loss != 0, np.where(avg_gain > 0, 100.0, 50.0)).where(avg_gain.notna())
        prev = close.shift(1)
        vol20 = v.rolling(20).mean().to_numpy()
        macd, signal, histogram = talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
        out.append(
            pd.DataFrame(
                {
                    "ticker": ticker,
                    "trade_date": g["date"].to_numpy(),
                    "sma_9_day": talib.SMA(c, 9),
                    "sma_20_day": talib.SMA(c, 20),
                    "sma_50_day": talib.SMA(c, 50),
                    "bollinger_upper": upper,
                    "bollinger_lower": lower,
                    "rsi_14_day": rsi.to_numpy(),
                    "macd_line": (close.rolling(12).mean() - close.rolling(26).mean()).to_numpy(),
                    "atr_14_day": talib.SMA(talib.TRANGE(h, lo, c), 14),
                    "daily_return_pct": ((close - prev) / prev * 100).to_numpy(),
                    "price_range_pct": (h - lo) / c * 100,
                    "volume_ratio": v.to_numpy() / vol20,
                    "volume_sma_20": np.floor(vol20 + 0.5),  # SQL ROUND: half away from zero
                    "ema_12": talib.EMA(c, 12),
                    "ema_26": talib.EMA(c, 26),
                    "macd": macd,
                    "macd_signal": signal,
                    "macd_histogram": histogram,
                    "rsi_14_wilder": talib.RSI(c, 14),
                    "atr_14_wilder": talib.ATR(h, lo, c, 14),
                }
            )
        )
    return pd.concat(out, ignore_index=True)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return mesh.history_with_gaps(START, END)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, prices) -> pd.DataFrame:
    return mesh.full_plan(tmp_path_factory.mktemp("full") / "w.duckdb", prices, START, END)


def test_every_indicator_matches_the_reference(full_run, prices):
    want = reference(prices)
    assert list(zip(full_run.ticker, full_run.trade_date.dt.date, strict=True)) == list(
        zip(want.ticker, want.trade_date, strict=True)
    )
    for column in INDICATORS:
        assert_close(full_run[column], want[column], column)


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [None, 1000], ids=["one plan", "1000-day batches"])
def test_a_history_longer_than_a_block_matches_talib(tmp_path, batch_size):
    """The recursions sum inputs within blocks of BLOCK_ROWS rows plus the previous block's
    total, and each block's windows are led in by the previous block's last rows
    (macros/recursions.py). Seventeen years cross two block boundaries in one plan (the
    seed's windows and the recursions); 1000-day batches restart the positions, so they
    continue from a carried state 6 times instead."""
    start, end = dt.date(2006, 1, 3), END
    prices = fetch_synthetic(["LONG", "OTHER"], start, end).frame
    project = (
        mesh.project_copy(tmp_path / "project", batch_size=batch_size, audits=False)
        if batch_size
        else SQLMESH_PROJECT_DIR
    )
    got, want = mesh.full_plan(tmp_path / "w.duckdb", prices, start, end, project), reference(prices)
    assert (got.groupby("ticker").size() > 2 * BLOCK_ROWS).all()
    assert list(zip(got.ticker, got.trade_date.dt.date, strict=True)) == list(
        zip(want.ticker, want.trade_date, strict=True)
    )
    for column in INDICATORS:
        assert_close(got[column], want[column], column)


def test_warm_up_leaves_indicators_null_until_their_window_is_full(full_run):
    for _, g in full_run.groupby("ticker"):
        g = g.reset_index(drop=True)
        assert g.sma_50_day.iloc[:49].isna().all() and g.sma_50_day.iloc[49:].notna().all()
        assert g.sma_20_day.iloc[:19].isna().all() and g.sma_20_day.iloc[19:].notna().all()
        assert g.rsi_14_day.iloc[:14].isna().all() and g.rsi_14_day.iloc[14:].notna().all()
        assert g.atr_14_day.iloc[:14].isna().all() and g.atr_14_day.iloc[14:].notna().all()
        assert g.macd_line.iloc[:25].isna().all() and g.macd_line.iloc[25:].notna().all()
        assert pd.isna(g.daily_return_pct.iloc[0]) and g.daily_return_pct.iloc[1:].notna().all()
        # TA-Lib's first outputs: EMA n at row n, RSI and ATR at row 15, MACD's three at row 34.
        assert g.ema_12.iloc[:11].isna().all() and g.ema_12.iloc[11:].notna().all()
        assert g.ema_26.iloc[:25].isna().all() and g.ema_26.iloc[25:].notna().all()
        assert g.rsi_14_wilder.iloc[:14].isna().all() and g.rsi_14_wilder.iloc[14:].notna().all()
        assert g.atr_14_wilder.iloc[:14].isna().all() and g.atr_14_wilder.iloc[14:].notna().all()
        for column in ("macd", "macd_signal", "macd_histogram"):
            assert g[column].iloc[:33].isna().all() and g[column].iloc[33:].notna().all()


def test_trade_month_is_the_first_day_of_the_sessions_month(full_run):
    """Spark's adapter keeps a month's other days on that premise (sqlmesh_project/config.py)."""
    days = pd.to_datetime(full_run.trade_date)
    assert (pd.to_datetime(full_run.trade_month) == days.dt.to_period("M").dt.start_time).all()
    assert full_run.trade_month.nunique() > 12


def test_sma_50_is_not_sma_20(full_run):
    both = full_run.dropna(subset=["sma_20_day", "sma_50_day"])
    assert (both.sma_20_day != both.sma_50_day).mean() > 0.99


def test_30_day_batches_give_the_same_rows_as_one_full_run(tmp_path, prices, full_run):
    assert_same_as_full_run(tmp_path, prices, full_run, 30)


@pytest.mark.slow
def test_one_day_at_a_time_gives_the_same_rows_as_one_full_run(tmp_path):
    """Mid-December 2021 to mid-September 2022 (every batch costs SQLMesh's fixed overhead): LATE
    lists in March and HALT halts from June to August, so a listing, a halt and a
    resumption all happen one day at a time."""
    start, end = dt.date(2021, 12, 15), dt.date(2022, 9, 16)
    prices = mesh.history_with_gaps(start, end)
    assert prices[prices.ticker == "LATE"].date.min() == dt.date(2022, 3, 1)
    full_run = mesh.full_plan(tmp_path / "full.duckdb", prices, start, end)
    assert_same_as_full_run(tmp_path, prices, full_run, 1, start, end)


def assert_same_as_full_run(tmp_path, prices, full_run, batch_size, start=START, end=END):
    # Audits are tested on their own; here only the computed values are compared.
    project = mesh.project_copy(tmp_path / "project", batch_size=batch_size, audits=False)
    batched = mesh.full_plan(tmp_path / "w.duckdb", prices, start, end, project)
    pd.testing.assert_frame_equal(
        batched[["ticker", "trade_date", "volume"]], full_run[["ticker", "trade_date", "volume"]]
    )
    for column in INDICATORS:
        assert_close(batched[column], full_run[column], f"{column} ({batch_size}-day batches)")


@pytest.mark.slow
def test_restating_a_later_range_reads_the_rows_before_it(tmp_path, prices, full_run):
    """A daily partition run restates one interval: its windows still see 50 earlier rows."""
    db = tmp_path / "w.duckdb"
    mesh.write_raw(db, prices[prices.date < dt.date(2022, 9, 1)])
    ctx = mesh.context(db, START)
    mesh.plan_prod(ctx, dt.date(2022, 8, 31))
    mesh.write_raw(db, prices)  # the later sessions arrive
    for day in (dt.date(2022, 9, 1), dt.date(2022, 9, 2), dt.date(2022, 9, 6)):
        mesh.restate(ctx, day, day)
    ctx.close()
    got = mesh.mart(db)
    want = full_run[full_run.trade_date <= pd.Timestamp("2022-09-06")].reset_index(drop=True)
    assert len(got) == len(want)
    for column in INDICATORS:
        assert_close(got[column], want[column], column)


@pytest.mark.slow
def test_restating_a_middle_range_recomputes_everything_after_it(tmp_path, prices, full_run):
    """Raw rows of a range in the middle change (a vendor correction, re-loaded): the
    restatement from the range's start through the end of the history, as the transform
    runs it (window_reach_end), gives what a full run on the corrected raw gives, and the
    recursive indicators differ from the old ones to the last row."""
    db = tmp_path / "w.duckdb"
    mesh.write_raw(db, prices)
    project = mesh.project_copy(tmp_path / "project", batch_size=30, audits=False)
    ctx = mesh.context(db, START, project)
    mesh.plan_prod(ctx, END)
    first, last = dt.date(2022, 3, 1), dt.date(2022, 3, 31)
    corrected = prices.copy()
    in_range = (corrected.date >= first) & (corrected.date <= last)
    for column in ("open_price", "high_price", "low_price", "close_price"):
        corrected.loc[in_range, column] *= 1.01
    mesh.write_raw(db, corrected)
    mesh.restate(ctx, first, END)  # window_reach_end: the last raw date
    ctx.close()
    got = mesh.mart(db)

    want = mesh.full_plan(tmp_path / "fresh.duckdb", corrected, START, END)
    assert len(got) == len(want)
    for column in INDICATORS:
        assert_close(got[column], want[column], f"{column} (restated from {first})")
    # The change reaches the newest row of every ticker, not just 49 rows.
    newest = got.groupby("ticker").tail(1).index
    assert (got.loc[newest, "ema_26"].to_numpy() != full_run.loc[newest, "ema_26"].to_numpy()).all()
    # And the rows before the range kept their values.
    before = got.trade_date < pd.Timestamp(first)
    for column in INDICATORS:
        assert_close(got.loc[before, column], full_run.loc[before, column], f"{column} before {first}")


def test_the_reach_of_a_re_loaded_range_is_the_end_of_the_history(tmp_path, prices):
    from financial_etl.transform.assets import window_reach_end
    from financial_etl_tests.helpers import settings_for

    db = tmp_path / "w.duckdb"
    mesh.write_raw(db, prices)
    settings = settings_for(duckdb_path=str(db))
    assert window_reach_end(settings, dt.date(2022, 3, 31)) == END
    assert window_reach_end(settings, END) == END
    assert window_reach_end(settings, dt.date(2023, 6, 30)) == dt.date(2023, 6, 30)


def test_the_stored_wilder_averages_give_the_rsi(full_run):
    """The Wilder averages a batch carries to the next are the mart's own columns: RSI is
    100 * gain / (gain + loss) of them, and they are NULL exactly where the RSI is."""
    g, lo, rsi = full_run.wilder_avg_gain_14, full_run.wilder_avg_loss_14, full_run.rsi_14_wilder
    assert (g.isna() == rsi.isna()).all() and (lo.isna() == rsi.isna()).all() and rsi.notna().any()
    warm = rsi.notna()
    assert (g[warm] >= 0).all() and (lo[warm] >= 0).all()
    total = g[warm] + lo[warm]
    assert_close(rsi[warm], (100 * g[warm] / total).where(total != 0, 0.0), "rsi from the averages")


# The seed's lineage table. Windowed indicators also depend on ticker and date (the
# window's partition and order): the seed's table shows that for the SMAs but missed it
# for the Bollinger bands and the volume columns, whose windows it wrote as named WINDOWs
# that sqlglot does not trace.
SEED_LINEAGE = {
    "ticker": {"ticker"},
    "trade_date": {"date"},
    "open_price": {"open_price"},
    "high_price": {"high_price"},
    "low_price": {"low_price"},
    "close_price": {"close_price"},
    "volume": {"volume"},
    "sma_20_day": {"close_price", "date", "ticker"},
    "sma_50_day": {"close_price", "date", "ticker"},
    "bollinger_upper": {"close_price"},
    "bollinger_lower": {"close_price"},
    "rsi_14_day": {"close_price", "date", "ticker"},
    "macd_line": {"close_price", "date", "ticker"},
    "sma_9_day": {"close_price", "date", "ticker"},
    "atr_14_day": {"low_price", "close_price", "date", "ticker", "high_price"},
    "daily_return_pct": {"close_price", "date", "ticker"},
    "price_range_pct": {"high_price", "close_price", "low_price"},
    "volume_ratio": {"volume"},
    "volume_sma_20": {"volume"},
    "trade_month": {"date"},  # not the seed's: Spark's partition
}
WINDOW_KEYS = {"bollinger_upper", "bollinger_lower", "volume_ratio", "volume_sma_20"}
CLOSES = {"close_price", "date", "ticker"}
RECURSIVE_LINEAGE = {
    **{column: CLOSES for column in ("ema_12", "ema_26", "macd", "macd_signal", "macd_histogram", "rsi_14_wilder")},
    "wilder_avg_gain_14": CLOSES,
    "wilder_avg_loss_14": CLOSES,
    "atr_14_wilder": CLOSES | {"high_price", "low_price"},
}
# the carried state each column is continued from
WILDER = {"wilder_avg_gain_14", "wilder_avg_loss_14"}
MACD = {"ema_26", "macd", "macd_signal"}
CARRIED = {
    "ema_12": {"ema_12"},
    "ema_26": {"ema_26"},
    "macd": {"ema_26", "macd"},
    "macd_signal": MACD,
    "macd_histogram": MACD,
    "rsi_14_wilder": WILDER,
    "atr_14_wilder": {"atr_14_wilder"},
    "wilder_avg_gain_14": {"wilder_avg_gain_14"},
    "wilder_avg_loss_14": {"wilder_avg_loss_14"},
}


def test_column_lineage_gives_the_seed_table(tmp_path):
    ctx = mesh.context(tmp_path / "w.duckdb", START)
    lineage = column_lineage(ctx, mesh.MODEL)
    ctx.close()
    assert list(lineage) == list(MART_COLUMNS)
    for column, sources in lineage.items():
        if column in RECURSIVE_LINEAGE:
            # raw's prices, and the mart's own previous row: the state a batch starts from
            assert {name for table, name in sources if table == "eod_prices_raw"} == RECURSIVE_LINEAGE[column], column
            assert {name for table, name in sources if table == "stock_metrics"} == {"ticker"} | CARRIED[column], column
            assert {table for table, _ in sources} == {"eod_prices_raw", "stock_metrics"}, column
            continue
        assert {table for table, _ in sources} == {"eod_prices_raw"}, column
        expected = SEED_LINEAGE[column] | ({"ticker", "date"} if column in WINDOW_KEYS else set())
        assert {name for _, name in sources} == expected, column


def test_sqlmesh_unit_tests_pass(tmp_path):
    """sqlmesh_project/tests: warm-up NULLs, a zero-loss window, a gap, a late batch; TA-Lib's
    seeding and a batch continuing from the carried state (a halted ticker's old one too)."""
    ctx = mesh.context(tmp_path / "w.duckdb", START)
    result = ctx.test()
    ctx.close()
    assert result.testsRun >= 7
    assert result.wasSuccessful(), [str(f) for f in result.failures + result.errors]
