"""Raw for a Spark warehouse: dlt merges raw, its quarantine and the corporate actions into the
DuckDB file as for the default warehouse; this module then publishes what the load changed to
Parquet files in the lake, and Spark reads `raw.<table>`, a view over the table's current version.

Why this path: dlt has no Spark destination, and its filesystem destination merges only into
Delta or Iceberg tables, whose Spark readers are jars that cannot be fetched offline. Its plain
Parquet tables have no layout partitioned by a column's value, and it can only replace a table's
files whole: a daily run would rewrite the whole history. So the merge stays in dlt's DuckDB
destination, and a publish moves only the months a load changed:

- Every table is partitioned by the month of `date` (`YYYY-MM`; a quarantined row without a date
  is `undated`). A month's fingerprint in DuckDB is its row count and the XOR of its rows' hashes,
  `_dlt_load_id` included: a merged, corrected or deleted row changes it.
- The months whose fingerprint differs from the current version's manifest are written by
  DuckDB's COPY into a new directory, `parts/<version>/month=<month>/`, never over files a reader
  may be reading.
- Spark gets a new external table `raw.<table>__v<version>`, its partitions at the new
  directories for changed months and the previous ones for the rest. Then one metastore
  operation, CREATE OR REPLACE VIEW `raw.<table>`, moves readers to it; the view's property
  `financial_etl.lake_version` names the version whose manifest the next publish compares with.
  The view keeps `month`, its last column: Spark prunes the month folders by that column
  only, and the model's reads of raw filter it on Spark (macros/months.py: `@raw_months`).
- Versions before the previous one are dropped, with the files only they reference: a query that
  started on the previous version keeps its files.

A crash at any step leaves the view on a complete version, and the next publish compares with
that version and removes what the crash left. The partitions' locations are known to the
metastore only, so Spark must keep a table's partitions there (`manageFilesourcePartitions`,
set in sqlmesh_project/config.py).

The lake's layout, per table: `<lake>/raw/<table>/parts/<version>/month=<month>/*.parquet`,
`versions/<version>.json` (the manifest) and `versions/<version>/` (the table's location,
empty: its partitions live elsewhere).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from financial_etl.warehouse import ACTIONS_TABLE, QUARANTINE_TABLE, RAW_DATASET, RAW_TABLE
from financial_etl.warehouse.project import duckdb_settings

TABLES = (RAW_TABLE, QUARANTINE_TABLE, ACTIONS_TABLE)
PARTITION = "month"
MONTH = "coalesce(strftime(date, '%Y-%m'), 'undated')"
VERSION_PROPERTY = "financial_etl.lake_version"


@dataclass(frozen=True)
class Published:
    """What one publish wrote for a table: the months (partitions) it changed, their rows, files
    and bytes. Nothing written: the version readers saw stays."""

    table: str
    version: str
    months: int
    rows: int
    files: int
    bytes: int
    removed: int = 0  # months no row is left in

    def describe(self) -> str:
        if not self.months and not self.removed:
            return f"{self.table} unchanged"
        gone = f", {self.removed} month(s) emptied" if self.removed else ""
        return f"{self.table} {self.months} month(s), {self.rows:,} rows, {self.files} file(s), {self.bytes:,} B{gone}"


def lake_folder(duckdb_path: Path) -> Path:
    return duckdb_path.parent / "lake"


def table_folder(duckdb_path: Path, table: str) -> Path:
    return lake_folder(duckdb_path) / RAW_DATASET / table


def manifest(folder: Path, version: str | None) -> dict:
    """A version's manifest (`folder`: the table's): its columns, the version before it and, per
    month, the fingerprint and the folder (relative to the table's) that holds it."""
    path = folder / "versions" / f"{version}.json"
    if version and path.exists():
        return json.loads(path.read_text())
    return {"columns": [], "months": {}, "previous": None}  # none yet, or the lake was lost: all again


def publish_raw(warehouse) -> list[Published]:
    """Publish the months of raw, its quarantine and the actions that changed in the DuckDB file
    since the last publish, and move Spark's `raw.*` views to them. Called under the extract's
    stage lock."""
    import duckdb

    config = duckdb_settings(warehouse.duckdb_path, warehouse.project_dir)
    with (
        warehouse.connect() as spark_con,
        duckdb.connect(str(warehouse.duckdb_path), read_only=True, config=config) as con,
    ):
        spark = spark_con.con
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {RAW_DATASET}")
        present = {
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [RAW_DATASET]
            ).fetchall()
        }
        return [_publish(spark, con, warehouse.duckdb_path, table) for table in TABLES if table in present]


def _publish(spark, con, duckdb_path: Path, table: str) -> Published:
    from pyspark.sql.pandas.types import from_arrow_schema

    folder = table_folder(duckdb_path, table)
    schema = from_arrow_schema(con.execute(f"SELECT * FROM {RAW_DATASET}.{table} LIMIT 0").fetch_arrow_table().schema)
    columns = [[f.name, f.dataType.simpleString()] for f in schema.fields]
    current = _current_version(spark, table)
    before = manifest(folder, current)
    fingerprints = {
        month: [rows, digest]
        for month, rows, digest in con.execute(
            f"SELECT {MONTH} AS m, count(*), bit_xor(hash(t)) FROM {RAW_DATASET}.{table} AS t GROUP BY m"
        ).fetchall()
    }
    old = before["months"] if before["columns"] == columns else {}  # a new column: every month again
    changed = sorted(m for m, fp in fingerprints.items() if old.get(m, {}).get("fingerprint") != fp)
    if current and not changed and fingerprints.keys() == old.keys():
        _clean(spark, folder, table, keep={current, before["previous"]})
        return Published(table, current, 0, 0, 0, 0)

    version = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S%f")
    parts = folder / "parts" / version
    if changed:
        parts.parent.mkdir(parents=True, exist_ok=True)
        listed = ", ".join(map(_duckdb_string, changed))
        where = "" if len(changed) == len(fingerprints) else f"WHERE {MONTH} IN ({listed})"
        # Sorted by ticker and date: each file's row groups then span few tickers and dates.
        con.execute(
            f"COPY (SELECT *, {MONTH} AS {PARTITION} FROM {RAW_DATASET}.{table} {where} ORDER BY ticker, date) "
            f"TO {_duckdb_string(str(parts))} (FORMAT parquet, PARTITION_BY ({PARTITION}))"
        )
    months = {
        m: {"fingerprint": fp, "folder": f"parts/{version}/{PARTITION}={m}" if m in changed else old[m]["folder"]}
        for m, fp in sorted(fingerprints.items())
    }
    _write_json(folder / "versions" / f"{version}.json", {"columns": columns, "months": months, "previous": current})
    _register(spark, folder, table, version, columns, months)
    _swap(spark, table, version, [name for name, _ in columns])
    _clean(spark, folder, table, keep={version, current})
    files = [f for f in parts.rglob("*") if f.is_file()] if changed else []
    return Published(
        table,
        version,
        months=len(changed),
        rows=sum(fingerprints[m][0] for m in changed),
        files=len(files),
        bytes=sum(f.stat().st_size for f in files),
        removed=len(old.keys() - fingerprints.keys()),
    )


def _current_version(spark, table: str) -> str | None:
    """The version `raw.<table>` shows, if it is this module's view. A table of the former
    layout (the whole copy, registered directly) is dropped: the next view replaces it."""
    name = f"{RAW_DATASET}.{table}"
    if not spark.catalog.tableExists(name):
        return None
    if spark.catalog.getTable(name).tableType != "VIEW":
        spark.sql(f"DROP TABLE {name}")
        return None
    properties = dict(spark.sql(f"SHOW TBLPROPERTIES {name}").collect())
    return properties.get(VERSION_PROPERTY)


def _register(spark, folder: Path, table: str, version: str, columns: list, months: dict) -> None:
    """The version's table: external, partitioned by month, each partition at its own folder."""
    location = folder / "versions" / version
    location.mkdir(parents=True, exist_ok=True)
    name = f"{RAW_DATASET}.{table}__v{version}"
    ddl = ", ".join(f"`{column}` {kind}" for column, kind in columns)
    spark.sql(f"DROP TABLE IF EXISTS {name}")
    spark.sql(
        f"CREATE TABLE {name} ({ddl}, `{PARTITION}` STRING) USING parquet "
        f"PARTITIONED BY ({PARTITION}) LOCATION {_quote(str(location))}"
    )
    if months:
        spark.sql(
            f"ALTER TABLE {name} ADD "
            + " ".join(
                f"PARTITION ({PARTITION} = {_quote(m)}) LOCATION {_quote(str(folder / entry['folder']))}"
                for m, entry in months.items()
            )
        )


def _swap(spark, table: str, version: str, columns: list[str]) -> None:
    """Readers move to the version in one metastore operation."""
    selected = ", ".join(f"`{column}`" for column in [*columns, PARTITION])
    spark.sql(
        f"CREATE OR REPLACE VIEW {RAW_DATASET}.{table} TBLPROPERTIES ({_quote(VERSION_PROPERTY)} = {_quote(version)}) "
        f"AS SELECT {selected} FROM {RAW_DATASET}.{table}__v{version}"
    )


def _clean(spark, folder: Path, table: str, keep: set[str | None]) -> None:
    """Drop the version tables, manifests and part folders that neither kept version uses:
    older versions, and whatever a crashed publish left."""
    keep = {v for v in keep if v}
    prefix = f"{table}__v"
    for found in spark.catalog.listTables(RAW_DATASET, pattern=f"{prefix}*"):
        if found.name.startswith(prefix) and found.name[len(prefix) :] not in keep:
            spark.sql(f"DROP TABLE IF EXISTS {RAW_DATASET}.{found.name}")
    used = {entry["folder"] for v in keep for entry in manifest(folder, v)["months"].values()}
    versions = folder / "versions"
    for path in versions.iterdir() if versions.exists() else ():
        if path.name.split(".")[0] not in keep or path.name.endswith(".tmp"):
            _remove(path)
    for version in (folder / "parts").glob("*"):
        for month in version.iterdir():
            if f"parts/{version.name}/{month.name}" not in used:
                _remove(month)
        if not any(version.iterdir()):
            version.rmdir()
    for stale in folder.glob("*.parquet"):  # the former layout's whole copy
        stale.unlink()


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _write_json(path: Path, value: dict) -> None:
    """Whole or not at all: written beside, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


def _duckdb_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quote(text: str) -> str:
    """A Spark SQL string literal (Spark's escapes are backslashes)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
