"""The extract in groups of tickers (chunks.py): the same tables and counts as one batch,
the missing-ticker rule judged over every group before anything loads, and the files of
a killed run cleaned up."""

from __future__ import annotations

import subprocess

import dlt
import pytest

from financial_etl.errors import MissingTickersError
from financial_etl.extract.chunks import CHUNK_ROWS, batch_folder, stage_batch, ticker_groups
from financial_etl.extract.resource import eod_prices_resource, fetch_batch, fetch_checked, raw_tables_resource
from financial_etl.warehouse import ACTIONS, QUARANTINE, RAW, RAW_DATASET
from financial_etl.warehouse.dlt_settings import pipeline_settings
from financial_etl_tests.extract.test_resource import END, START, answering
from financial_etl_tests.helpers import day, query

TICKERS = ["AAA", "BBB", "CCC", "DDD", "EEE"]


def test_a_daily_run_is_one_group_and_a_long_range_is_split_by_rows():
    universe = [f"T{i:04d}" for i in range(5000)]
    assert ticker_groups(universe, day("2024-03-01"), day("2024-03-01")) == [universe]
    groups = ticker_groups(universe, day("1990-01-02"), day("2015-10-15"))  # 6,500 sessions
    assert [t for g in groups for t in g] == universe
    assert max(len(g) for g in groups) * 6500 <= CHUNK_ROWS
    assert ticker_groups(TICKERS, START, END, chunk_rows=1) == [[t] for t in TICKERS]


def stage(fetch, folder, tickers=TICKERS, allow_partial=False, chunk_rows=40):
    return stage_batch(
        lambda group: fetch_checked(fetch, group, START, END, run_id="run-1"),
        tickers,
        START,
        END,
        folder,
        "synthetic",
        allow_partial,
        chunk_rows=chunk_rows,
    )


def test_groups_load_the_same_tables_and_counts_as_one_batch(tmp_path):
    fetch = answering(TICKERS, bad_close_on=day("2024-03-12"))
    whole = fetch_batch(fetch, TICKERS, START, END, run_id="run-1")
    (tmp_path / "staged").mkdir()
    staged = stage(fetch, tmp_path / "staged")  # 20 sessions: two tickers a group
    assert staged.groups == 3 and staged.missing_tickers == []
    contract = whole.contract
    assert (staged.rows, staged.quarantined, staged.untraded, staged.warned, staged.reasons()) == (
        whole.rows,
        contract.quarantined,
        contract.untraded,
        contract.warned,
        contract.reasons(),
    )

    loaded = {}
    for name, resource in (
        ("whole", eod_prices_resource(whole)),
        ("staged", raw_tables_resource(staged.parts, staged.counts())),
    ):
        db = tmp_path / f"{name}.duckdb"
        with pipeline_settings():  # the project's dlt settings: each row's load id, as the extract writes it
            pipeline = dlt.pipeline(
                pipeline_name=f"chunks_{name}",
                destination=dlt.destinations.duckdb(str(db)),
                dataset_name=RAW_DATASET,
                pipelines_dir=str(tmp_path / "dlt"),
            )
            pipeline.run(resource)
        loaded[name] = [
            query(db, f"SELECT * EXCLUDE ({skip}) FROM {table} ORDER BY ALL")
            for table, skip in (
                (RAW, "_dlt_load_id"),
                (QUARANTINE, "_dlt_load_id, first_seen_at"),
                (ACTIONS, "_dlt_load_id"),
            )
        ]
    assert loaded["staged"] == loaded["whole"] and len(loaded["whole"][0]) == 5 * 20 - 1


def test_the_missing_ticker_rule_sees_every_group(tmp_path):
    # A group where no ticker answers is not "the source answered nothing": the others did.
    staged = stage(answering(["AAA", "BBB"]), tmp_path, allow_partial=True, chunk_rows=20)
    assert staged.missing_tickers == ["CCC", "DDD", "EEE"] and staged.rows == 2 * 20
    with pytest.raises(MissingTickersError, match="EEE"):
        stage(answering(TICKERS[:-1]), tmp_path, chunk_rows=20)


def test_a_dead_runs_batch_folder_is_removed_and_a_live_ones_kept(tmp_path):
    child = subprocess.Popen(["sleep", "30"])
    try:
        gone = tmp_path / f".extract-{2**22 + 7}-00000000"  # above the largest pid_max: no such process
        live = tmp_path / f".extract-{child.pid}-00000000"
        for folder in (gone, live):
            folder.mkdir()
            (folder / "00000.valid.parquet").write_bytes(b"x")
        mine = batch_folder(tmp_path)
        assert mine.is_dir() and not gone.exists() and live.exists()
    finally:
        child.kill()
