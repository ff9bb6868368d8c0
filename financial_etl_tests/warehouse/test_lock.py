"""Processes that start together on a fresh data folder create the dlt pipelines safely.

dlt wipes and recreates a pipeline's folder until its state file exists, so a backfill
and the daily run started at once on a new machine used to delete each other's files
(OSError "Directory not empty" / FileExistsError).
"""

from __future__ import annotations

import multiprocessing

import pytest

from financial_etl.export.assets import EXPORT_PIPELINE, export_pipeline
from financial_etl.export.destination import export_target_for
from financial_etl.extract.assets import EXTRACT_PIPELINE, extract_pipeline
from financial_etl_tests.helpers import settings_for

PROCESSES = 4
ROUNDS = 5


def _settings(folder):
    return settings_for(duckdb_path=str(folder / "w.duckdb"), export_duckdb_path=str(folder / "export.duckdb"))


def _create(which: str, folder, barrier) -> None:
    settings = _settings(folder)
    barrier.wait()
    if which == "extract":
        extract_pipeline(settings)
    else:
        export_pipeline(settings, export_target_for(settings, env={}))


@pytest.mark.parametrize("which", ["extract", "export"])
def test_processes_creating_a_pipeline_at_once_all_succeed(which, tmp_path):
    ctx = multiprocessing.get_context("fork")
    failed = 0
    for round_ in range(ROUNDS):
        barrier = ctx.Barrier(PROCESSES)
        procs = [ctx.Process(target=_create, args=(which, tmp_path / str(round_), barrier)) for _ in range(PROCESSES)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        failed += sum(p.exitcode != 0 for p in procs)
    assert failed == 0, f"{failed} of {PROCESSES * ROUNDS} processes failed to create the {which} pipeline"
    name = EXTRACT_PIPELINE if which == "extract" else EXPORT_PIPELINE
    assert all((_settings(tmp_path / str(r)).pipelines_dir / name / "state.json").exists() for r in range(ROUNDS))
