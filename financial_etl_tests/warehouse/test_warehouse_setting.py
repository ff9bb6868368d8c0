"""A bad FINANCIAL_ETL_WAREHOUSE fails before anything runs, says what was wrong, and
never shows the password: a value that is no warehouse (exit 2), a PostgreSQL nobody
listens on, or one that refuses the login (exit 4)."""

from __future__ import annotations

import pytest

from financial_etl.cli.main import main
from financial_etl.errors import EXIT_CONFIG, EXIT_CONNECTION

PASSWORD = "s3cret-Warehouse-pw"


def run(clean_env, workdir, capsys, value: str) -> tuple[int, str]:
    clean_env.setenv("FINANCIAL_ETL_WAREHOUSE", value)
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    clean_env.setenv("DAGSTER_HOME", str(workdir / "home"))
    (workdir / "home").mkdir()
    code = main(["run", "--end", "2024-01-05"])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    "value, says",
    [
        (f"mysql://etl:{PASSWORD}@db:3306/markets", "is not a warehouse"),
        (f"postgresql://etl:{PASSWORD}@db.internal/", "lacks database"),
        (f"postgresql://etl:{PASSWORD}@db.internal:port/markets", "lacks a numeric port"),
    ],
)
def test_a_value_that_is_no_warehouse_is_a_configuration_error(workdir, clean_env, capsys, value, says):
    code, out = run(clean_env, workdir, capsys, value)
    assert code == EXIT_CONFIG, out
    assert "FINANCIAL_ETL_WAREHOUSE" in out and says in out and "etl:***@db" in out
    assert PASSWORD not in out
    assert not (workdir / "data").exists() or not any((workdir / "data").iterdir())  # nothing written


def test_a_postgresql_nobody_listens_on_is_a_connection_error(workdir, clean_env, capsys):
    code, out = run(clean_env, workdir, capsys, f"postgresql://etl:{PASSWORD}@127.0.0.1:1/markets")
    assert code == EXIT_CONNECTION, out
    assert "cannot connect to the warehouse postgresql://etl:***@127.0.0.1:1/markets" in out
    assert PASSWORD not in out


@pytest.mark.slow
def test_a_postgresql_that_refuses_the_login_is_a_connection_error(workdir, clean_env, capsys, postgres):
    url = f"postgresql://{postgres.user}:{PASSWORD}@127.0.0.1:{postgres.port}/{postgres.database}"
    code, out = run(clean_env, workdir, capsys, url)
    assert code == EXIT_CONNECTION, out
    assert f'password authentication failed for user "{postgres.user}"' in out
    assert PASSWORD not in out


STATE = f"postgresql://etl:{PASSWORD}@127.0.0.1:1/sqlmesh_state"


@pytest.mark.parametrize(
    "settings, says",
    [
        (
            {"FINANCIAL_ETL_WAREHOUSE": "spark://127.0.0.1"},
            "FINANCIAL_ETL_WAREHOUSE='spark://127.0.0.1' lacks a numeric port",
        ),
        (
            {"FINANCIAL_ETL_WAREHOUSE": "spark://127.0.0.1:7077", "FINANCIAL_ETL_SPARK_METASTORE": "127.0.0.1:9083"},
            "FINANCIAL_ETL_SPARK_METASTORE='127.0.0.1:9083' lacks the scheme thrift://",
        ),
        (
            {"FINANCIAL_ETL_WAREHOUSE": "spark://127.0.0.1:7077", "FINANCIAL_ETL_SPARK_METASTORE": "thrift://h:9083"},
            "SQLMesh's state must be shared too: set FINANCIAL_ETL_SQLMESH_STATE",
        ),
        ({"FINANCIAL_ETL_SQLMESH_STATE": STATE}, "FINANCIAL_ETL_SQLMESH_STATE is read only with a Spark warehouse"),
        (
            {"FINANCIAL_ETL_WAREHOUSE": "spark://127.0.0.1:7077", "FINANCIAL_ETL_SQLMESH_STATE": "mysql://etl:x@h/db"},
            "FINANCIAL_ETL_SQLMESH_STATE='mysql://etl:***@h/db' lacks the scheme postgresql://",
        ),
    ],
)
def test_a_spark_deployment_setting_that_is_wrong_is_a_configuration_error(workdir, clean_env, capsys, settings, says):
    for name, value in settings.items():
        clean_env.setenv(name, value)
    code, out = run(clean_env, workdir, capsys, settings.get("FINANCIAL_ETL_WAREHOUSE", "duckdb"))
    assert code == EXIT_CONFIG, out
    assert says in out
    assert PASSWORD not in out


def test_a_cluster_whose_servers_do_not_answer_is_a_connection_error_naming_the_setting(workdir, clean_env, capsys):
    """Checked before anything runs: the master, then the metastore, then SQLMesh's state."""
    clean_env.setenv("FINANCIAL_ETL_SPARK_METASTORE", "thrift://127.0.0.1:1")
    clean_env.setenv("FINANCIAL_ETL_SQLMESH_STATE", STATE)
    code, out = run(clean_env, workdir, capsys, "spark://127.0.0.1:1")
    assert code == EXIT_CONNECTION, out
    assert "cannot connect to spark://127.0.0.1:1 (FINANCIAL_ETL_WAREHOUSE)" in out
    assert PASSWORD not in out


def test_the_warehouse_setting_chooses_the_spark_master_the_catalog_and_the_state(tmp_path):
    from financial_etl.settings import SQLMESH_PROJECT_DIR
    from financial_etl.transform.sqlmesh_adapter import mesh_config
    from financial_etl.warehouse.engines import parse_warehouse

    db = tmp_path / "data" / "financial_etl.duckdb"
    local = parse_warehouse("spark:local[4]", db, SQLMESH_PROJECT_DIR)
    cluster = parse_warehouse("spark://10.0.0.5:7077", db, SQLMESH_PROJECT_DIR, "thrift://10.0.0.6:9083", STATE)
    assert (local.spark_master, local.shared) == ("local[4]", False)
    assert (cluster.spark_master, cluster.shared) == ("spark://10.0.0.5:7077", True)
    assert PASSWORD not in repr(cluster) and PASSWORD not in cluster.describe()

    def gateway(warehouse):
        config = mesh_config(str(SQLMESH_PROJECT_DIR), str(db), "2024-01-02", **warehouse.mesh_settings())
        return config.gateways["warehouse"]

    spark = gateway(cluster).connection.config
    assert spark["spark.master"] == "spark://10.0.0.5:7077"
    assert spark["spark.hadoop.hive.metastore.uris"] == "thrift://10.0.0.6:9083"
    assert not any("derby" in value.lower() for value in spark.values())
    state = gateway(cluster).state_connection
    assert (state.type_, state.host, state.port, state.database) == ("postgres", "127.0.0.1", 1, "sqlmesh_state")
    local_gateway = gateway(local)
    assert local_gateway.connection.config["spark.master"] == "local[4]"
    assert "derby" in local_gateway.connection.config["spark.hadoop.javax.jdo.option.ConnectionURL"]
    assert local_gateway.state_connection.type_ == "duckdb"


@pytest.mark.slow
def test_a_process_that_moves_to_another_spark_warehouse_reads_and_writes_that_one(tmp_path):
    """Spark keeps one session per process and `getOrCreate` hands it back whatever it was
    built for: a second warehouse's reads and SQLMesh's writes must not reach the first's."""
    from financial_etl.settings import SQLMESH_PROJECT_DIR
    from financial_etl.transform.sqlmesh_adapter import mesh_config
    from financial_etl.warehouse.engines import parse_warehouse, spark_session
    from financial_etl.warehouse.project import project_config_module

    first, second = (
        parse_warehouse("spark:local[1]", tmp_path / name / "financial_etl.duckdb", SQLMESH_PROJECT_DIR)
        for name in ("first", "second")
    )
    spark_session(first).sql("CREATE DATABASE raw")
    with second.connect() as con:
        assert [row.namespace for row in con.con.sql("SHOW DATABASES").collect()] == ["default"]
        con.con.sql("CREATE DATABASE raw")
    config = mesh_config(str(SQLMESH_PROJECT_DIR), str(first.duckdb_path), "2024-01-02", **first.mesh_settings())
    adapter = config.gateways["warehouse"].connection.create_engine_adapter()
    try:
        adapter.execute("CREATE TABLE raw.t (x INT) USING parquet")
    finally:
        adapter.close()
    assert (tmp_path / "first" / "spark-warehouse" / "raw.db" / "t").is_dir()
    assert not (tmp_path / "second" / "spark-warehouse" / "raw.db" / "t").exists()
    assert spark_session(second).catalog.listTables("raw") == []

    # On to a metastore service: the JVM still holds the embedded metastore's settings it was
    # launched with, and a second call must hand back the same, running session.
    config = project_config_module(str(SQLMESH_PROJECT_DIR))
    shared = config.spark_conf(str(first.duckdb_path), "local[1]", "thrift://127.0.0.1:9")
    session = config.spark_session(shared)
    assert config.spark_session(shared) is session
    assert session.range(3).count() == 3
