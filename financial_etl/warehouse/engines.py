"""Which engine holds the warehouse (FINANCIAL_ETL_WAREHOUSE) and how the pipeline reads it.

- DuckDB (the default): the file at FINANCIAL_ETL_DUCKDB_PATH. One process at a time
  (warehouse/lock.py), so runs queue up.
- PostgreSQL (`postgresql://user:password@host:port/database`): dlt loads raw there as
  Parquet through ADBC; SQLMesh runs the model, its audits and its state there. Several
  runs may write at once: PostgreSQL's transactions keep each statement whole, and the
  stages that must not interleave (the extract's merge, SQLMesh, the export's load) take
  a PostgreSQL advisory lock each instead of the file lock (`stage_lock`).
- Spark (`spark` or `spark:<master>`): dlt merges raw into the DuckDB file and publishes
  it as Parquet (lake.py); SQLMesh's spark gateway (config.py) runs the model and its
  audits; the pipeline's own reads use the same session.

The pipeline's own queries (checks, sensors, the export's read) are written once in
DuckDB's dialect, with `?` parameters, and sqlglot writes them for the engine, as SQLMesh
does for the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.tokens import Tokenizer, TokenType

from financial_etl.errors import ConfigError, WarehouseUnavailableError

WAREHOUSE_ENV = "FINANCIAL_ETL_WAREHOUSE"
ENGINES = ("duckdb", "postgres", "spark")  # the values of Warehouse.engine
SPARK_MASTER = "local[2]"


class MissingTable(Exception):
    """The query read a table that does not exist yet (nothing loaded)."""


@dataclass(frozen=True)
class Warehouse:
    engine: str
    duckdb_path: Path
    url: str | None = field(default=None, repr=False)  # PostgreSQL's, with its password
    spark_master: str = SPARK_MASTER
    project_dir: Path | None = None  # the SQLMesh project, whose config.py has Spark's settings

    @property
    def dialect(self) -> str:
        return self.engine

    def describe(self) -> str:
        """Where the warehouse is, without its password: for logs, metadata and the UI."""
        if self.engine == "duckdb":
            return str(self.duckdb_path)
        if self.engine == "spark":
            return f"Spark {self.spark_master}, tables under {self.duckdb_path.parent / 'spark-warehouse'}"
        return redact_url(self.url or "")

    def redact(self, text: str) -> str:
        password = urlsplit(self.url).password if self.url else None
        return text.replace(password, "***") if password else text

    def setting(self) -> str | None:
        """The FINANCIAL_ETL_WAREHOUSE value config.py reads (None: the DuckDB file)."""
        if self.engine == "postgres":
            return self.url
        return f"spark:{self.spark_master}" if self.engine == "spark" else None

    def sql(self, text: str, params: Sequence[Any] = ()) -> str:
        """`text` (DuckDB's dialect, `?` parameters) written for this engine, parameters inlined."""
        return write_sql(text, params, self.dialect)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A read connection (the pipeline writes through dlt and SQLMesh)."""
        if self.engine == "duckdb":
            import duckdb

            from financial_etl.warehouse.lock import held_elsewhere
            from financial_etl.warehouse.project import duckdb_settings

            try:
                con = duckdb.connect(str(self.duckdb_path), read_only=True,
                                     config=duckdb_settings(self.duckdb_path, self.project_dir))
            except duckdb.IOException as exc:  # another process holds the file
                raise held_elsewhere(exc) or WarehouseUnavailableError(f"{self.describe()}: {exc}") from None
            with con:
                yield DuckDBConnection(con, self)
        elif self.engine == "postgres":
            import psycopg2

            try:
                con = psycopg2.connect(self.url, connect_timeout=10)
            except psycopg2.OperationalError as exc:
                raise WarehouseUnavailableError(
                    f"cannot connect to the warehouse {self.describe()} ({WAREHOUSE_ENV}): "
                    f"{self.redact(str(exc)).strip()}") from None
            con.autocommit = True
            try:
                yield PostgresConnection(con, self)
            finally:
                con.close()
        else:
            yield SparkConnection(spark_session(self), self)

    def stage_lock(self, name: str, log: Callable[[str], None] | None = None):
        """Held while a stage writes. DuckDB and a local Spark: the warehouse's file lock
        (one process at a time). PostgreSQL: an advisory lock per stage `name`, so two runs
        never merge into raw or run SQLMesh at the same time, and the rest overlaps."""
        if self.engine == "postgres":
            return _advisory_lock(self, name)
        from financial_etl.warehouse.lock import warehouse_lock

        return warehouse_lock(self.duckdb_path, log=log)

    def reader_lock(self, log: Callable[[str], None] | None = None):
        """Held while reading: DuckDB refuses readers beside a writer process."""
        return nullcontext() if self.engine == "postgres" else self.stage_lock("read", log)


class Result:
    """Rows of a query, read like a DuckDB result: fetchall(), fetchone(), df()."""

    def __init__(self, columns: Sequence[str], rows: list[tuple]):
        self.columns, self.rows = list(columns), rows

    def fetchall(self) -> list[tuple]:
        return self.rows

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def df(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns)


class Connection:
    """`execute(sql, params)` on any engine; a missing table raises MissingTable."""

    def __init__(self, con, warehouse: Warehouse):
        self.con, self.warehouse = con, warehouse

    def execute(self, text: str, params: Sequence[Any] = ()):
        raise NotImplementedError

    def arrow_batches(self, text: str, params: Sequence[Any], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The rows as Arrow batches, the first one empty: it carries the schema."""
        raise NotImplementedError


class DuckDBConnection(Connection):
    def execute(self, text, params=()):
        import duckdb

        try:
            return self.con.execute(text, list(params))
        except duckdb.CatalogException as exc:
            raise MissingTable(str(exc)) from None

    def arrow_batches(self, text, params, batch_rows):
        reader = self.con.execute(text, list(params)).fetch_record_batch(batch_rows)
        yield pa.RecordBatch.from_pylist([], schema=reader.schema)
        yield from reader


class PostgresConnection(Connection):
    def execute(self, text, params=()):
        import psycopg2.errors

        with self.con.cursor() as cur:
            try:
                cur.execute(self.warehouse.sql(text, params))
            except (psycopg2.errors.UndefinedTable, psycopg2.errors.InvalidSchemaName) as exc:
                raise MissingTable(str(exc)) from None
            if cur.description is None:
                return Result([], [])
            return Result([d.name for d in cur.description],
                          [tuple(_plain(v) for v in row) for row in cur.fetchall()])

    def arrow_batches(self, text, params, batch_rows):
        # A named (server-side) cursor streams the rows instead of holding them all.
        self.con.autocommit = False
        try:
            with self.con.cursor(name="financial_etl_read") as cur:
                cur.execute(self.warehouse.sql(text, params))
                rows = cur.fetchmany(batch_rows)
                schema = pa.schema([(d.name, _PG_TYPES.get(d.type_code, pa.string())) for d in cur.description])
                yield pa.RecordBatch.from_pylist([], schema=schema)
                while rows:
                    columns = zip(*rows)
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([_plain(v) for v in c], type=f.type) for c, f in zip(columns, schema)], schema=schema)
                    rows = cur.fetchmany(batch_rows)
        finally:
            self.con.rollback()
            self.con.autocommit = True


class SparkConnection(Connection):
    def execute(self, text, params=()):
        from pyspark.errors import AnalysisException

        try:
            frame = self.con.sql(self.warehouse.sql(text, params))
            return Result(frame.columns, [tuple(row) for row in frame.collect()])
        except AnalysisException as exc:
            if "TABLE_OR_VIEW_NOT_FOUND" in str(exc) or "SCHEMA_NOT_FOUND" in str(exc):
                raise MissingTable(str(exc)) from None
            raise

    def arrow_batches(self, text, params, batch_rows):
        frame = self.con.sql(self.warehouse.sql(text, params))
        schema = pa.schema([(f.name, _SPARK_TYPES.get(f.dataType.typeName(), pa.string())) for f in frame.schema.fields])
        yield pa.RecordBatch.from_pylist([], schema=schema)
        table = pa.Table.from_pandas(frame.toPandas(), schema=schema, preserve_index=False)
        yield from table.to_batches(batch_rows)


# Result column types as Arrow types: PostgreSQL's type OIDs, Spark's type names.
_PG_TYPES = {25: pa.string(), 1043: pa.string(), 1082: pa.date32(), 701: pa.float64(), 700: pa.float32(),
             20: pa.int64(), 23: pa.int32(), 21: pa.int16(), 1700: pa.float64(), 16: pa.bool_()}
_SPARK_TYPES = {"string": pa.string(), "date": pa.date32(), "double": pa.float64(), "float": pa.float32(),
                "long": pa.int64(), "integer": pa.int32(), "boolean": pa.bool_()}


def duckdb_credentials(database: Path, project_dir: Path | None = None):
    """dlt's credentials for a DuckDB file, opened with the project's memory limit and
    spill folder (warehouse/project.py)."""
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    from financial_etl.warehouse.project import duckdb_settings

    return DuckDbCredentials(str(database), global_config=duckdb_settings(database, project_dir))


def load_file_format(preferred: str | None, rows: int) -> str | None:
    """dlt's loader file format for a table of `rows` rows: `preferred` (PostgreSQL: parquet,
    through ADBC), but INSERT VALUES for an empty table, whose Parquet file ADBC cannot
    ingest (dlt 1.31: "Must pass schema, or at least one RecordBatch")."""
    if preferred is None:
        return None
    return preferred if rows else "insert_values"


def write_sql(text: str, params: Sequence[Any], dialect: str) -> str:
    """`text` (DuckDB's dialect, `?` parameters) written for `dialect` by sqlglot, parameters inlined."""
    return sqlglot.transpile(inline_params(text, params), read="duckdb", write=dialect)[0]


def inline_params(text: str, params: Sequence[Any]) -> str:
    """`text` with each `?` parameter (outside strings) replaced by its value as a literal."""
    marks = [t for t in Tokenizer().tokenize(text) if t.token_type == TokenType.PLACEHOLDER]
    if len(marks) != len(params):
        raise ValueError(f"{len(marks)} parameters in the query, {len(params)} values")
    for mark, value in reversed(list(zip(marks, params))):
        text = text[:mark.start] + exp.convert(value).sql(dialect="duckdb") + text[mark.end + 1:]
    return text


def _plain(value):
    """PostgreSQL's numeric comes back as Decimal: the pipeline's figures are doubles."""
    from decimal import Decimal

    return float(value) if isinstance(value, Decimal) else value


@contextmanager
def _advisory_lock(warehouse: Warehouse, name: str) -> Iterator[None]:
    key = int.from_bytes(hashlib.sha256(f"financial_etl:{name}".encode()).digest()[:8], "big", signed=True)
    with warehouse.connect() as con:
        con.execute(f"SELECT pg_advisory_lock({key})")
        try:
            yield
        finally:
            con.execute(f"SELECT pg_advisory_unlock({key})")


def spark_session(warehouse: Warehouse):
    """The process's Spark session, with the settings SQLMesh's gateway uses."""
    from pyspark.sql import SparkSession

    from financial_etl.warehouse.project import project_config_module

    conf = project_config_module(str(warehouse.project_dir)).spark_conf(str(warehouse.duckdb_path), warehouse.spark_master)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def redact_url(url: str) -> str:
    """`url` with its password as ***; the rest as written (a bad port included)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    _, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def parse_warehouse(value: str | None, duckdb_path: Path, project_dir: Path | None = None) -> Warehouse:
    """FINANCIAL_ETL_WAREHOUSE → the warehouse; a ConfigError names a bad value (redacted)."""
    if not value or value.strip().lower() == "duckdb":
        return Warehouse("duckdb", duckdb_path, project_dir=project_dir)
    value = value.strip()
    if value == "spark" or value.startswith("spark:"):
        return Warehouse("spark", duckdb_path, spark_master=value.partition(":")[2] or SPARK_MASTER, project_dir=project_dir)
    parts = urlsplit(value)
    if parts.scheme in ("postgresql", "postgres"):
        problems = [what for what, ok in (("host", parts.hostname), ("user", parts.username),
                                           ("database", parts.path.strip("/"))) if not ok]
        try:
            parts.port
        except ValueError:
            problems.append("a numeric port")
        if problems:
            raise ConfigError(f"{WAREHOUSE_ENV}={redact_url(value)!r} lacks {', '.join(problems)}: "
                              "use postgresql://user:password@host:port/database")
        return Warehouse("postgres", duckdb_path, url=value, project_dir=project_dir)
    raise ConfigError(f"{WAREHOUSE_ENV}={redact_url(value)!r} is not a warehouse: use duckdb (the default), "
                      "spark[:<master>] or postgresql://user:password@host:port/database")

