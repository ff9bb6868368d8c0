"""dlt's settings for the project's pipelines, applied where dlt reads them, not at import.

An operator's own setting (environment variable or a `.dlt/config.toml`) wins over each.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dlt

PIPELINE_SETTINGS = {
    # Every raw and export row carries the dlt load that last wrote it (`_dlt_load_id`, see
    # `_dlt_loads`): an analyst can tell when a row changed, and a restatement of one ticker
    # provably leaves the other tickers' rows as they were. Read when a pipeline extracts.
    "normalize.parquet_normalizer.add_dlt_load_id": True,
    # dlt holds a SIGTERM or SIGINT until its running load jobs finish (minutes for a large
    # merge); off, Dagster's handler stops the step at once and cli/stop.py ends the process.
    # Read when a pipeline is created.
    "runtime.intercept_signals": False,
}


def telemetry_off() -> None:
    """dlt reports anonymous usage to its vendor unless told not to: the pipeline talks only
    to the price source and the export target. dlt starts that reporting at its first
    configuration lookup in a process, before a value set through `dlt.config` could apply,
    so this one setting goes in the environment, just before the project first uses dlt."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")


@contextmanager
def pipeline_settings() -> Iterator[None]:
    """Create and run dlt pipelines inside this block (or a function it decorates)."""
    telemetry_off()
    with dlt.config.values({key: value for key, value in PIPELINE_SETTINGS.items() if key not in dlt.config}):
        yield
