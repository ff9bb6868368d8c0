"""A Spark standalone cluster (a master, one worker) and a Hive metastore service on
loopback ports, started the way a user starts them: `scripts/spark-cluster start`.

The metastore keeps its tables in its own database on the tests' PostgreSQL server
(servers.py). Every file of the cluster (logs, PID files, the worker's work dir, the
metastore's configuration) goes in a temp directory, outside the repository and the venv.
Should Java or the metastore's jars be missing
here, the tests skip outside CI and fail in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from financial_etl.settings import REPO_ROOT
from financial_etl_tests.helpers import unavailable
from financial_etl_tests.servers import PostgresServer, free_port

SCRIPT = REPO_ROOT / "scripts" / "spark-cluster"
JARS = ("/usr/share/java/postgresql.jar", "/usr/share/java/disruptor.jar")


@dataclass
class SparkCluster:
    root: Path
    master_url: str  # spark://127.0.0.1:PORT
    metastore_uri: str  # thrift://127.0.0.1:PORT
    master_webui: str
    pids: dict[str, int] = field(default_factory=dict)  # service -> PID, its session's id too

    @property
    def logs(self) -> list[Path]:
        return sorted((self.root / "logs").glob("*.log"))

    def state(self) -> dict:
        """The master's view: workers, running and completed applications."""
        with urllib.request.urlopen(f"{self.master_webui}/json/", timeout=10) as answer:
            return json.load(answer)

    def processes(self) -> list[int]:
        """Live processes of the cluster: each service's session, its executors included."""
        listed = subprocess.run(
            ["ps", "-o", "pid=,stat=", "-s", ",".join(map(str, self.pids.values()))], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid, stat in (line.split() for line in listed.splitlines()) if not stat.startswith("Z")]

    def stop(self) -> None:
        """Ends every process of the cluster and waits until they are gone."""
        subprocess.run([sys.executable, str(SCRIPT), "stop", str(self.root)], check=True, timeout=120)


def start_spark_cluster(postgres: PostgresServer, root: Path | None = None) -> SparkCluster:
    """Start the metastore (on a new database of `postgres`), the master and a worker;
    return once the worker has registered and the metastore answers."""
    if shutil.which("java") is None or not all(os.access(jar, os.R_OK) for jar in JARS):
        unavailable(f"java or {' '.join(JARS)} is missing (scripts/install-system-packages)")
    root = root or Path(tempfile.mkdtemp(prefix="fetl_spark_"))
    # One database per cluster: a session's fixture and a test's own cluster can share
    # the PostgreSQL server.
    database = re.sub(r"\W", "_", f"hive_metastore_{root.name}".lower())
    postgres.reset_database(database)

    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    master, webui, worker_webui, metastore = ports
    command = [sys.executable, str(SCRIPT), "start", str(root)]
    command += ["--metastore-jdbc-url", f"jdbc:postgresql://127.0.0.1:{postgres.port}/{database}"]
    command += ["--metastore-user", postgres.user, "--master-port", str(master), "--webui-port", str(webui)]
    command += ["--worker-webui-port", str(worker_webui), "--metastore-port", str(metastore)]
    # The password reaches the script in its environment, not on a command line ps shows.
    env = {**os.environ, "SPARK_CLUSTER_METASTORE_PASSWORD": postgres.password}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        subprocess.run([sys.executable, str(SCRIPT), "stop", str(root)], timeout=120)
        raise
    if done.returncode != 0:
        output = (done.stdout + done.stderr).replace(postgres.password, "***")
        raise RuntimeError(f"scripts/spark-cluster start failed (logs in {root / 'logs'}):\n{output}")
    started = json.loads((root / "cluster.json").read_text())
    pids = {p.stem: int(p.read_text()) for p in (root / "pids").glob("*.pid")}
    return SparkCluster(
        root=root,
        master_url=started["master_url"],
        metastore_uri=started["metastore_uri"],
        master_webui=started["master_webui"],
        pids=pids,
    )
