"""SIGKILL of a real `financial-etl run` during the extract, the SQLMesh run and the
export; the next run ends with exactly the rows of an uninterrupted run. SIGTERM and
SIGINT stop it within seconds with exit 143 or 130, and the same holds.

Each kill lands mid-stage: the uninterrupted run's log shows when each stage starts and
finishes, and the killed run is stopped part-way through that window (asserted: the
stage's "done" line never appeared). Between the kill and the re-run, the export target
must be either as it was before or complete, never partial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from financial_etl.errors import EXIT_SIGINT, EXIT_SIGTERM, EXIT_SUCCESS
from financial_etl_tests.helpers import query

pytestmark = pytest.mark.slow  # every test here runs the graph or a CLI process

CLI = str(Path(sys.executable).with_name("financial-etl"))
TICKERS = ",".join(f"K{i:03d}" for i in range(120))
FIRST = ("2023-01-02", "2023-12-29")
SECOND = ("2023-01-02", "2024-12-31")
# stage -> (line that starts it, line that says it is done)
STAGES = {
    "extract": ("extracting 120 tickers", "rows into raw.eod_prices_raw"),
    "transform": ("SQLMesh prod: recomputing", "no SQL Server configured"),
    "export": ("exporting 2023-01-02", "exported "),
}
QUERIES = {
    "raw": "SELECT * EXCLUDE (_dlt_load_id) FROM raw.eod_prices_raw ORDER BY ticker, date",
    "mart": "SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date",
    "quarantine": "SELECT count(*) FROM raw.eod_prices_quarantine",
    # SQLMesh's state: the same snapshot, the same covered span, nothing left pending.
    "snapshots": "SELECT name, version FROM sqlmesh._snapshots ORDER BY name",
    "intervals": "SELECT name, min(start_ts), max(end_ts), bool_or(is_pending_restatement) FROM sqlmesh._intervals "
    "WHERE NOT is_dev AND NOT is_removed GROUP BY name",
}
EXPORT = 'SELECT * EXCLUDE (_dlt_load_id) FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'


def env_for(data: Path, tickers: str = TICKERS) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINANCIAL_ETL_") and k != "DAGSTER_HOME"}
    env.update(
        FINANCIAL_ETL_DUCKDB_PATH=str(data / "financial_etl.duckdb"),
        FINANCIAL_ETL_TICKERS=tickers,
        FINANCIAL_ETL_START_DATE=FIRST[0],
        PYTHONUNBUFFERED="1",
    )
    return env


class Run:
    """`financial-etl run` in its own process, its output lines timestamped as they come."""

    def __init__(self, data: Path, dates: tuple[str, str], tickers: str = TICKERS):
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen(
            [CLI, "run", "--start", dates[0], "--end", dates[1], "--verbose"],
            env=env_for(data, tickers),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((time.monotonic() - self.started, line))

    def when(self, text: str) -> float | None:
        return next((t for t, line in list(self.lines) if text in line), None)

    def wait_for(self, text: str, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while (t := self.when(text)) is None:
            assert self.process.poll() is None or self.reader.is_alive(), f"run ended before {text!r}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s"
            time.sleep(0.01)
        return t

    def finish(self) -> int:
        code = self.process.wait(timeout=900)
        self.reader.join(timeout=10)
        return code

    def output(self) -> str:
        return "".join(line for _, line in self.lines)[-4000:]


def snapshot(data: Path) -> dict:
    tables = {name: query(data / "financial_etl.duckdb", sql) for name, sql in QUERIES.items()}
    tables["export"] = export_rows(data)
    return tables


def export_rows(data: Path) -> list[tuple] | None:
    path = data / "export.duckdb"
    if (
        not path.exists()
        or not query(path, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'Dim_Stock_Metrics'")[0][
            0
        ]
    ):
        return None
    return query(path, EXPORT)


def completed(data: Path, dates, tickers: str = TICKERS) -> Run:
    run = Run(data, dates, tickers)
    assert run.finish() == EXIT_SUCCESS, run.output()
    return run


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """The first year loaded, then the uninterrupted second run with its stage timings."""
    root = tmp_path_factory.mktemp("crash")
    before = root / "before"
    completed(before, FIRST)
    state_before = snapshot(before)
    clean = root / "clean"
    subprocess.run(["cp", "-a", str(before), str(clean)], check=True)
    second = completed(clean, SECOND)
    windows = {stage: (second.when(begin), second.when(end)) for stage, (begin, end) in STAGES.items()}
    assert all(a is not None and b is not None and b > a for a, b in windows.values()), (windows, second.output())
    return before, state_before, snapshot(clean), windows


def signalled_mid_stage(before: Path, folder: Path, windows, stage: str, signum: int, fraction: float):
    """A run on a copy of `before`, sent `signum` `fraction` of the way through `stage` as
    timed without a signal. A busy machine can run the stage faster than it did when timed:
    if the stage's "done" line came first, again on a fresh copy, twice as soon.
    Returns (data folder, the run, its exit code, seconds from the signal to the exit)."""
    begin, end = windows[stage]
    for attempt in range(4):
        data = folder / f"data{attempt}"
        subprocess.run(["cp", "-a", str(before), str(data)], check=True)
        run = Run(data, SECOND)
        run.wait_for(STAGES[stage][0])
        time.sleep(fraction * (end - begin) / 2**attempt)
        sent = time.monotonic()
        run.process.send_signal(signum)
        code = run.process.wait(timeout=60)
        took = time.monotonic() - sent
        run.finish()
        if run.when(STAGES[stage][1]) is None:
            return data, run, code, took
    pytest.fail(f"every signal came after {stage} finished:\n{run.output()}")


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_run_killed_during_a_stage_is_repaired_by_the_next_run(history, stage, tmp_path):
    before, state_before, uninterrupted, windows = history
    data, killed, code, _ = signalled_mid_stage(before, tmp_path, windows, stage, signal.SIGKILL, 0.4)
    assert code == -signal.SIGKILL, killed.output()

    # Between the kill and the re-run: the export target is the old one or the complete new one.
    assert export_rows(data) in (state_before["export"], uninterrupted["export"])

    completed(data, SECOND)
    assert snapshot(data) == uninterrupted


# A stopped run exits within this many seconds of the signal.
STOP_S = 10


@pytest.mark.parametrize(
    "stage, signum",
    [
        ("extract", signal.SIGTERM),
        ("transform", signal.SIGTERM),
        ("export", signal.SIGTERM),
        ("transform", signal.SIGINT),
    ],
)
def test_a_run_stopped_by_a_signal_exits_at_once_with_its_code_and_the_next_run_finishes_it(
    history, stage, signum, tmp_path
):
    before, state_before, uninterrupted, windows = history
    data, stopped, code, took = signalled_mid_stage(before, tmp_path, windows, stage, signum, 0.25)
    assert code == {signal.SIGTERM: EXIT_SIGTERM, signal.SIGINT: EXIT_SIGINT}[signum], stopped.output()
    assert took < STOP_S, f"exited {took:.1f} s after the signal"
    assert stopped.when(f"stopped by {signal.Signals(signum).name}") is not None, stopped.output()
    assert export_rows(data) in (state_before["export"], uninterrupted["export"])

    completed(data, SECOND)
    assert snapshot(data) == uninterrupted


def test_a_second_process_waits_for_the_warehouse_or_fails_with_a_clear_message(tmp_path):
    from financial_etl.errors import WarehouseBusyError
    from financial_etl.warehouse.lock import warehouse_lock

    db, done = tmp_path / "w.duckdb", tmp_path / "holder-done"
    # The holder's last act under the lock is to write `done`: whoever gets the lock next
    # must find it written (the holder's process itself may still be exiting by then).
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from financial_etl.warehouse.lock import warehouse_lock\n"
            f"with warehouse_lock(Path({str(db)!r})):\n    print('held', flush=True); time.sleep(4)\n"
            f"    Path({str(done)!r}).write_text('done')",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WarehouseBusyError) as busy:
            with warehouse_lock(db, timeout_s=0.5, poll_s=0.05):
                pass
        assert str(db) in str(busy.value) and "try again" in str(busy.value)
        said: list[str] = []
        with warehouse_lock(db, timeout_s=60, poll_s=0.05, log=said.append):
            assert done.read_text() == "done"  # we got it only once the holder had finished with it
        assert holder.wait(timeout=30) == 0
        assert said[0] == f"waiting for the warehouse {db}: in use by pid {holder.pid}"
        assert said[1].startswith("got the warehouse after")
    finally:
        holder.kill()


def test_twenty_kills_never_leave_the_mart_as_neither_before_nor_after(tmp_path):
    """Kills spread over each stage of a run that recomputes the whole history: after each,
    a reader finds the mart as before the run or as after it, never emptied (SQLMesh's
    delete and insert of the range are one transaction: sqlmesh_project/config.py). Two
    warehouses take turns, so the two cores start the next run while one is killed."""
    tickers, timed = "AAA,BBB,CCC,DDD,EEE,FFF,GGG", tmp_path / "timed"
    stages = {**STAGES, "extract": ("extracting 7 tickers", STAGES["extract"][1])}
    completed(timed, FIRST, tickers)
    old = query(timed / "financial_etl.duckdb", QUERIES["mart"])
    warehouses = [tmp_path / f"data{i}" for i in range(2)]
    for data in warehouses:
        subprocess.run(["cp", "-a", str(timed), str(data)], check=True)
    run = completed(timed, SECOND, tickers)
    new = query(timed / "financial_etl.duckdb", QUERIES["mart"])
    assert len(new) > len(old) > 0
    moments = [
        (stage, (i + 0.5) / count)
        for stage, count in {"extract": 5, "transform": 10, "export": 5}.items()
        for i in range(count)
    ]
    seen: list[str] = []

    def kill_in_turn(data: Path, share: list[tuple[str, float]]) -> None:
        for stage, fraction in share:
            begin, end = run.when(stages[stage][0]), run.when(stages[stage][1])
            killed = Run(data, SECOND, tickers)
            killed.wait_for(stages[stage][0])
            time.sleep(fraction * (end - begin))
            killed.process.send_signal(signal.SIGKILL)
            killed.finish()
            mart = query(data / "financial_etl.duckdb", QUERIES["mart"])
            seen.append(
                "ok"
                if mart in (old, new)
                else f"{stage} at {fraction:.2f}: {len(mart)} rows ({len(old)} before the run, {len(new)} after)"
            )

    workers = [threading.Thread(target=kill_in_turn, args=(data, moments[i::2])) for i, data in enumerate(warehouses)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert seen == ["ok"] * 20, [s for s in seen if s != "ok"]
    for data in warehouses:
        completed(data, SECOND, tickers)
        assert query(data / "financial_etl.duckdb", QUERIES["mart"]) == new
