"""Spark writes local folders through the project's Hadoop file system
(sqlmesh_project/spark/NioLocalFileSystem.java), which sets permissions in the JVM instead of
running a chmod process per folder; the committed jar is built from that source."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from financial_etl.settings import SQLMESH_PROJECT_DIR

REPO = SQLMESH_PROJECT_DIR.parent
JAR = SQLMESH_PROJECT_DIR / "spark" / "financial-etl-hadoop.jar"
CLASS = "financial_etl.hadoop.NioLocalFileSystem"


def disassembled(jar: Path) -> str:
    return subprocess.run(
        ["javap", "-c", "-p", "-constants", "-cp", str(jar), CLASS], check=True, capture_output=True, text=True
    ).stdout


def test_the_committed_jar_is_built_from_its_source(tmp_path):
    built = tmp_path / "built.jar"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build-hadoop-jar"), str(built)], check=True)
    assert disassembled(built) == disassembled(JAR), "rebuild it: scripts/build-hadoop-jar"


@pytest.mark.slow
def test_spark_creates_folders_and_sets_permissions_through_the_project_file_system(tmp_path):
    from financial_etl.warehouse.engines import parse_warehouse, spark_session

    warehouse = parse_warehouse("spark:local[1]", tmp_path / "data" / "financial_etl.duckdb", SQLMESH_PROJECT_DIR)
    spark = spark_session(warehouse)
    jvm = spark.sparkContext._jvm
    hadoop = jvm.org.apache.hadoop
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    fs = hadoop.fs.FileSystem.get(jvm.java.net.URI("file:///"), conf)
    assert fs.getClass().getName() == CLASS

    folder = tmp_path / "a" / "b"
    assert fs.mkdirs(hadoop.fs.Path(str(folder)), hadoop.fs.permission.FsPermission(0o750))
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o750
    data = folder / "x.parquet"
    data.write_bytes(b"")
    for mode in (0o640, 0o604, 0o421):
        fs.setPermission(hadoop.fs.Path(str(data)), hadoop.fs.permission.FsPermission(mode))
        assert stat.S_IMODE(os.stat(data).st_mode) == mode

    # A partitioned write: every day's folder, created by the executors' file system too.
    days = spark.sql("SELECT id, date_add(DATE'2024-01-01', CAST(id AS INT)) AS day FROM range(30)")
    days.write.partitionBy("day").parquet(str(tmp_path / "table"))
    parts = sorted(p for p in (tmp_path / "table").iterdir() if p.name.startswith("day="))
    assert len(parts) == 30
    assert {stat.S_IMODE(p.stat().st_mode) for p in parts} == {0o755}
    assert spark.read.parquet(str(tmp_path / "table")).count() == 30
