"""Publishing raw to Spark (warehouse/lake.py) moves the months a load changed, not the history,
and Spark's readers always see a whole version equal to the DuckDB file dlt merged into.

One Spark session walks one warehouse through a history, a day, three more years, a day, a
vendor correction, a restated ticker and a crash before the swap.
"""

from __future__ import annotations

import datetime as dt

import dlt
import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from financial_etl.extract.contract import RAW_SCHEMA
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.settings import SQLMESH_PROJECT_DIR
from financial_etl.warehouse import QUARANTINE_TABLE, RAW, RAW_DATASET, RAW_KEY_COLUMNS, RAW_TABLE, lake
from financial_etl.warehouse.dlt_settings import pipeline_settings
from financial_etl.warehouse.engines import parse_warehouse

pytestmark = pytest.mark.slow

TICKERS = [f"T{i:02d}" for i in range(20)]


def test_a_daily_publish_moves_its_month_and_readers_see_whole_versions(tmp_path, monkeypatch):
    db = tmp_path / "data" / "financial_etl.duckdb"
    db.parent.mkdir(parents=True)
    warehouse = parse_warehouse("spark:local[2]", db, SQLMESH_PROJECT_DIR)
    pipeline = dlt.pipeline(
        pipeline_name="lake_test",
        destination=dlt.destinations.duckdb(str(db)),
        dataset_name=RAW_DATASET,
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    folder = lake.table_folder(db, RAW_TABLE)

    def merge(start: str, end: str) -> None:
        frame = fetch_synthetic(TICKERS, dt.date.fromisoformat(start), dt.date.fromisoformat(end)).frame
        merge_frame(frame)

    def merge_frame(frame: pd.DataFrame) -> None:
        rows = pa.Table.from_pandas(frame[list(RAW_SCHEMA.names)], schema=RAW_SCHEMA, preserve_index=False)
        resource = dlt.resource(rows, name=RAW_TABLE, write_disposition="merge", primary_key=list(RAW_KEY_COLUMNS))
        with pipeline_settings():  # the extract's: rows keep their `_dlt_load_id`
            pipeline.run(resource).raise_on_failed_jobs()

    def publish() -> lake.Published:
        published = {p.table: p for p in lake.publish_raw(warehouse)}
        assert_spark_equals_duckdb()
        assert published[QUARANTINE_TABLE].months == 0, "nothing new in the quarantine: nothing written"
        return published[RAW_TABLE]

    def assert_spark_equals_duckdb() -> None:
        with duckdb.connect(str(db), read_only=True) as con:
            # and the view's last column, the month folder a row is in, is its date's month
            want = con.execute(f"SELECT *, {lake.MONTH} FROM {RAW} ORDER BY ticker, date").fetchall()
        got = sorted(tuple(row) for row in spark.sql(f"SELECT * FROM {RAW}").collect())
        assert got == want

    def folders(version: str) -> dict[str, str]:
        return {m: entry["folder"] for m, entry in lake.manifest(folder, version)["months"].items()}

    with warehouse.connect() as con:
        spark = con.con
        # A lake of the former layout: raw registered as a plain table, replaced by the view.
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {RAW_DATASET}")
        spark.sql(f"CREATE TABLE {RAW} (ticker STRING) USING parquet LOCATION '{tmp_path / 'old'}'")
        quarantine = pa.table(
            {"quarantine_id": ["q1", "q2"], "ticker": ["T00", None], "date": [dt.date(2020, 6, 2), None]}
        )
        pipeline.run(quarantine, table_name=QUARANTINE_TABLE).raise_on_failed_jobs()

        # A year of history, then one day: the day's month only, in a new folder.
        merge("2020-06-01", "2021-05-27")
        history = lake.publish_raw(warehouse)
        assert {p.table: p.months for p in history} == {RAW_TABLE: 12, QUARANTINE_TABLE: 2}
        assert_spark_equals_duckdb()
        first = history[0].version
        merge("2021-05-28", "2021-05-28")
        day_1y = publish()
        assert (day_1y.months, day_1y.rows, day_1y.files) == (1, 20 * 20, 1)
        before, after = folders(first), folders(day_1y.version)
        assert {m for m in after if after[m] != before.get(m)} == {"2021-05"}
        assert after["2021-05"].startswith(f"parts/{day_1y.version}/")
        schema = {f.name: f.dataType.simpleString() for f in spark.table(RAW).schema.fields}
        assert schema == {
            "ticker": "string",
            "date": "date",
            **{c: "double" for c in ("open_price", "high_price", "low_price", "close_price")},
            "volume": "bigint",
            "_dlt_load_id": "string",
            "month": "string",  # the partition, which the model's reads prune by on Spark
        }

        # Three more years, then one day at the same place in its month: about the same bytes.
        merge("2021-06-01", "2024-05-30")
        history_bytes = publish().bytes
        merge("2024-05-31", "2024-05-31")
        day_4y = publish()
        assert (day_4y.months, day_4y.rows) == (1, 20 * 22)
        assert day_4y.bytes < 1.5 * day_1y.bytes and day_4y.bytes < history_bytes / 20, (day_1y, day_4y)

        # A vendor correction in an old month republishes that month only.
        corrected = fetch_synthetic(["T03"], dt.date(2022, 3, 14), dt.date(2022, 3, 14)).frame
        corrected["close_price"] *= 1.01
        merge_frame(corrected)
        correction = publish()
        assert (correction.months, correction.rows) == (1, 20 * 23)
        changed = folders(correction.version)
        assert changed["2022-03"].startswith(f"parts/{correction.version}/")
        assert sum(f.startswith(f"parts/{correction.version}/") for f in changed.values()) == 1

        # A restated ticker (rows deleted, as the extract's replace does) republishes its months.
        with duckdb.connect(str(db)) as con_db:
            con_db.execute(f"DELETE FROM {RAW} WHERE ticker = 'T07' AND date BETWEEN '2023-01-20' AND '2023-02-10'")
        restated = publish()
        assert restated.months == 2
        assert {m for m, f in folders(restated.version).items() if f.startswith(f"parts/{restated.version}/")} == {
            "2023-01",
            "2023-02",
        }

        # A crash between the new folders and the swap: readers stay on the last version, and
        # the next publish repairs it and removes what the crash left.
        merge("2024-06-03", "2024-06-03")
        with duckdb.connect(str(db), read_only=True) as con_db:
            new_day = con_db.execute(f"SELECT count(*) FROM {RAW} WHERE date = '2024-06-03'").fetchone()[0]

        def crash(*args):
            raise RuntimeError("killed before the swap")

        monkeypatch.setattr(lake, "_swap", crash)
        with pytest.raises(RuntimeError, match="killed"):
            lake.publish_raw(warehouse)
        monkeypatch.undo()
        assert spark.sql(f"SELECT count(*) FROM {RAW} WHERE date = DATE '2024-06-03'").collect()[0][0] == 0
        assert len(spark.catalog.listTables(RAW_DATASET, pattern=f"{RAW_TABLE}__v*")) == 3  # the crash's
        repaired = publish()
        assert (repaired.months, new_day) == (1, 20)

        # Two versions stay (the current and the previous), with only the files they use.
        kept = {repaired.version, restated.version}
        tables = {t.name for t in spark.catalog.listTables(RAW_DATASET, pattern=f"{RAW_TABLE}__v*")}
        assert tables == {f"{RAW_TABLE}__v{v}" for v in kept}
        assert {p.name for p in (folder / "versions").glob("*.json")} == {f"{v}.json" for v in kept}
        used = {f for v in kept for f in folders(v).values()}
        on_disk = {str(p.relative_to(folder)) for p in (folder / "parts").glob("*/month=*")}
        assert on_disk == used
