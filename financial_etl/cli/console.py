"""What `financial-etl run` prints: one line per stage as it finishes, rows and seconds.

`RunConsole` reads the run's own event log from the Dagster instance while the run goes
on (`DagsterInstance.get_records_for_run`, public `EventLogEntry` records): a step's start,
the materializations it reports, its end, and the warnings the steps log. Without
--verbose Dagster's own console logger is off (`quiet_logger`), so a default run stays a
few lines: the stage lines, the steps' warnings, and the CLI's own line naming a failed
step's error instead of Dagster's failure events with their tracebacks. With --verbose
Dagster's console logger prints its whole event log at DEBUG. On a terminal, the running
stage is shown until it ends.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
from typing import TextIO

from dagster import DagsterEventType, DagsterInstance, EventLogEntry, colored_console_logger
from dagster import logger as dagster_logger

from financial_etl.warehouse import MART_KEY, RAW_KEY

# The rows a stage wrote (first found wins), beside the rows of the requested range: after a
# model change or a restatement SQLMesh recomputes, and the export sends, more than the range.
ROW_KEYS = ("rows_recomputed", "rows_exported", "table_rows_in_range")
IN_RANGE = "table_rows_in_range"
WROTE = {MART_KEY: "recomputed"}
NAME_WIDTH = 26
POLL_S = 0.2  # how often the event log is read while the run goes on
# Dagster's console format, kept for the warnings printed without --verbose.
DAGSTER_LINE = "{time} - dagster - {level} - {where}"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %z"
STEP_ENDS = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
RUN_FAILURES = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}


def stage_of(asset_key) -> str:
    return {RAW_KEY: "extract", MART_KEY: "transform"}.get(asset_key, "export")


def stage_line(asset_key, rows, seconds: float, status: str = "") -> str:
    rows, in_range = rows if isinstance(rows, tuple) else (rows, rows)
    rows_text = f"{rows:>9} rows" if isinstance(rows, int) else f"{'':>14}"
    wrote = (
        f"   {WROTE.get(asset_key, 'sent')}; {in_range} in the range"
        if in_range is not None and rows != in_range
        else ""
    )
    return (
        f"  {stage_of(asset_key):<10} {asset_key.to_user_string().replace('/', '.'):<{NAME_WIDTH}} {rows_text}   "
        f"{seconds:5.1f} s{status}{wrote}"
    )


def dagster_line(entry: EventLogEntry) -> str:
    """`entry` as Dagster's console logger shows a logged message."""
    when = dt.datetime.fromtimestamp(entry.timestamp).astimezone().strftime(TIME_FORMAT)
    where = " - ".join(part for part in (entry.job_name, entry.run_id, entry.step_key, entry.message) if part)
    return DAGSTER_LINE.format(time=when, level=logging.getLevelName(entry.level), where=where)


class StageProgress:
    """Turns step and materialization events into stage lines, and prints the warnings
    the steps log (unless Dagster's own console logger prints them)."""

    def __init__(self, stream: TextIO, warnings: TextIO | None) -> None:
        self.stream, self.warnings = stream, warnings
        self.live = stream.isatty()
        self.started: dict[str, float] = {}  # step key -> its start's timestamp
        self.assets: dict[str, dict] = {}  # step key -> {asset key: rows}
        self.failed = False

    def show(self, entry: EventLogEntry) -> None:
        kind, step = entry.dagster_event_type, entry.step_key
        if kind in RUN_FAILURES:
            self.failed = True
        if entry.level >= logging.WARNING and self.warnings is not None and self.worth_showing(entry):
            self.warnings.write(dagster_line(entry) + "\n")
            self.warnings.flush()
        if not step:
            return
        if kind == DagsterEventType.STEP_START:
            self.started[step] = entry.timestamp
            if self.live:
                self.stream.write(f"  {step} running…\r")
                self.stream.flush()
        elif (materialization := entry.asset_materialization) is not None:
            found = self.assets.setdefault(step, {})
            if materialization.asset_key not in found:
                meta = materialization.metadata
                found[materialization.asset_key] = (
                    next((int(meta[k].value) for k in ROW_KEYS if k in meta), None),
                    int(meta[IN_RANGE].value) if IN_RANGE in meta else None,
                )
        elif kind in STEP_ENDS:
            seconds = entry.timestamp - self.started.get(step, entry.timestamp)
            status = "" if kind == DagsterEventType.STEP_SUCCESS else "   FAILED"
            lines = [stage_line(key, rows, seconds, status) for key, rows in self.assets.get(step, {}).items()]
            if not lines and kind == DagsterEventType.STEP_FAILURE:  # it failed before reporting an asset
                lines = [f"  {step:<{NAME_WIDTH + 11}} {'':>14}   {seconds:5.1f} s   FAILED"]
            clear = "\r\033[K" if self.live else ""
            if lines or self.live:
                self.stream.write(clear + "".join(line + "\n" for line in lines))
                self.stream.flush()

    def worth_showing(self, entry: EventLogEntry) -> bool:
        """Not Dagster's failure events (the CLI's own line names the error), nor the
        engine's notice for each step it skips after a failure: an error logged for a
        step that never started."""
        if entry.dagster_event_type in RUN_FAILURES:
            return False
        skipped = self.failed and entry.step_key and entry.step_key not in self.started
        return not (skipped and not entry.is_dagster_event)


class RunConsole:
    """Around `execute_in_process(run_id=...)`: a thread reads the run's new event records
    every POLL_S and shows them; leaving the block shows the rest, so every stage line is
    out before the CLI's summary or failure lines."""

    def __init__(
        self,
        instance: DagsterInstance,
        run_id: str,
        verbose: bool = False,
        stream: TextIO | None = None,
        warnings: TextIO | None = None,
    ) -> None:
        self.instance, self.run_id = instance, run_id
        self.progress = StageProgress(stream or sys.stdout, None if verbose else (warnings or sys.stderr))
        self.cursor: str | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="financial-etl-console", daemon=True)

    def __enter__(self) -> RunConsole:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.read()

    def _watch(self) -> None:
        while not self._done.wait(POLL_S):
            self.read()

    def read(self) -> None:
        with self._lock:
            connection = self.instance.get_records_for_run(self.run_id, cursor=self.cursor)
            for record in connection.records:
                self.progress.show(record.event_log_entry)
            self.cursor = connection.cursor


@dagster_logger(description="Nothing: without --verbose, financial-etl prints the run's events itself.")
def quiet_logger(init_context) -> logging.Logger:
    log = logging.getLogger("financial_etl.cli.quiet")
    log.propagate = False
    log.handlers = [logging.NullHandler()]
    return log


def console_loggers() -> dict:
    return {"console": colored_console_logger, "quiet": quiet_logger}


def logger_config(verbose: bool) -> dict:
    return {"console": {"config": {"log_level": "DEBUG"}}} if verbose else {"quiet": {}}
