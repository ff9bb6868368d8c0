"""The console of `financial-etl run`, read from a real run's event log: stage lines, the
steps' warnings in Dagster's format, and none of Dagster's failure events or skip notices."""

from __future__ import annotations

import io
import re
import time
import uuid

import dagster as dg

from financial_etl.cli.console import RunConsole, console_loggers, logger_config
from financial_etl.warehouse import RAW_KEY

EXPORT = dg.AssetKey(["dbo", "Dim_Stock_Metrics"])


@dg.asset(key=RAW_KEY)
def extracted(context) -> dg.MaterializeResult:
    context.log.warning("AAPL: a 2-for-1 split")
    time.sleep(0.4)  # seconds from the step's start to its end
    return dg.MaterializeResult(metadata={"table_rows_in_range": 42})


@dg.asset(key=EXPORT, deps=[extracted])
def exported(context) -> None:
    context.log.error("the server said no")
    raise ConnectionError("no route to the server")


@dg.asset(deps=[exported])
def downstream() -> None:
    pass


def run(verbose: bool) -> tuple[str, str, str]:
    defs = dg.Definitions(
        assets=[extracted, exported, downstream], jobs=[dg.define_asset_job("job")], loggers=console_loggers()
    )
    out, err, run_id = io.StringIO(), io.StringIO(), str(uuid.uuid4())
    instance = dg.DagsterInstance.ephemeral()
    with RunConsole(instance, run_id, verbose=verbose, stream=out, warnings=err):
        result = defs.resolve_job_def("job").execute_in_process(
            instance=instance, run_id=run_id, raise_on_error=False, run_config={"loggers": logger_config(verbose)}
        )
    assert not result.success
    return out.getvalue(), err.getvalue(), run_id


def test_stage_lines_and_the_steps_warnings_come_from_the_runs_event_log():
    out, err, run_id = run(verbose=False)
    lines = out.splitlines()
    extract = re.fullmatch(r"  extract +raw\.eod_prices_raw +42 rows +(\d+\.\d) s", lines[0])
    assert extract and 0.4 <= float(extract[1]) < 5, lines
    assert re.fullmatch(r"  dbo__Dim_Stock_Metrics +\d+\.\d s   FAILED", lines[1]), lines
    assert len(lines) == 2  # the skipped step never ran: no line
    warned, said_no = err.splitlines()
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{{4}} - dagster - WARNING - job - {run_id} - "
        r"raw__eod_prices_raw - AAPL: a 2-for-1 split",
        warned,
    )
    assert said_no.endswith(f" - dagster - ERROR - job - {run_id} - dbo__Dim_Stock_Metrics - the server said no")


def test_without_verbose_dagsters_failure_events_and_skip_notices_stay_off_the_console(capsys):
    out, err, _ = run(verbose=False)
    shown = out + err + "".join(capsys.readouterr())
    assert "ConnectionError" not in shown and "Traceback" not in shown
    assert "Execution of" not in shown  # Dagster's STEP_FAILURE and RUN_FAILURE events
    assert "downstream" not in shown  # Dagster's "Dependencies for step downstream failed" notice


def test_verbose_leaves_the_event_log_to_dagsters_console_logger(capsys):
    out, err, _ = run(verbose=True)
    assert err == "" and "FAILED" in out  # the stage lines stay
    dagster = capsys.readouterr().err
    assert "STEP_FAILURE" in dagster and "ConnectionError: no route to the server" in dagster
    assert "AAPL: a 2-for-1 split" in dagster and "Dependencies for step downstream failed" in dagster
