"""The SQLMesh project's configuration: the one home of its gateway, dialect and variables.

It stands on its own: `sqlmesh -p sqlmesh_project plan` reads the warehouse and the start
date from FINANCIAL_ETL_WAREHOUSE, FINANCIAL_ETL_DUCKDB_PATH and FINANCIAL_ETL_START_DATE
(the orchestrator's defaults otherwise). The orchestrator loads this file and calls
`build_config` with its validated settings, so both see the same warehouse, start date and
look-back.

The warehouse (FINANCIAL_ETL_WAREHOUSE) picks the gateway; the model is written once in
DuckDB's dialect and SQLMesh transpiles it:
- unset or `duckdb`: the DuckDB file, SQLMesh's state in it;
- `postgresql://user:password@host:port/database`: PostgreSQL, SQLMesh's state in it
  (schema `sqlmesh`);
- `spark` or `spark:<master>` (default `local[2]`): Spark SQL with Parquet tables under
  `spark-warehouse/` beside the DuckDB path, their catalog in an embedded Derby metastore;
  SQLMesh's state in `sqlmesh-state.duckdb` there (SQLMesh does not keep state in Spark).
- `spark://host:port`, a standalone cluster's master, the same; with
  FINANCIAL_ETL_SPARK_METASTORE=thrift://host:port the catalog is that shared Hive
  metastore service, and FINANCIAL_ETL_SQLMESH_STATE=postgresql://... holds SQLMesh's
  state, so several processes can run on the warehouse at once.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlglot import exp
from sqlmesh.core.config import (
    Config,
    DuckDBConnectionConfig,
    GatewayConfig,
    ModelDefaultsConfig,
    PostgresConnectionConfig,
    SparkConnectionConfig,
)
from sqlmesh.core.engine_adapter import DuckDBEngineAdapter, SparkEngineAdapter
from sqlmesh.utils import columns_to_types_all_known
from sqlmesh.utils.date import make_inclusive

GATEWAY = "warehouse"
SPARK_MASTER = "local[2]"
SPARK_CLUSTER_CORES = "2"  # each application's cores on a standalone cluster
# Every indicator reads at most the last 50 trading rows up to its own (sma_50_day): a
# batch reads that many rows before its first day, and a re-loaded day changes the mart
# up to that many rows later. The model reads it as @lookback_rows.
VARIABLES = {"lookback_rows": 50}
# A table partitioned by this column holds in it the first day of its time column's month:
# the mart, on Spark (ProjectSparkEngineAdapter).
MONTH_PARTITION = "trade_month"
# Built from spark/NioLocalFileSystem.java (see docs/development.md).
HADOOP_JAR = Path(__file__).resolve().parent / "spark" / "financial-etl-hadoop.jar"
DEFAULT_DUCKDB_PATH = Path(__file__).resolve().parent.parent / "data" / "financial_etl.duckdb"
DEFAULT_START = "2020-01-01"
# DuckDB's memory per database file a process opens: its buffer pool caches what queries
# read up to this, and sorts, joins and windows spill beyond it to a folder beside the
# file. DuckDB's default, 80% of the machine, let a daily run keep GBs of cached history
# (docs/scaling-out.md, "Memory").
DUCKDB_MEMORY_LIMIT = "512MB"


def duckdb_settings(database: str) -> dict[str, str]:
    """How every DuckDB connection of the project opens `database` (the warehouse,
    SQLMesh's state, the export stand-in): its memory limit and where it spills."""
    return {"memory_limit": DUCKDB_MEMORY_LIMIT, "temp_directory": f"{database}.tmp"}


def spark_conf(duckdb_path: str, master: str = SPARK_MASTER, metastore: str | None = None) -> dict[str, str]:
    """Spark's session settings: Parquet tables under the data folder, their catalog in the
    Hive metastore service at `metastore` (thrift://host:port), or else in an embedded
    Derby metastore beside them (one process at a time: see docs/scaling-out.md)."""
    folder = Path(duckdb_path).parent
    if metastore:
        catalog = {
            "spark.hadoop.hive.metastore.uris": metastore,
            # Other processes rewrite the tables' files: a long-lived session (the code
            # server's, for sensors) must list them at each query, not from its cache.
            "spark.sql.hive.filesourcePartitionFileCacheSize": "0",
            "spark.sql.filesourceTableRelationCacheSize": "0",
        }
    else:
        derby = folder / "spark-metastore"
        database = derby / "metastore_db"
        catalog = {
            # Empty, not absent: a JVM keeps the settings it was launched with, and a session
            # started in it later (spark_session) would still reach a former metastore service.
            "spark.hadoop.hive.metastore.uris": "",
            "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={database};create=true",
            "spark.driver.extraJavaOptions": f"-Dderby.system.home={derby}",
        }
    if master.startswith("spark://"):
        # A standalone master gives an application every free core unless capped: the code
        # server's idle session would starve the runs (and a CLI run) beside it.
        catalog |= {"spark.cores.max": SPARK_CLUSTER_CORES, "spark.executor.memory": "1g"}
    return {
        "spark.master": master,
        "spark.app.name": "financial_etl",
        "spark.sql.warehouse.dir": str(folder / "spark-warehouse"),
        "spark.sql.catalogImplementation": "hive",
        **catalog,
        "spark.sql.legacy.createHiveTableByDefault": "false",
        # Spark's default, relied on: raw's partitions sit at their own folders, which only the
        # metastore knows (financial_etl/warehouse/lake.py).
        "spark.sql.hive.manageFilesourcePartitions": "true",
        # Local folders without Hadoop's .crc file beside each Parquet file, and without a
        # chmod process per folder created (spark/NioLocalFileSystem.java): raw and the mart
        # write a folder per month. On the classpath at launch, not in `spark.jars`, which
        # Spark reads through this very file system.
        "spark.driver.extraClassPath": str(HADOOP_JAR),
        "spark.executor.extraClassPath": str(HADOOP_JAR),
        "spark.hadoop.fs.file.impl": "financial_etl.hadoop.NioLocalFileSystem",
        # The metastore filtering the mart's date partitions failed (a Hive MetaException, on
        # Derby, in the one-day audits after 2,500 days): fetch them all and filter in Spark.
        "spark.sql.hive.metastorePartitionPruningFallbackOnException": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "4",
        # Adaptive execution runs each stage as a job of its own, and merged the model's
        # last shuffle (its windows over a one-day run's 25,500 rows at 500 tickers) into
        # one task on one of 2 cores. The cluster's first one-day run after a full refresh at
        # 500 x 2,500: 8.1 s without it, 9.7 s with it; the full refresh 52 s and 54 s.
        "spark.sql.adaptive.enabled": "false",
        # Each new plan's generated code is compiled first, and the model's one-day plan had
        # 47 stages of a few hundred rows: on the cluster its run took 10.3 s without, against
        # 11.3 s with (means of 3 and 4 runs); the full refresh was no slower.
        "spark.sql.codegen.wholeStage": "false",
        # Listing a table's folders as a Spark job (a task per folder: 7.6 s for 1,000 on
        # local[2]) after every write cost more than the driver listing them.
        "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000",
        "spark.ui.enabled": "false",
        "spark.log.level": "ERROR",
        "spark.ui.showConsoleProgress": "false",
    }


# The DuckDB cursor of each open adapter of this process, for interrupt_queries.
_CURSORS: dict[int, object] = {}


def interrupt_queries() -> None:
    """Stop the statements SQLMesh's DuckDB adapters are running, from any thread: a stop
    signal reaches only the main thread, and dagster-sqlmesh runs SQLMesh in another."""
    for cursor in list(_CURSORS.values()):
        cursor.interrupt()  # type: ignore[attr-defined]


class TransactionalDuckDBEngineAdapter(DuckDBEngineAdapter):
    """SQLMesh's DuckDB adapter, with a recomputed range deleted and inserted in one
    transaction: SQLMesh leaves DuckDB's transactions off and commits each statement, so a
    run killed between the two left the range empty (the whole mart, for a full re-run).
    Its statements can be interrupted from another thread (interrupt_queries)."""

    def execute(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _CURSORS[id(self)] = self.cursor
        return super().execute(*args, **kwargs)

    def close(self):  # type: ignore[no-untyped-def]
        _CURSORS.pop(id(self), None)
        return super().close()

    def insert_overwrite_by_time_partition(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.execute("BEGIN TRANSACTION")
        try:
            super().insert_overwrite_by_time_partition(*args, **kwargs)
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")


# What makes a Spark session this warehouse's: where it runs and its catalog (an embedded
# one lives in the warehouse's folder). Spark rewrites spark.sql.warehouse.dir as a URL.
SPARK_SESSION_IDENTITY = (
    "spark.master",
    "spark.hadoop.hive.metastore.uris",
    "spark.hadoop.javax.jdo.option.ConnectionURL",
)


def spark_session(conf: dict[str, str]):
    """The process's Spark session with `conf`. `getOrCreate` hands back whatever session
    the process already has; one of another warehouse (another master, folder or catalog)
    would read and write that warehouse's tables, so it is stopped and a new one started."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.enableHiveSupport()
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    running = session.sparkContext.getConf()
    # Only what `conf` sets: a JVM keeps the settings it was launched with in every later
    # session's (a former embedded metastore's URL, under a metastore service's URI).
    if any(key in conf and running.get(key) != conf[key] for key in SPARK_SESSION_IDENTITY):
        session.stop()
        session = builder.getOrCreate()
    return session


class ProjectSparkEngineAdapter(SparkEngineAdapter):
    """Spark's adapter for a table partitioned by the month of its time column (the mart: a
    folder per `trade_month`, MONTH_PARTITION). SQLMesh's dynamic overwrite replaces every
    partition its rows reach, so an interval covering part of a month (a daily run) would
    drop the month's other days: they are read back and written with the interval's rows.
    Months, not days: each audit opens every file of its range, and 2,500 daily files took
    1.4 s a read against 0.2 s for 120 monthly ones; a daily run rewrites one month."""

    def insert_overwrite_by_time_partition(
        self,
        table_name: Any,
        query_or_df: Any,
        start: Any,
        end: Any,
        time_formatter: Any,
        time_column: Any,
        target_columns_to_types: dict | None = None,
        source_columns: list | None = None,
        **kwargs: Any,
    ) -> None:
        column = time_column if isinstance(time_column, (str, exp.Expr)) else time_column.column
        column = exp.to_column(column) if isinstance(column, str) else column
        if not isinstance(query_or_df, exp.Query) or self._partition_columns(table_name) != [MONTH_PARTITION]:
            return super().insert_overwrite_by_time_partition(
                table_name,
                query_or_df,
                start,
                end,
                time_formatter,
                time_column,
                target_columns_to_types,
                source_columns,
                **kwargs,
            )
        queries, types = self._get_source_queries_and_columns_to_types(
            query_or_df, target_columns_to_types, target_table=table_name, source_columns=source_columns
        )
        if not types or not columns_to_types_all_known(types):
            types = self.columns(table_name)
        low, high = (time_formatter(moment, types) for moment in make_inclusive(start, end, self.dialect))
        interval = exp.Between(this=column.copy(), low=low, high=high)
        months = exp.Between(this=exp.column(MONTH_PARTITION), low=_month_of(low), high=_month_of(high))
        names = [exp.column(name, quoted=True) for name in types]
        with queries[0] as query:  # a query, not a DataFrame: one source query
            rows = self._order_projections_and_filter(query, types, where=interval)
            others = exp.select(*names).from_(exp.to_table(table_name)).where(months).where(exp.not_(interval.copy()))
            batch = exp.union(rows, others, distinct=False)
            month = _one_month(low, high)
            if month:
                self._overwrite_month(table_name, batch, month, types)
                return
            spread = exp.select(*names).from_(batch.subquery("batch"))
            # A file per month, not a file per month per task.
            spread.set("distribute", exp.Distribute(expressions=[exp.column(MONTH_PARTITION, quoted=True)]))
            self.execute(exp.insert(spread, table_name, columns=list(types), overwrite=True), track_rows_processed=True)

    def _overwrite_month(self, table_name: Any, batch: exp.Query, month: str, types: dict) -> None:
        """The month's rows into its partition by name: the dynamic overwrite lists every
        partition of the table from the metastore first, and refreshes them after."""
        table = exp.to_table(table_name)
        table.set(
            "partition",
            exp.Partition(expressions=[exp.EQ(this=exp.column(MONTH_PARTITION), expression=exp.Literal.string(month))]),
        )
        view = f"financial_etl_month_{uuid.uuid4().hex}"
        # The batch reads the table itself (the model's carried state, the month's other
        # days), and Spark overwrites a named partition only from a query that does not:
        # the rows are computed first, then written.
        frame = self._fetch_native_df(batch).localCheckpoint()
        frame.coalesce(1).createOrReplaceTempView(view)  # one file for the month
        try:
            columns = [exp.column(name, quoted=True) for name in types if name != MONTH_PARTITION]
            self.execute(exp.insert(exp.select(*columns).from_(view), table, overwrite=True), track_rows_processed=True)
        finally:
            self.spark.catalog.dropTempView(view)
            frame.unpersist()

    def _partition_columns(self, table_name: Any) -> list[str]:
        name = exp.to_table(table_name).sql(dialect=self.dialect)
        return [column.name for column in self.spark.catalog.listColumns(name) if column.isPartition]


def _one_month(low: exp.Expr, high: exp.Expr) -> str | None:
    """The month (its first day) when both bounds are dates of that month, as the model's
    time formatter writes them (a cast of a 'YYYY-MM-DD' string)."""
    days = [b.this.name[:10] for b in (low, high) if isinstance(b, exp.Cast) and b.this.is_string]
    if len(days) == 2 and days[0][:7] == days[1][:7]:
        return f"{days[0][:7]}-01"
    return None


def _month_of(day: exp.Expr) -> exp.Expr:
    return exp.cast(exp.DateTrunc(this=day.copy(), unit=exp.var("MONTH")), "DATE")


class ProjectSparkConnectionConfig(SparkConnectionConfig):
    """SQLMesh's Spark connection on this warehouse's session (`spark_session`), not on
    whichever one the process started first, through `ProjectSparkEngineAdapter`."""

    @property
    def _engine_adapter(self) -> type[SparkEngineAdapter]:
        return ProjectSparkEngineAdapter

    @property
    def _static_connection_kwargs(self) -> dict[str, object]:
        return {"spark": spark_session({key: str(value) for key, value in self.config.items()})}


class TransactionalDuckDBConnectionConfig(DuckDBConnectionConfig):
    """DuckDB's connection, through the transactional adapter. One task at a time: DuckDB
    runs one writer per file, and concurrent transactions on one table would conflict."""

    concurrent_tasks: int = 1

    @property
    def _engine_adapter(self) -> type[DuckDBEngineAdapter]:
        return TransactionalDuckDBEngineAdapter


def gateway(
    duckdb_path: str, warehouse: str | None = None, metastore: str | None = None, state: str | None = None
) -> GatewayConfig:
    """The gateway for FINANCIAL_ETL_WAREHOUSE (see the module's docstring); `metastore` and
    `state` are FINANCIAL_ETL_SPARK_METASTORE and FINANCIAL_ETL_SQLMESH_STATE."""
    if not warehouse or warehouse == "duckdb":
        # State in the warehouse file itself: a deleted warehouse leaves no stale intervals.
        return GatewayConfig(
            connection=TransactionalDuckDBConnectionConfig(
                database=duckdb_path, connector_config=duckdb_settings(duckdb_path)
            )
        )
    if warehouse == "spark" or warehouse.startswith("spark:"):
        master = warehouse if warehouse.startswith("spark://") else warehouse.partition(":")[2] or SPARK_MASTER
        if state:
            state_connection = postgres(state)
        else:
            state_file = str(Path(duckdb_path).parent / "sqlmesh-state.duckdb")
            state_connection = DuckDBConnectionConfig(database=state_file, connector_config=duckdb_settings(state_file))
        return GatewayConfig(
            connection=ProjectSparkConnectionConfig(config=spark_conf(duckdb_path, master, metastore)),
            state_connection=state_connection,
        )
    if urlsplit(warehouse).scheme in ("postgresql", "postgres"):
        return GatewayConfig(connection=postgres(warehouse))
    raise ValueError(
        "FINANCIAL_ETL_WAREHOUSE must be duckdb, spark[:<master>] or postgresql://user:password@host:port/database"
    )


def postgres(url: str) -> PostgresConnectionConfig:
    parts = urlsplit(url)
    return PostgresConnectionConfig(
        host=parts.hostname or "localhost",
        port=parts.port or 5432,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/"),
    )


def build_config(
    duckdb_path: str,
    start_date: str,
    unit_tests: bool = True,
    warehouse: str | None = None,
    metastore: str | None = None,
    state: str | None = None,
) -> Config:
    """`unit_tests=False` leaves tests/ unread (a pipeline run skips them; parsing their YAML
    was a quarter of a definitions load). SQLMesh's unit tests always run on DuckDB."""
    return Config(
        gateways={GATEWAY: gateway(duckdb_path, warehouse, metastore, state)},
        default_gateway=GATEWAY,
        model_defaults=ModelDefaultsConfig(dialect="duckdb", start=start_date),
        variables=VARIABLES,
        # No network in CI or on many servers; never phone home.
        disable_anonymized_analytics=True,
        ignore_patterns=[*Config.model_fields["ignore_patterns"].default, *([] if unit_tests else ["tests/*"])],
    )


config = build_config(
    os.environ.get("FINANCIAL_ETL_DUCKDB_PATH") or str(DEFAULT_DUCKDB_PATH),
    os.environ.get("FINANCIAL_ETL_START_DATE") or DEFAULT_START,
    warehouse=os.environ.get("FINANCIAL_ETL_WAREHOUSE"),
    metastore=os.environ.get("FINANCIAL_ETL_SPARK_METASTORE"),
    state=os.environ.get("FINANCIAL_ETL_SQLMESH_STATE"),
)
