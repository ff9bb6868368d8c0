"""What `financial-etl run` prints: one line per stage as it finishes, rows and seconds.

A Dagster logger, added to the definitions by the CLI only, reads the run's own events
(a step's start, the materializations it reports, its end). Dagster's event log itself
goes to the console at WARNING (at DEBUG with --verbose), so a default run stays a few
lines. On a terminal, the running stage is shown until it ends.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from dagster import DagsterEvent, colored_console_logger
from dagster import logger as dagster_logger

from financial_etl.warehouse import MART_KEY, RAW_KEY

# The rows a stage wrote (first found wins), beside the rows of the requested range: after a
# model change or a restatement SQLMesh recomputes, and the export sends, more than the range.
ROW_KEYS = ("rows_recomputed", "rows_exported", "table_rows_in_range")
IN_RANGE = "table_rows_in_range"
WROTE = {MART_KEY: "recomputed"}
RECORD_META = "dagster_meta"  # where Dagster puts the event on each record it hands a logger
NAME_WIDTH = 26


def stage_of(asset_key) -> str:
    return {RAW_KEY: "extract", MART_KEY: "transform"}.get(asset_key, "export")


def stage_line(asset_key, rows, seconds: float, status: str = "") -> str:
    rows, in_range = rows if isinstance(rows, tuple) else (rows, rows)
    rows_text = f"{rows:>9} rows" if isinstance(rows, int) else f"{'':>14}"
    wrote = f"   {WROTE.get(asset_key, 'sent')}; {in_range} in the range" if in_range is not None and rows != in_range else ""
    return f"  {stage_of(asset_key):<10} {asset_key.to_user_string().replace('/', '.'):<{NAME_WIDTH}} {rows_text}   " \
           f"{seconds:5.1f} s{status}{wrote}"


class StageProgress(logging.Handler):
    """Turns step and materialization events into stage lines."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.DEBUG)
        self.stream = stream
        self.live = stream.isatty()
        self.started: dict[str, float] = {}
        self.assets: dict[str, dict] = {}  # step key -> {asset key: rows}

    def emit(self, record: logging.LogRecord) -> None:
        event = (getattr(record, RECORD_META, None) or {}).get("dagster_event")
        if not isinstance(event, DagsterEvent) or not event.step_key:
            return
        step = event.step_key
        if event.is_step_start:
            self.started[step] = time.monotonic()
            if self.live:
                self.stream.write(f"  {step} running…\r")
                self.stream.flush()
        elif event.is_step_materialization:
            materialization = event.step_materialization_data.materialization
            found = self.assets.setdefault(step, {})
            if materialization.asset_key not in found:
                meta = materialization.metadata
                found[materialization.asset_key] = (
                    next((int(meta[k].value) for k in ROW_KEYS if k in meta), None),
                    int(meta[IN_RANGE].value) if IN_RANGE in meta else None,
                )
        elif event.is_step_success or event.is_step_failure:
            seconds = time.monotonic() - self.started.get(step, time.monotonic())
            status = "" if event.is_step_success else "   FAILED"
            lines = [stage_line(key, rows, seconds, status) for key, rows in self.assets.get(step, {}).items()]
            if not lines and event.is_step_failure:  # it failed before reporting an asset
                lines = [f"  {step:<{NAME_WIDTH + 11}} {'':>14}   {seconds:5.1f} s   FAILED"]
            clear = "\r\033[K" if self.live else ""
            if lines or self.live:
                self.stream.write(clear + "".join(line + "\n" for line in lines))
                self.stream.flush()


@dagster_logger(description="financial-etl's console: one line per stage, rows and seconds.")
def stage_progress_logger(init_context) -> logging.Logger:
    log = logging.getLogger("financial_etl.cli.stages")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.handlers = [StageProgress(sys.stdout)]
    return log


# Dagster's engine names each step it skips after a failure with this line, at ERROR.
SKIPPED_STEP = "Dependencies for step "


class QuietFailures(logging.Filter):
    """Without --verbose, the CLI's own line names a failed step's error: Dagster's failure
    events (with their tracebacks) and its list of skipped steps stay off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, RECORD_META, None) or {}
        event = meta.get("dagster_event")
        if isinstance(event, DagsterEvent) and (event.is_step_failure or event.is_run_failure):
            return False
        return not str(meta.get("orig_message", "")).startswith(SKIPPED_STEP)


@dagster_logger(
    config_schema=colored_console_logger.config_schema,
    description="Dagster's colored console logger; below DEBUG without failure tracebacks.",
)
def console_logger(init_context) -> logging.Logger:
    log = colored_console_logger.logger_fn(init_context)
    if init_context.logger_config["log_level"] != "DEBUG":
        for handler in log.handlers:
            handler.addFilter(QuietFailures())
    return log


def console_loggers() -> dict:
    return {"console": console_logger, "stages": stage_progress_logger}


def logger_config(verbose: bool) -> dict:
    return {"console": {"config": {"log_level": "DEBUG" if verbose else "WARNING"}}, "stages": {}}
