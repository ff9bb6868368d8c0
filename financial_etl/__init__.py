"""financial_etl: a daily stock-market ETL as Dagster assets (dlt, SQLMesh, dlt)."""

import os

# dlt reports anonymous usage to its vendor unless told not to: the pipeline talks only
# to the price source and the export target. An operator's own setting wins.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
# Every raw and export row carries the dlt load that last wrote it (`_dlt_load_id`, see
# `_dlt_loads`): an analyst can tell when a row changed, and a restatement of one ticker
# provably leaves the other tickers' rows as they were.
os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID", "true")
# SQLMesh forks a pool of model-loading processes unless this is 1 (sqlmesh.core.constants):
# one model needs no pool, and forked workers outlive a killed run, 250 MB each.
os.environ.setdefault("MAX_FORK_WORKERS", "1")
# dlt holds a SIGTERM or SIGINT until its running load jobs finish (minutes for a large
# merge); off, Dagster's handler stops the step at once and cli/stop.py ends the process.
os.environ.setdefault("RUNTIME__INTERCEPT_SIGNALS", "false")
