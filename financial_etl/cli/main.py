"""`financial-etl`: run the whole graph headlessly, for cron and CI.

`financial-etl run [--start D] [--end D]` materializes extract -> transform -> export for
the partition range through Dagster (recorded in $DAGSTER_HOME when set) and exits with
the seed's codes: 0 success, 1 unexpected error, 2 configuration error, 3 data-quality
failure, 4 connection error (a database, the price source, or a DuckDB file another
program holds), and 5 storage error (a full disk or a read-only folder; the message
names the path); stopped by SIGINT or SIGTERM, 130 or 143 (cli/stop.py). Settings are
checked before anything is written (`_preflight`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gc
import logging
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

from dagster import AssetCheckSeverity

from financial_etl.cli.failures import StepErrors, exit_code_for_failure, failure_message
from financial_etl.cli.stop import StopOnSignal, exit_now
from financial_etl.errors import (
    EXIT_CONFIG,
    EXIT_DATA_QUALITY,
    EXIT_SUCCESS,
    EXIT_UNEXPECTED,
    ConfigError,
    FinancialEtlError,
    StorageError,
)
from financial_etl.settings import Settings, load_settings, parse_date

log = logging.getLogger("financial_etl")


def quiet_libraries() -> None:
    """Progress comes from Dagster's event log; library chatter (every SQL statement
    SQLMesh runs, beta notices) would bury it."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        from dagster import BetaWarning, PreviewWarning

        warnings.filterwarnings("ignore", category=BetaWarning)
        warnings.filterwarnings("ignore", category=PreviewWarning)
    except ImportError:  # pragma: no cover - older dagster
        pass


@functools.cache
def _load_and_freeze_libraries() -> None:
    """Import the definitions' libraries (dagster, dlt, sqlmesh, pandas: about a million
    objects), then freeze them out of the garbage collector: otherwise every full
    collection during the run re-scans them, about 1 s of a 10 s first run. Once per process."""
    import financial_etl.definitions  # noqa: F401

    gc.collect()
    gc.freeze()


def _dagster_home() -> Path | None:
    """DAGSTER_HOME when set; Dagster would otherwise fail on a missing folder mid-start."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return None
    if not Path(home).is_dir():
        raise ConfigError(f"DAGSTER_HOME={home!r} is not an existing folder; create it, or unset DAGSTER_HOME")
    return Path(home)


def open_instance():
    """The Dagster instance in DAGSTER_HOME (an in-memory one without it); a storage it
    cannot write is a storage error naming the path, not a traceback."""
    from dagster import DagsterInstance

    from financial_etl.warehouse.storage import storage_problem

    home = _dagster_home()
    if home is None:
        return DagsterInstance.ephemeral()
    try:
        return DagsterInstance.get()
    except Exception as exc:
        if (problem := storage_problem(exc, home)) is None:
            raise
        raise StorageError(
            f"DAGSTER_HOME={str(home)!r}: Dagster cannot write its run storage ({problem}); "
            "make it writable, or point DAGSTER_HOME at another folder"
        ) from None


def _preflight(settings: Settings, command: str) -> None:
    """What can be checked before anything is written: settings (exit 2) first, then the
    folders the command writes (5) and the warehouse (4)."""
    from financial_etl.export.destination import export_target_for
    from financial_etl.warehouse.lock import check_not_held
    from financial_etl.warehouse.storage import check_writable

    export_target_for(settings)  # every export setting; the export step would find a bad one last
    if command != "plan":
        _dagster_home()
    if command == "check" and settings.warehouse.engine == "duckdb" and not settings.duckdb_path.exists():
        raise ConfigError(f"no warehouse at {settings.duckdb_path}: run `financial-etl run` first")
    if command == "run" and settings.source == "csv":
        from financial_etl.extract.sources.csv import check_csv_dir

        assert settings.csv_dir is not None
        check_csv_dir(settings.csv_dir, settings.current_tickers())
    check_writable(settings.data_dir, "FINANCIAL_ETL_DUCKDB_PATH")
    if settings.export_duckdb_path.parent != settings.data_dir:
        check_writable(settings.export_duckdb_path.parent, "FINANCIAL_ETL_EXPORT_DUCKDB_PATH")
    if settings.warehouse.shared:
        settings.warehouse.check_servers()  # unreachable: WarehouseUnavailableError, exit 4
    else:
        check_not_held(settings.duckdb_path)  # open in another program: exit 4, not DuckDB's raw error


def _window(start: dt.date, end: dt.date) -> dict[str, str]:
    """The run tags of [start, end]; ConfigError when its partitions do not exist."""
    from financial_etl.runs import range_tags

    try:
        window = range_tags(start, end)
    except ValueError as exc:
        raise ConfigError(f"--start {start} / --end {end}: {exc}") from None
    if end.year > dt.date.today().year:  # its partition does not exist yet
        raise ConfigError(f"--end {end} is in a year that has not begun; the last partition is this year's")
    return window


def execute_range(
    settings: Settings,
    start: dt.date,
    end: dt.date,
    instance=None,
    tags=None,
    verbose: bool = False,
    step_errors: StepErrors | None = None,
):
    """Materialize the whole graph for exactly [start, end], in process: one run over the
    year partitions that hold it, printing a line per stage as it ends. `step_errors`
    collects the exception of each step that fails."""
    from dagster import Definitions

    from financial_etl.cli.console import RunConsole, console_loggers, logger_config
    from financial_etl.definitions import DAILY_JOB, build_definitions
    from financial_etl.runs import RANGE_END_TAG, RANGE_START_TAG

    window = _window(start, end)
    if instance is None:
        instance = open_instance()
    defs = Definitions.merge(build_definitions(settings), Definitions(loggers=console_loggers()))
    job = defs.resolve_job_def(DAILY_JOB)
    if step_errors is not None:
        job = job.with_hooks({step_errors.hook()})
    first, last = window[RANGE_START_TAG], window[RANGE_END_TAG]
    years = f"partition {first}" if first == last else f"partitions {first} to {last}"
    print(
        f"financial-etl: {settings.source} source, {len(settings.tickers)} tickers, {start} to {end} ({years})",
        flush=True,
    )
    run_id = str(uuid.uuid4())  # known before the run starts, so its event log can be read as it goes
    with RunConsole(instance, run_id, verbose=verbose):
        return job.execute_in_process(
            instance=instance,
            run_id=run_id,
            tags={**(tags or {}), **window},
            raise_on_error=False,
            run_config={"loggers": logger_config(verbose)},
        )


def failure_exit_code(step_errors: StepErrors) -> int:
    """The exit code for a failed run, from the exception of its first failed step."""
    if (first := step_errors.first()) is None:
        return EXIT_UNEXPECTED
    step, exc = first
    print(f"financial-etl: step {step} failed: {failure_message(exc)}", file=sys.stderr)
    return exit_code_for_failure(exc)


def failed_blocking_checks(result) -> list[str]:
    return [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == AssetCheckSeverity.ERROR
    ]


def run_pipeline(
    settings: Settings,
    start: dt.date,
    end: dt.date,
    full_refresh: bool = False,
    verbose: bool = False,
    stop: StopOnSignal | None = None,
) -> int:
    from financial_etl.cli.summary import print_summary
    from financial_etl.runs import EXPORT_TAG, FULL_REFRESH

    started = time.monotonic()
    tags = {EXPORT_TAG: FULL_REFRESH} if full_refresh else None
    step_errors = StepErrors()
    result = execute_range(settings, start, end, tags=tags, verbose=verbose, step_errors=step_errors)
    if result.success:
        print_summary(settings, result, time.monotonic() - started)
        return EXIT_SUCCESS
    if stop is not None and stop.signum is not None:
        steps = [e.step_key for e in result.all_events if e.is_step_failure]
        print(
            f"financial-etl: run {result.run_id} stopped" + (f" during {', '.join(steps)}" if steps else ""),
            file=sys.stderr,
        )
        return stop.exit_code or EXIT_UNEXPECTED
    if failed := failed_blocking_checks(result):
        print(
            f"financial-etl: data-quality failure, blocking checks failed: {', '.join(failed)}; "
            "downstream assets were not materialized",
            file=sys.stderr,
        )
        print_check_table(result, file=sys.stderr)
        print(f"financial-etl: run {result.run_id} failed (exit {EXIT_DATA_QUALITY})", file=sys.stderr)
        return EXIT_DATA_QUALITY
    code = failure_exit_code(step_errors)
    print(f"financial-etl: run {result.run_id} failed (exit {code})", file=sys.stderr)
    return code


def print_check_table(result, file=None) -> None:
    rows = []
    for e in result.get_asset_check_evaluations():
        status = "PASS" if e.passed else ("FAIL" if e.severity == AssetCheckSeverity.ERROR else "WARN")
        meta = e.metadata or {}
        count = next(
            (
                meta[k].value
                for k in ("violating_rows", "duplicate_keys", "rows_outside", "missing_sessions")
                if k in meta
            ),
            "",
        )
        rows.append((status, e.asset_key.to_user_string(), e.check_name, str(count)))
    width = [max(len(r[i]) for r in rows + [("status", "asset", "check", "rows")]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("status", "asset", "check", "rows"), width, strict=True)), file=file)
    for row in sorted(rows, key=lambda r: (r[1], r[2])):
        print("  ".join(c.ljust(w) for c, w in zip(row, width, strict=True)), file=file)


def run_checks(settings: Settings, start: dt.date | None, end: dt.date | None) -> int:
    """Re-evaluate every check against the current tables, materializing nothing."""
    from financial_etl.definitions import CHECKS_JOB, build_definitions
    from financial_etl.runs import CHECK_END_TAG, CHECK_START_TAG

    tags = {}
    if start or end:
        tags = {
            CHECK_START_TAG: (start or settings.start_date).isoformat(),
            CHECK_END_TAG: (end or settings.resolved_end()).isoformat(),
        }
    instance = open_instance()
    step_errors = StepErrors()
    job = build_definitions(settings).resolve_job_def(CHECKS_JOB).with_hooks({step_errors.hook()})
    result = job.execute_in_process(
        instance=instance,
        tags=tags,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    evaluations = result.get_asset_check_evaluations()
    if not evaluations:
        return failure_exit_code(step_errors)
    print_check_table(result)
    if failed := failed_blocking_checks(result):
        print(f"financial-etl: {len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_DATA_QUALITY
    return EXIT_SUCCESS


def run_plan(settings: Settings) -> int:
    """Preview the working copy of the SQLMesh project against prod; apply nothing."""
    from financial_etl.transform.preview import build_preview, format_preview

    preview = build_preview(settings, settings.resolved_end(), log=lambda m: print(f"financial-etl: {m}", flush=True))
    print("\n".join(format_preview(preview, str(settings.sqlmesh_project_dir))))
    return EXIT_SUCCESS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="financial-etl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize extract, transform and export for a date range")
    run.add_argument("--start", help="first date, YYYY-MM-DD (default FINANCIAL_ETL_START_DATE)")
    run.add_argument("--end", help="last date, YYYY-MM-DD (default FINANCIAL_ETL_END_DATE, else today)")
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="replace the export target with the whole mart in one transaction (instead of merging the range)",
    )
    run.add_argument(
        "--verbose",
        action="store_true",
        help="also print Dagster's event log and SQLMesh's plan details (DEBUG)",
    )
    check = sub.add_parser("check", help="re-evaluate every check on the current tables; exit 0, or 3 on a failure")
    check.add_argument("--start", help="first date to check (default: the whole configured range)")
    check.add_argument("--end", help="last date to check")
    sub.add_parser(
        "plan",
        help="show what the working copy of sqlmesh_project/ changes against prod, with a diff of the "
        "numbers built in an isolated SQLMesh environment; applies nothing",
    )
    args = parser.parse_args(argv)
    if args.command != "run" or threading.current_thread() is not threading.main_thread():
        return command(args)
    with StopOnSignal() as stop:
        try:
            code = command(args, stop)
        except BaseException:  # StoppedBySignal, or Dagster's interrupt raised out of the run
            if stop.signum is None:
                raise
            code = EXIT_UNEXPECTED
    if stop.signum is None:
        return code
    if code != EXIT_SUCCESS:
        code = stop.exit_code or EXIT_UNEXPECTED
        print(
            f"financial-etl: stopped by {signal.Signals(stop.signum).name}; every table is as before the run or "
            "as after its last finished stage, nothing half-written: run the same range again to finish it "
            f"(exit {code})",
            file=sys.stderr,
        )
    exit_now(code)  # a statement still running in a library's thread is discarded, uncommitted
    return code  # not reached


def command(args: argparse.Namespace, stop: StopOnSignal | None = None) -> int:
    quiet_libraries()
    _load_and_freeze_libraries()
    try:
        settings = load_settings()
        if stop is not None:
            from financial_etl.warehouse.project import project_config_module

            stop.interrupt = getattr(
                project_config_module(str(settings.sqlmesh_project_dir)), "interrupt_queries", stop.interrupt
            )
        if args.command == "plan":
            _preflight(settings, "plan")
            return run_plan(settings)
        if args.command == "check":
            first = parse_date("--start", args.start) if args.start else None
            last = parse_date("--end", args.end) if args.end else None
            _preflight(settings, "check")
            return run_checks(settings, first, last)
        start = parse_date("--start", args.start) if args.start else settings.start_date
        end = parse_date("--end", args.end) if args.end else settings.resolved_end()
        if start < settings.start_date:
            raise ConfigError(
                f"--start {start} is before FINANCIAL_ETL_START_DATE={settings.start_date}, "
                "where the partitions begin; lower the setting to load earlier history"
            )
        settings.with_range(start, end)
        _window(start, end)
        _preflight(settings, "run")
        return run_pipeline(settings, start, end, full_refresh=args.full_refresh, verbose=args.verbose, stop=stop)
    except ConfigError as exc:
        print(f"financial-etl: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except FinancialEtlError as exc:
        print(f"financial-etl: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # the last resort: a readable line and the generic code
        if stop is not None and stop.signum is not None:
            raise  # a query the stop interrupted: main() reports the stop
        print(f"financial-etl: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
