"""Failure alerts: every failed run recorded in the alert log, and sent to a webhook if set."""

import datetime as dt
import json
import urllib.request
from pathlib import Path

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from financial_etl.errors import ConfigError
from financial_etl.runs import END_TAG, REASON_TAG, START_TAG, run_window
from financial_etl.settings import Settings


def build_failure_sensor(settings: Settings, partitions_def, alert_log: Path, webhook_url: str | None):
    @run_failure_sensor(
        name="run_failure_alerts",
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Records every failed run (assets, partitions, error) in {alert_log} and the sensor's log.",
    )
    def run_failure_alerts(context: RunFailureSensorContext):
        run = context.dagster_run
        tags = run.tags
        try:
            window = run_window(tags, partitions_def, settings)
            partitions = f"{window[0]} to {window[1]}" if window else ""
        except ConfigError:  # the run may have failed for that very tag: say what it held
            partitions = f"{tags.get(START_TAG, '?')} to {tags.get(END_TAG, '?')} (run tags, not dates)"
        steps = []
        for event in context.get_step_failure_events():
            error = event.step_failure_data.error if event.step_failure_data else None
            while error is not None and error.cause is not None:
                error = error.cause
            steps.append({"step": event.step_key, "error": error.message.strip() if error else ""})
        record = {
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "run_id": run.run_id,
            "job": run.job_name,
            "assets": sorted(k.to_user_string() for k in (run.asset_selection or [])),
            "partitions": partitions,
            "reason": tags.get(REASON_TAG, ""),
            "failed_steps": steps,
            "message": context.failure_event.message or "",
        }
        alert_log.parent.mkdir(parents=True, exist_ok=True)
        with alert_log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        summary = "; ".join(f"{s['step']}: {s['error'][:200]}" for s in steps) or record["message"]
        context.log.error(f"run {run.run_id} ({run.job_name}, partitions {partitions or 'none'}) failed: {summary}")
        if webhook_url:
            request = urllib.request.Request(
                webhook_url, data=json.dumps(record).encode(), headers={"Content-Type": "application/json"}
            )
            try:
                urllib.request.urlopen(request, timeout=5).close()
            except OSError as exc:
                context.log.warning(f"alert webhook unreachable ({type(exc).__name__}); the alert is in {alert_log}")

    return run_failure_alerts
