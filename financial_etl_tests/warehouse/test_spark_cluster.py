"""The Spark standalone cluster and the Hive metastore service (spark_cluster.py,
scripts/spark-cluster): two Spark applications in separate processes, at the same time,
share one catalog; their work runs on the cluster's executors; stop() leaves no JVM."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from financial_etl_tests.spark_cluster import start_spark_cluster

pytestmark = pytest.mark.slow

# A Spark application of its own: the writer creates a database and a Parquet table,
# then touches the flag; the reader waits for the flag and reads the table back.
CLIENT = """
import json, sys, time
from pathlib import Path
from pyspark.sql import SparkSession

conf, role, flag = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
builder = SparkSession.builder.appName(f"test_spark_cluster_{role}")
for key, value in conf.items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()
rows = []
if role == "writer":
    spark.sql("CREATE DATABASE shared")
    frame = spark.createDataFrame([(1, "a"), (2, "b"), (3, "c")], "id INT, name STRING")
    frame.write.format("parquet").saveAsTable("shared.letters")
    flag.touch()
else:
    deadline = time.monotonic() + 300
    while not flag.exists():
        assert time.monotonic() < deadline, "the writer did not finish"
        time.sleep(0.2)
    rows = [list(row) for row in spark.table("shared.letters").orderBy("id").collect()]
sc = spark.sparkContext
# The driver's block manager is counted too.
executors = sc._jsc.sc().getExecutorMemoryStatus().size() - 1
print(json.dumps({"app": sc.applicationId, "master": sc.master, "executors": executors, "rows": rows}))
spark.stop()
"""


def test_two_applications_share_the_metastore_and_run_on_the_cluster(postgres_server, tmp_path):
    cluster = start_spark_cluster(postgres_server)
    try:
        running = cluster.processes()
        assert len(running) >= 3, running  # the metastore, the master, the worker
        flag = tmp_path / "written"
        clients = {}
        for role in ("writer", "reader"):
            # Each its own warehouse dir: the reader finds the table's files through the
            # metastore alone.
            conf = cluster.client_conf(tmp_path / f"{role}-warehouse") | {
                "spark.cores.max": "1",
                "spark.executor.memory": "512m",
                "spark.driver.host": "127.0.0.1",
                "spark.ui.enabled": "false",
            }
            clients[role] = subprocess.Popen(
                [sys.executable, "-c", CLIENT, json.dumps(conf), role, str(flag)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
                env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
            )
        results = {}
        for role, client in clients.items():
            out, err = client.communicate(timeout=600)
            assert client.returncode == 0, f"{role}: {err[-3000:]}\nlogs: {cluster.logs}"
            results[role] = json.loads(out.strip().splitlines()[-1])

        assert results["reader"]["rows"] == [[1, "a"], [2, "b"], [3, "c"]]
        for result in results.values():
            assert result["master"] == cluster.master_url and result["executors"] >= 1, result
        finished = {app["id"] for app in cluster.state()["completedapps"]}
        assert {result["app"] for result in results.values()} <= finished
        # No client fell back to a local Derby catalog in its working directory.
        assert not (tmp_path / "metastore_db").exists()
    finally:
        cluster.stop()
    assert cluster.processes() == []
