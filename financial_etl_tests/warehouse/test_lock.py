"""Processes that start together on a fresh data folder create the dlt pipelines safely;
a program outside the pipeline holding the warehouse file is named, not DuckDB's raw error.

dlt wipes and recreates a pipeline's folder until its state file exists, so a backfill
and the daily run started at once on a new machine used to delete each other's files
(OSError "Directory not empty" / FileExistsError).
"""

from __future__ import annotations

import multiprocessing

import duckdb
import pytest

from financial_etl.errors import WarehouseUnavailableError
from financial_etl.export.assets import EXPORT_PIPELINE, export_pipeline
from financial_etl.export.destination import export_target_for
from financial_etl.extract.assets import EXTRACT_PIPELINE, extract_pipeline
from financial_etl.warehouse.lock import check_not_held, warehouse_lock
from financial_etl_tests.helpers import held_open, settings_for

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


def test_a_file_another_program_opens_mid_run_fails_the_stage_naming_it(tmp_path):
    db = tmp_path / "w.duckdb"
    with held_open(db) as pid:
        with pytest.raises(
            WarehouseUnavailableError, match=rf"the DuckDB file {db} is held by another process .*pid {pid}"
        ):
            with warehouse_lock(db):  # every stage holds it while it opens the file
                duckdb.connect(str(db))


def test_the_preflight_probe_refuses_a_program_and_waits_for_a_run_of_the_pipeline(tmp_path):
    db = tmp_path / "w.duckdb"
    duckdb.connect(str(db)).close()
    check_not_held(db)  # nobody holds it
    with held_open(db) as pid:
        with pytest.raises(WarehouseUnavailableError, match=f"pid {pid}"):
            check_not_held(db)
        with warehouse_lock(db):  # a run of the pipeline holds it: its stages queue, no error
            check_not_held(db)
