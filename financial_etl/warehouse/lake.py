"""Raw for a Spark warehouse: dlt merges into the DuckDB file as for the default warehouse,
then publishes raw and its quarantine to Parquet files (dlt's filesystem destination,
replacing the table's files), which Spark registers as `raw.*` tables.

Why this path: dlt has no Spark destination, and its filesystem destination merges only
into Delta or Iceberg tables, whose Spark readers are jars that cannot be fetched offline.
So the merge (one row per ticker and session, restated tickers replaced) stays in dlt's
DuckDB destination, and Spark reads a full copy that each extract rewrites.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dlt
import pyarrow as pa

from financial_etl.warehouse import ACTIONS_TABLE, QUARANTINE_TABLE, RAW_DATASET, RAW_TABLE
from financial_etl.warehouse.dlt_settings import pipeline_settings
from financial_etl.warehouse.project import duckdb_settings

LAKE_PIPELINE = "financial_raw_lake"
BATCH_ROWS = 250_000


def lake_folder(duckdb_path: Path) -> Path:
    return duckdb_path.parent / "lake"


def _batches(duckdb_path: Path, table: str, config: dict) -> Iterator[pa.RecordBatch]:
    import duckdb

    with duckdb.connect(str(duckdb_path), read_only=True, config=config) as con:
        yield from con.execute(f"SELECT * FROM {RAW_DATASET}.{table}").fetch_record_batch(BATCH_ROWS)


def _schemas(duckdb_path: Path, config: dict) -> dict[str, pa.Schema]:
    """The Arrow schema of each raw table the DuckDB file has (the quarantine may not exist)."""
    import duckdb

    with duckdb.connect(str(duckdb_path), read_only=True, config=config) as con:
        present = {
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [RAW_DATASET]
            ).fetchall()
        }
        return {
            table: con.execute(f"SELECT * FROM {RAW_DATASET}.{table} LIMIT 0").fetch_arrow_table().schema
            for table in (RAW_TABLE, QUARANTINE_TABLE, ACTIONS_TABLE)
            if table in present
        }


@pipeline_settings()
def publish_raw(warehouse, pipelines_dir: Path) -> None:
    """Rewrite the lake's copy of raw, its quarantine and the actions from the DuckDB file, then point
    Spark's `raw.*` tables at the files. Called under the extract's stage lock."""
    from pyspark.sql.pandas.types import from_arrow_schema

    folder = lake_folder(warehouse.duckdb_path)
    pipeline = dlt.pipeline(
        pipeline_name=LAKE_PIPELINE,
        destination=dlt.destinations.filesystem(bucket_url=folder.as_uri()),
        dataset_name=RAW_DATASET,
        pipelines_dir=str(pipelines_dir),
    )
    config = duckdb_settings(warehouse.duckdb_path, warehouse.project_dir)
    schemas = _schemas(warehouse.duckdb_path, config)
    for table in schemas:
        resource = dlt.resource(_batches(warehouse.duckdb_path, table, config), name=table, write_disposition="replace")
        # The rows keep the `_dlt_load_id` of the DuckDB load that wrote them.
        pipeline.run(resource, loader_file_format="parquet").raise_on_failed_jobs()
    with warehouse.connect() as con:
        spark = con.con
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {RAW_DATASET}")
        for table, schema in schemas.items():
            # External tables: dropping one forgets the old file listing, not the files.
            spark.sql(f"DROP TABLE IF EXISTS {RAW_DATASET}.{table}")
            spark.catalog.createTable(
                f"{RAW_DATASET}.{table}",
                path=str(folder / RAW_DATASET / table),
                source="parquet",
                schema=from_arrow_schema(schema),
            )
