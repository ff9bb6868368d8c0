"""Which engine holds the warehouse (FINANCIAL_ETL_WAREHOUSE) and how the pipeline reads it.

- DuckDB (the default): the file at FINANCIAL_ETL_DUCKDB_PATH. One process at a time
  (warehouse/lock.py), so runs queue up.
- PostgreSQL (`postgresql://user:password@host:port/database`): dlt loads raw there as
  Parquet through ADBC; SQLMesh runs the model, its audits and its state there. Several
  runs may write at once: PostgreSQL's transactions keep each statement whole, and the
  stages that must not interleave (the extract's merge, SQLMesh, the export's load) take
  a PostgreSQL advisory lock each instead of the file lock (`stage_lock`).
- Spark (`spark`, `spark:<master>` or a standalone cluster's `spark://host:port`): dlt
  merges raw into the DuckDB file and publishes the months it changed as Parquet
  (lake.py); SQLMesh's spark gateway (config.py) runs the model and its audits; the
  pipeline's own reads use the same session. Alone, Spark keeps its catalog in an
  embedded Derby metastore (one process at a time); with a shared Hive metastore service
  (FINANCIAL_ETL_SPARK_METASTORE) and SQLMesh's state in PostgreSQL
  (FINANCIAL_ETL_SQLMESH_STATE), several processes (the Dagster code server, its runs, a
  CLI run) share the warehouse, and the stages that must not interleave take advisory
  locks in the state's database.

The pipeline's own queries (checks, sensors, the export's read) are written once in
DuckDB's dialect, with `?` parameters, and sqlglot writes them for the engine, as SQLMesh
does for the model; the parameters stay parameters and each engine's driver binds the
values: DuckDB's own `?`, PostgreSQL's `$1` through ADBC (Arrow results), Spark's `?`
through `spark.sql(args=...)`.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from financial_etl.errors import ConfigError, WarehouseUnavailableError, redact_secrets

WAREHOUSE_ENV = "FINANCIAL_ETL_WAREHOUSE"
METASTORE_ENV = "FINANCIAL_ETL_SPARK_METASTORE"
STATE_ENV = "FINANCIAL_ETL_SQLMESH_STATE"
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
    spark_metastore: str | None = None  # a Hive metastore service's thrift:// URI (None: Derby)
    state_url: str | None = field(default=None, repr=False)  # SQLMesh's state in PostgreSQL, with its password

    @property
    def shared(self) -> bool:
        """Several processes may open it at once: PostgreSQL, or Spark with a shared catalog
        and state. Its stage locks are advisory locks on `lock_server`."""
        return self.engine == "postgres" or (self.engine == "spark" and self.spark_metastore is not None)

    @property
    def lock_server(self) -> str:
        """The PostgreSQL URL of a shared warehouse: the warehouse's own, or SQLMesh's state."""
        return (self.url if self.engine == "postgres" else self.state_url) or ""

    def describe(self) -> str:
        """Where the warehouse is, without its password: for logs, metadata and the UI."""
        if self.engine == "duckdb":
            return str(self.duckdb_path)
        if self.engine == "spark":
            catalog = f"metastore {self.spark_metastore}" if self.spark_metastore else "Derby metastore"
            return f"Spark {self.spark_master}, {catalog}, tables under {self.duckdb_path.parent / 'spark-warehouse'}"
        return redact_url(self.url or "")

    def redact(self, text: str) -> str:
        return redact_secrets(text, [urlsplit(url).password if url else None for url in (self.url, self.state_url)])

    def setting(self) -> str | None:
        """The FINANCIAL_ETL_WAREHOUSE value config.py reads (None: the DuckDB file)."""
        if self.engine == "postgres":
            return self.url
        if self.engine == "spark":
            return self.spark_master if self.spark_master.startswith("spark://") else f"spark:{self.spark_master}"
        return None

    def mesh_settings(self) -> dict[str, str | None]:
        """config.py's `build_config` arguments for this warehouse."""
        return {"warehouse": self.setting(), "metastore": self.spark_metastore, "state": self.state_url}

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A read connection (the pipeline writes through dlt and SQLMesh)."""
        if self.engine == "duckdb":
            import duckdb

            from financial_etl.warehouse.lock import held_elsewhere
            from financial_etl.warehouse.project import duckdb_settings

            try:
                con = duckdb.connect(
                    str(self.duckdb_path), read_only=True, config=duckdb_settings(self.duckdb_path, self.project_dir)
                )
            except duckdb.IOException as exc:  # another process holds the file
                raise held_elsewhere(exc) or WarehouseUnavailableError(f"{self.describe()}: {exc}") from None
            with con:
                yield DuckDBConnection(con, self)
        elif self.engine == "postgres":
            with _postgres(self, self.url or "") as con:
                yield con
        else:
            yield SparkConnection(spark_session(self), self)

    def check_servers(self) -> None:
        """WarehouseUnavailableError, naming the setting, when a server a shared warehouse
        needs does not answer: a Spark's master and metastore, then PostgreSQL's."""
        for name, url in ((WAREHOUSE_ENV, self.spark_master), (METASTORE_ENV, self.spark_metastore)):
            parts = urlsplit(url or "")
            if self.engine == "spark" and parts.scheme in ("spark", "thrift"):
                try:
                    socket.create_connection((parts.hostname, parts.port), timeout=10).close()
                except OSError as exc:
                    reason = exc.strerror or exc
                    raise WarehouseUnavailableError(f"cannot connect to {url} ({name}): {reason}") from None
        with _postgres(self, self.lock_server) as con:
            con.execute("SELECT 1")

    def stage_lock(self, name: str, log: Callable[[str], None] | None = None):
        """Held while a stage writes. DuckDB and a local Spark: the warehouse's file lock
        (one process at a time). Shared: an advisory lock per stage `name`, so two runs
        never merge into raw or run SQLMesh at the same time, and the rest overlaps (a
        shared Spark's DuckDB staging file is opened only under the "extract" lock)."""
        if self.shared:
            return _advisory_lock(self, name)
        from financial_etl.warehouse.lock import warehouse_lock

        return warehouse_lock(self.duckdb_path, log=log)

    def reader_lock(self, log: Callable[[str], None] | None = None):
        """Held while reading: DuckDB refuses readers beside a writer process, and Derby
        admits one process. A server or a shared metastore needs none."""
        return nullcontext() if self.shared else self.stage_lock("read", log)


class Result:
    """Rows of a query, read like a DuckDB result: fetchall(), fetchone(), df()."""

    def __init__(self, columns: Sequence[str], rows: list[tuple]):
        self.columns, self.rows = list(columns), rows

    @classmethod
    def of_arrow(cls, table: pa.Table) -> Result:
        return cls(table.column_names, list(zip(*(column.to_pylist() for column in table.columns), strict=True)))

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
    """ADBC's cursor: libpq binds the `$n` parameters, and rows arrive as Arrow."""

    CURSOR = "financial_etl_read"

    def execute(self, text, params=()):
        cur = self.con.cursor()
        try:
            self._run(cur, write_sql(text, "postgres", numbered=True), params)
            return Result.of_arrow(_doubles(cur.fetch_arrow_table())) if cur.description else Result([], [])
        finally:
            cur.close()

    def arrow_batches(self, text, params, batch_rows):
        # A server-side cursor streams the rows: with parameters bound, libpq would hold the
        # whole result in memory. FETCH cannot go through COPY, ADBC's default for a query.
        from adbc_driver_postgresql import StatementOptions

        transaction = self.con.adbc_connection  # the cursor lives in a transaction
        transaction.set_autocommit(False)
        cur = self.con.cursor(adbc_stmt_kwargs={StatementOptions.USE_COPY.value: "false"})
        try:
            self._run(
                cur, f"DECLARE {self.CURSOR} NO SCROLL CURSOR FOR {write_sql(text, 'postgres', numbered=True)}", params
            )
            schema = None
            while True:
                cur.execute(f"FETCH FORWARD {int(batch_rows)} FROM {self.CURSOR}")
                table = _doubles(cur.fetch_arrow_table())
                if schema is None:
                    schema = table.schema
                    yield pa.RecordBatch.from_pylist([], schema=schema)
                if not table.num_rows:
                    break
                yield from table.to_batches()
        finally:
            cur.close()
            transaction.rollback()
            transaction.set_autocommit(True)

    @staticmethod
    def _run(cur, sql: str, params: Sequence[Any]) -> None:
        """Routed by SQLSTATE: undefined_table (42P01), invalid_schema_name (3F000)."""
        import adbc_driver_manager

        try:
            cur.execute(sql, list(params) or None)
        except adbc_driver_manager.ProgrammingError as exc:
            if exc.sqlstate in ("42P01", "3F000"):
                raise MissingTable(str(exc)) from None
            raise


class SparkConnection(Connection):
    def execute(self, text, params=()):
        frame = self._frame(text, params)
        return Result(frame.columns, [tuple(row) for row in frame.collect()])

    def arrow_batches(self, text, params, batch_rows):
        from pyspark.sql.pandas.types import to_arrow_schema

        frame = self._frame(text, params)
        schema = to_arrow_schema(frame.schema)
        yield pa.RecordBatch.from_pylist([], schema=schema)
        table = pa.Table.from_pandas(frame.toPandas(), schema=schema, preserve_index=False)
        yield from table.to_batches(batch_rows)

    def _frame(self, text, params):
        from pyspark.errors import AnalysisException

        try:
            # Positional: in the project's session Spark 3.5.5 fails to parse a named `:p1`
            # before the column `date`. Spark's dialect keeps parameters in the text's order.
            return self.con.sql(write_sql(text, "spark"), args=list(params) or None)
        except AnalysisException as exc:
            if exc.getErrorClass() in ("TABLE_OR_VIEW_NOT_FOUND", "SCHEMA_NOT_FOUND"):
                raise MissingTable(str(exc)) from None
            raise


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


def write_sql(text: str, dialect: str, numbered: bool = False) -> str:
    """`text` (DuckDB's dialect, `?` parameters) written for `dialect` by sqlglot, each
    parameter kept a parameter, never a value: when `numbered`, parameter n (from 1, in the
    order of `text`) as `$n`, PostgreSQL's own marker, right wherever the dialect moves it;
    else as the dialect's positional marker (`?`, psycopg2's `%s`), in the order the dialect
    writes them (SQL Server would write a LIMIT first, as TOP: none of its queries has one)."""
    if not numbered:
        return sqlglot.transpile(text, read="duckdb", write=dialect)[0]
    tree = sqlglot.parse_one(_numbered(text), read="duckdb")
    return tree.transform(
        lambda node: exp.Parameter(this=exp.var(node.name)) if isinstance(node, exp.Placeholder) else node
    ).sql(dialect=dialect)


def _numbered(text: str) -> str:
    """`text` with its `?` parameters (outside strings) written `$1`, `$2`...: DuckDB's own
    numbered parameters, because sqlglot's tree keeps no order of anonymous ones."""
    marks = [t for t in sqlglot.tokenize(text, read="duckdb") if t.token_type == TokenType.PLACEHOLDER]
    for number, mark in reversed(list(enumerate(marks, 1))):
        text = f"{text[: mark.start]}${number}{text[mark.end + 1 :]}"
    return text


def _doubles(table: pa.Table) -> pa.Table:
    """PostgreSQL's numeric arrives as its text (ADBC's opaque type): the pipeline's figures
    are doubles."""
    for i, column in enumerate(table.schema):
        if isinstance(column.type, pa.OpaqueType) and column.type.type_name == "numeric":
            text = pa.chunked_array([chunk.storage for chunk in table.column(i).chunks], type=pa.string())
            table = table.set_column(i, column.name, text.cast(pa.float64()))
    return table


def _libpq_uri(url: str) -> str:
    """The warehouse URL for libpq, with a 10 s connect timeout unless it sets its own."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    if "connect_timeout" not in dict(query):
        query.append(("connect_timeout", "10"))
    return urlunsplit(parts._replace(query=urlencode(query)))


@contextmanager
def _advisory_lock(warehouse: Warehouse, name: str) -> Iterator[None]:
    """PostgreSQL's session-level advisory lock `name` on the warehouse's lock server."""
    key = int.from_bytes(hashlib.sha256(f"financial_etl:{name}".encode()).digest()[:8], "big", signed=True)
    with _postgres(warehouse, warehouse.lock_server) as con:
        con.execute("SELECT pg_advisory_lock(?)", [key])
        try:
            yield
        finally:
            con.execute("SELECT pg_advisory_unlock(?)", [key])


@contextmanager
def _postgres(warehouse: Warehouse, url: str) -> Iterator[PostgresConnection]:
    import adbc_driver_manager
    import adbc_driver_postgresql.dbapi

    try:
        con = adbc_driver_postgresql.dbapi.connect(_libpq_uri(url), autocommit=True)
    except adbc_driver_manager.OperationalError as exc:
        what = (
            f"the warehouse {redact_url(url)} ({WAREHOUSE_ENV})"
            if url == warehouse.url
            else f"SQLMesh's state {redact_url(url)} ({STATE_ENV})"
        )
        raise WarehouseUnavailableError(f"cannot connect to {what}: {warehouse.redact(str(exc)).strip()}") from None
    try:
        yield PostgresConnection(con, warehouse)
    finally:
        con.close()


def spark_session(warehouse: Warehouse):
    """The process's Spark session on this warehouse, with the settings SQLMesh's gateway uses."""
    from financial_etl.warehouse.project import project_config_module

    config = project_config_module(str(warehouse.project_dir))
    return config.spark_session(
        config.spark_conf(str(warehouse.duckdb_path), warehouse.spark_master, warehouse.spark_metastore)
    )


def redact_url(url: str) -> str:
    """`url` with its password as ***; the rest as written (a bad port included)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    _, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def parse_warehouse(
    value: str | None,
    duckdb_path: Path,
    project_dir: Path | None = None,
    metastore: str | None = None,
    state: str | None = None,
) -> Warehouse:
    """FINANCIAL_ETL_WAREHOUSE (with a Spark warehouse, FINANCIAL_ETL_SPARK_METASTORE and
    FINANCIAL_ETL_SQLMESH_STATE) → the warehouse; a ConfigError names a bad value (redacted)."""
    value = (value or "").strip()
    engine = "spark" if value == "spark" or value.startswith("spark:") else None
    for name, given in ((METASTORE_ENV, metastore), (STATE_ENV, state)):
        if given is not None and engine != "spark":
            raise ConfigError(f"{name} is read only with a Spark warehouse ({WAREHOUSE_ENV}=spark://host:port)")
    if not value or value.lower() == "duckdb":
        return Warehouse("duckdb", duckdb_path, project_dir=project_dir)
    if engine == "spark":
        master = value if value.startswith("spark://") else value.partition(":")[2] or SPARK_MASTER
        if master.startswith("spark://"):
            _check_url(WAREHOUSE_ENV, master, ("spark",), "spark://host:port", database=False)
        if metastore is not None:
            _check_url(METASTORE_ENV, metastore, ("thrift",), "thrift://host:port", database=False)
            if state is None:
                raise ConfigError(
                    f"{METASTORE_ENV} shares Spark's catalog between processes; SQLMesh's state must be shared "
                    f"too: set {STATE_ENV}=postgresql://user:password@host:port/database"
                )
        if state is not None:
            _check_url(STATE_ENV, state, ("postgresql", "postgres"), "postgresql://user:password@host:port/database")
        return Warehouse(
            "spark",
            duckdb_path,
            spark_master=master,
            project_dir=project_dir,
            spark_metastore=metastore,
            state_url=state,
        )
    if urlsplit(value).scheme in ("postgresql", "postgres"):
        _check_url(WAREHOUSE_ENV, value, ("postgresql", "postgres"), "postgresql://user:password@host:port/database")
        return Warehouse("postgres", duckdb_path, url=value, project_dir=project_dir)
    raise ConfigError(
        f"{WAREHOUSE_ENV}={redact_url(value)!r} is not a warehouse: use duckdb (the default), "
        "spark[:<master>], spark://host:port or postgresql://user:password@host:port/database"
    )


def _check_url(name: str, value: str, schemes: tuple[str, ...], form: str, database: bool = True) -> None:
    parts = urlsplit(value)
    wanted = [("host", parts.hostname)]
    if database:
        wanted += [("user", parts.username), ("database", parts.path.strip("/"))]
    problems = [what for what, ok in wanted if not ok]
    if parts.scheme not in schemes:
        problems.insert(0, f"the scheme {schemes[0]}://")
    try:
        port = parts.port  # urllib checks the port only when it is read
    except ValueError:
        port = -1
    if port == -1 or (not database and port is None):
        problems.append("a numeric port")
    if problems:
        raise ConfigError(f"{name}={redact_url(value)!r} lacks {', '.join(problems)}: use {form}")
