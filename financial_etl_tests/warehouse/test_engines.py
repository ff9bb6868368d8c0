"""The same model, audits and batches on DuckDB, PostgreSQL and Spark give the same mart.

One synthetic universe (20 tickers over two years, one halted for three months, one
listed a year late) goes through three SQLMesh gateways built by config.py from
FINANCIAL_ETL_WAREHOUSE: a full plan, a later day run as the pipeline runs a day (a
restatement of that day), and a restatement of a middle range after its raw rows
changed, from the day the halted ticker resumes. Raw reaches each engine as the
pipeline loads it: dlt into DuckDB and into PostgreSQL (Parquet through ADBC), and for
Spark into DuckDB and then, month by month, to the Parquet files Spark reads as the raw
table (warehouse/lake.py).
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest

from financial_etl.calendar import trading_sessions
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.settings import SQLMESH_PROJECT_DIR
from financial_etl.transform.audits import evaluate_audits
from financial_etl.transform.sqlmesh_adapter import mesh_config
from financial_etl.warehouse import MART
from financial_etl.warehouse.engines import parse_warehouse
from financial_etl_tests import mesh
from financial_etl_tests.servers import start_postgres

pytestmark = pytest.mark.slow

START, END = dt.date(2021, 1, 4), dt.date(2022, 12, 30)
TICKERS = [f"T{i:02d}" for i in range(18)] + ["HALT", "LATE"]
RAW_COLUMNS = ["ticker", "date", "open_price", "high_price", "low_price", "close_price", "volume"]


def universe() -> pd.DataFrame:
    frame = fetch_synthetic(TICKERS, START, END).frame[RAW_COLUMNS]
    halted = (frame.ticker == "HALT") & (frame.date >= dt.date(2022, 6, 1)) & (frame.date <= dt.date(2022, 8, 31))
    late = (frame.ticker == "LATE") & (frame.date < dt.date(2022, 1, 3))
    return frame[~(halted | late)].reset_index(drop=True)


class Engine:
    """One warehouse: raw loaded through dlt, SQLMesh on its gateway, the mart read back."""

    def __init__(self, name: str, setting: str | None, folder):
        self.name, self.folder = name, folder
        self.duckdb_path = folder / "data" / "financial_etl.duckdb"
        self.duckdb_path.parent.mkdir(parents=True)
        self.warehouse = parse_warehouse(setting, self.duckdb_path, SQLMESH_PROJECT_DIR)
        self.config = mesh_config(
            str(SQLMESH_PROJECT_DIR), str(self.duckdb_path), START.isoformat(), warehouse=self.warehouse.setting()
        )
        self.context = None

    def load_raw(self, frame: pd.DataFrame, replace: bool) -> None:
        mesh.load_raw(self.warehouse, frame, self.folder / "pipelines", replace)

    def open(self):
        from sqlmesh import Context

        self.context = Context(paths=[str(SQLMESH_PROJECT_DIR)], config=self.config)
        return self.context

    def mart(self) -> pd.DataFrame:
        frame = self.context.engine_adapter.fetchdf(f"SELECT * FROM {MART} ORDER BY ticker, trade_date")
        for column in ("trade_date", "trade_month"):
            frame[column] = pd.to_datetime(frame[column]).dt.date
        return frame

    def audits(self, start, end) -> list[tuple]:
        return [(o.name, o.passed, o.violations) for o in evaluate_audits(self.context, MART, start, end)]

    def raw_reads(self, day: dt.date) -> list[str]:
        """The model's query for one day as this engine gets it; on Spark, the partition
        filters of each of its scans of raw in Spark's plan."""
        query = self.context.render(MART, start=day, end=day, execution_time=day + dt.timedelta(days=1))
        sql = query.sql(dialect=self.context.engine_adapter.dialect)
        if self.warehouse.engine != "spark":
            return [sql]
        plan = self.context.engine_adapter.spark.sql(f"EXPLAIN FORMATTED {sql}").collect()[0][0]
        scans = re.findall(r"\(\d+\) Scan parquet spark_catalog\.raw\.(?:.|\n)*?PartitionFilters: (\[.*\])", plan)
        return scans or [plan]


def assert_same_mart(got: pd.DataFrame, want: pd.DataFrame, label: str) -> None:
    assert list(got.columns) == list(want.columns), label
    assert list(zip(got.ticker, got.trade_date, strict=True)) == list(zip(want.ticker, want.trade_date, strict=True)), (
        label
    )
    assert list(got.trade_month) == list(want.trade_month), label
    for column in got.columns.drop(["ticker", "trade_date", "trade_month"]):
        a, b = got[column].astype("float64").to_numpy(), want[column].astype("float64").to_numpy()
        assert (np.isnan(a) == np.isnan(b)).all(), f"{label} {column}: NULLs differ"
        both = ~np.isnan(a)
        close = np.isclose(a[both], b[both], rtol=1e-9, atol=1e-12)
        assert close.all(), f"{label} {column}: {np.count_nonzero(~close)} values differ"


@pytest.fixture(scope="module")
def postgres():
    server = start_postgres()
    yield server
    server.stop()


# Starts the day HALT resumes: with fewer than 50 rows in the 120 days before, HALT is read
# from its first row (on Spark, the months the batch's own read prunes away).
MIDDLE = (dt.date(2022, 9, 1), dt.date(2022, 9, 30))


def run_stages(engine: Engine) -> list[tuple]:
    """A full plan, one more day, then a restated middle range: the mart and audits after each."""
    prices = universe()
    last_day = trading_sessions(START, END)[-1]
    changed = prices.copy()
    in_middle = (changed.date >= MIDDLE[0]) & (changed.date <= MIDDLE[1]) & (changed.ticker == "T03")
    changed.loc[in_middle, ["open_price", "high_price", "low_price", "close_price"]] *= 1.05
    stages = []
    engine.load_raw(prices[prices.date < last_day], replace=True)
    ctx = engine.open()
    mesh.plan_prod(ctx, last_day - dt.timedelta(days=1))
    stages.append(("full plan", engine.mart(), engine.audits(START, END)))

    engine.load_raw(prices[prices.date == last_day], replace=False)
    mesh.plan_prod(ctx, last_day, restate_models=[MART], start=last_day.isoformat(), end=last_day.isoformat())
    stages.append(("one more day", engine.mart(), engine.audits(last_day, last_day)))
    engine.day_reads = engine.raw_reads(last_day)

    engine.load_raw(changed, replace=True)
    mesh.restate(ctx, MIDDLE[0], last_day)
    stages.append(("restated middle", engine.mart(), engine.audits(START, END)))
    ctx.close()
    return stages


@pytest.fixture(scope="module")
def duckdb_stages(tmp_path_factory) -> list[tuple]:
    """DuckDB's stages, the reference; once per module (and per xdist worker)."""
    stages = run_stages(Engine("duckdb", None, tmp_path_factory.mktemp("duckdb")))
    prices, last_day = universe(), trading_sessions(START, END)[-1]
    assert len(stages[0][1]) == len(prices[prices.date < last_day]) and stages[1][1].trade_date.max() == last_day
    assert all(passed for _, passed, _ in stages[0][2]) and len(stages[0][2]) == 11

    def t03_ema(mart):
        return mart[mart.ticker == "T03"].set_index("trade_date").loc[last_day, "ema_26"]

    assert t03_ema(stages[2][1]) != t03_ema(stages[1][1])  # the restatement reached the last day
    return stages


# One test per engine, so the two can run on separate workers.
@pytest.mark.parametrize("name", ["postgres", "spark"])
def test_the_mart_and_its_audits_on_each_engine_equal_duckdbs(name, duckdb_stages, tmp_path_factory, request):
    setting = request.getfixturevalue("postgres").url() if name == "postgres" else "spark:local[2]"
    engine = Engine(name, setting, tmp_path_factory.mktemp(name))
    stages = run_stages(engine)
    for (label, mart, audits), (_, want_mart, want_audits) in zip(stages, duckdb_stages, strict=True):
        assert_same_mart(mart, want_mart, f"{name}, {label}")
        assert audits == want_audits, f"{name}, {label}"
    if name == "spark":
        # Spark prunes raw's month folders by its `month` column only: two reads of raw keep to
        # the months of the day's 120 days, and the read of whole histories (for a ticker with
        # fewer rows in them) to none, unless a ticker needs them (a subquery Spark runs first).
        near = r"\(month#\d+ >= 2022-09\), \(month#\d+ <= 2022-12\)"
        older = r"\(month#\d+ >= date_format\(cast\(Subquery .*\(month#\d+ <= 2022-09\)"
        assert len(engine.day_reads) == 3, engine.day_reads
        assert sum(bool(re.search(near, r)) for r in engine.day_reads) == 2, engine.day_reads
        assert sum(bool(re.search(older, r)) for r in engine.day_reads) == 1, engine.day_reads
    else:
        assert not re.search(r'\bmonth"? BETWEEN', engine.day_reads[0]), "raw has no month column here"
