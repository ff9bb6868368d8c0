"""Failed-run alerts through Dagster's run failure sensors.

Every failed run is recorded in the alert log and the sensor's log (`run_failure_alerts`,
always on). When configured, Dagster's e-mail sensor and dagster-slack's Slack sensor send
it too: their message is built here, each send is retried, and the SMTP password and the
Slack token are redacted from the alert and from any error.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from dagster import (
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    make_email_on_run_failure_sensor,
    run_failure_sensor,
)
from dagster_slack import make_slack_on_run_failure_sensor
from tenacity import Retrying, stop_after_attempt, wait_exponential

from financial_etl.errors import AlertDeliveryError, ConfigError, redact_secrets
from financial_etl.runs import END_TAG, REASON_TAG, START_TAG, run_window
from financial_etl.settings import Settings

# Dagster advances a run status sensor's cursor past a run even when the sensor raised
# (dagster/_daemon/sensor.py, _handle_run_reactions): a failed send is never re-evaluated,
# so it is retried here, within one tick.
SEND_ATTEMPTS = 4
SEND_WAIT = wait_exponential(multiplier=1, max=8)  # 1, 2, 4 s between attempts
SLACK_TEXT_LIMIT = 2900  # a Slack section block holds at most 3000 characters
STEP_ERROR_LIMIT = 500


def alert_secrets(settings: Settings) -> tuple[str, ...]:
    return tuple(
        s
        for s in (
            settings.alert_email and settings.alert_email.password,
            settings.alert_slack and settings.alert_slack.token,
        )
        if s
    )


def redact(value, secrets: Sequence[str]):
    """The value (a string, or lists and dicts of them) with every secret replaced."""
    if isinstance(value, str):
        return redact_secrets(value, secrets)
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    return value


def failure_record(context: RunFailureSensorContext, settings: Settings, partitions_def) -> dict:
    """What failed: run, job, assets, partitions, reason, each failed step's root error."""
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
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "run_id": run.run_id,
        "job": run.job_name,
        "assets": sorted(k.to_user_string() for k in (run.asset_selection or [])),
        "partitions": partitions,
        "reason": tags.get(REASON_TAG, ""),
        "failed_steps": steps,
        "message": context.failure_event.message or "",
    }
    return redact(record, alert_secrets(settings))


def summary(record: dict) -> str:
    return "; ".join(f"{s['step']}: {s['error'][:200]}" for s in record["failed_steps"]) or record["message"]


def alert_lines(record: dict) -> list[str]:
    """The alert as people read it, in e-mail and Slack."""
    lines = [
        f"Run {record['run_id']} of job {record['job']} failed.",
        f"Partitions: {record['partitions'] or 'none'}",
        f"Assets: {', '.join(record['assets']) or 'none'}",
    ]
    if record["reason"]:
        lines.append(f"Reason: {record['reason']}")
    lines += [f"Failed step {s['step']}: {s['error'][:STEP_ERROR_LIMIT]}" for s in record["failed_steps"]]
    if not record["failed_steps"]:
        lines.append(f"Error: {record['message'][:STEP_ERROR_LIMIT]}")
    return lines


def build_failure_sensor(settings: Settings, partitions_def) -> SensorDefinition:
    alert_log: Path = settings.alert_log

    @run_failure_sensor(
        name="run_failure_alerts",
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Records every failed run (assets, partitions, error) in {alert_log} and the sensor's log.",
    )
    def run_failure_alerts(context: RunFailureSensorContext):
        record = failure_record(context, settings, partitions_def)
        alert_log.parent.mkdir(parents=True, exist_ok=True)
        with alert_log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        context.log.error(
            f"run {record['run_id']} ({record['job']}, partitions {record['partitions'] or 'none'}) "
            f"failed: {summary(record)}"
        )

    return run_failure_alerts


class _SendFailed(Exception):
    """One failed attempt; the library's error, redacted, is already in the sensor's log."""


def deliver(send: Callable[[], None], what: str, secrets: Sequence[str], context: RunFailureSensorContext) -> None:
    """Send, retried; a send that still fails raises AlertDeliveryError with the error's
    text redacted and nothing chained (a library's error may quote a credential)."""
    failures: list[str] = []

    def attempt() -> None:
        try:
            send()
        except Exception as exc:  # noqa: BLE001 - any library error: SMTP, socket, TLS, Slack API
            failures.append(redact(f"{type(exc).__name__}: {exc}", secrets))
            context.log.warning(f"{what}, attempt {len(failures)} of {SEND_ATTEMPTS}: {failures[-1]}")
            raise _SendFailed from None

    try:
        Retrying(stop=stop_after_attempt(SEND_ATTEMPTS), wait=SEND_WAIT, reraise=True)(attempt)
        return
    except _SendFailed:
        pass
    raise AlertDeliveryError(f"{what} after {SEND_ATTEMPTS} attempts: {failures[-1]}; the alert is in the alert log")


def _retried(library_sensor: SensorDefinition, name: str, description: str, settings: Settings) -> SensorDefinition:
    """Our sensor calls the library's (public direct invocation), which builds and sends
    the message, under `deliver`'s retry and redaction."""
    secrets = alert_secrets(settings)

    @run_failure_sensor(name=name, description=description, default_status=DefaultSensorStatus.RUNNING)
    def send_alert(context: RunFailureSensorContext):
        deliver(
            lambda: library_sensor(context),
            f"{name}: alert for run {context.dagster_run.run_id} not sent",
            secrets,
            context,
        )

    return send_alert


def build_email_sensor(settings: Settings, partitions_def) -> SensorDefinition:
    email = settings.alert_email
    assert email is not None

    def subject(context: RunFailureSensorContext) -> str:
        record = failure_record(context, settings, partitions_def)
        # One line: a partition tag holding a line break must not start a new header.
        return " ".join(f"Dagster run failed: {record['job']}, partitions {record['partitions'] or 'none'}".split())

    def body(context: RunFailureSensorContext) -> str:  # Dagster sends it as text/html
        return "<br>".join(html.escape(line) for line in alert_lines(failure_record(context, settings, partitions_def)))

    sensor = make_email_on_run_failure_sensor(
        email_from=email.sender,
        email_password=email.password,
        email_to=list(email.recipients),
        email_body_fn=body,
        email_subject_fn=subject,
        smtp_host=email.host,
        smtp_type=email.security,
        smtp_port=email.port,
        smtp_user=email.user,
        name="run_failure_email",
    )
    return _retried(
        sensor,
        "run_failure_email",
        f"E-mails every failed run to {', '.join(email.recipients)} through {email.host}:{email.port}.",
        settings,
    )


def build_slack_sensor(settings: Settings, partitions_def) -> SensorDefinition:
    slack = settings.alert_slack
    assert slack is not None

    def text(context: RunFailureSensorContext) -> str:
        lines = alert_lines(failure_record(context, settings, partitions_def))
        return html.escape("\n".join(lines), quote=False)[:SLACK_TEXT_LIMIT]  # Slack's mrkdwn escapes & < >

    sensor = make_slack_on_run_failure_sensor(
        channel=slack.channel, slack_token=slack.token, text_fn=text, name="run_failure_slack"
    )
    return _retried(sensor, "run_failure_slack", f"Posts every failed run to Slack channel {slack.channel}.", settings)


def build_failure_sensors(settings: Settings, partitions_def) -> list[SensorDefinition]:
    """The alert log always; e-mail and Slack when their settings are given."""
    sensors = [build_failure_sensor(settings, partitions_def)]
    if settings.alert_email:
        sensors.append(build_email_sensor(settings, partitions_def))
    if settings.alert_slack:
        sensors.append(build_slack_sensor(settings, partitions_def))
    return sensors
