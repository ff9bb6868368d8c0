"""Failed-run alerts: the alert log always, e-mail through Dagster's sensor and Slack
through dagster-slack's when configured, against real servers on loopback. A send that
fails is retried and arrives once; the SMTP password and the Slack token reach neither
the alert, nor the sensor's log, nor an error."""

from __future__ import annotations

import email
import email.policy
import json

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    build_run_status_sensor_context,
    build_sensor_context,
    job,
    op,
)

from financial_etl.automation.alerts import SEND_ATTEMPTS, build_failure_sensors
from financial_etl.calendar import year_partitions
from financial_etl.definitions import build_definitions
from financial_etl.errors import AlertDeliveryError, ConfigError
from financial_etl.runs import REASON_TAG, range_tags
from financial_etl.settings import load_settings
from financial_etl_tests.automation.alert_servers import LoopbackCA, SlackApi, SmtpServer
from financial_etl_tests.helpers import day

PASSWORD = "smtp-Pass-5519-secret"
TOKEN = "xoxb-1234-5678-Slack-Token-Secret"
STEP_ERROR = "BBB.csv:1: the close is missing"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return LoopbackCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def smtp(ca, clean_env):
    server = SmtpServer(user="etl-bot", password=PASSWORD)
    server.start(ca)
    clean_env.setenv("SSL_CERT_FILE", str(ca.bundle))  # Dagster's sender verifies with the default context
    clean_env.setenv("FINANCIAL_ETL_ALERT_SMTP_HOST", server.host)
    clean_env.setenv("FINANCIAL_ETL_ALERT_SMTP_PORT", str(server.port))
    clean_env.setenv("FINANCIAL_ETL_ALERT_SMTP_USER", server.user)
    clean_env.setenv("FINANCIAL_ETL_ALERT_SMTP_PASSWORD", PASSWORD)
    clean_env.setenv("FINANCIAL_ETL_ALERT_SMTP_FROM", "etl@example.com")
    clean_env.setenv("FINANCIAL_ETL_ALERT_SMTP_TO", "oncall@example.com, data@example.com")
    yield server
    server.stop()


@pytest.fixture
def slack(ca, clean_env):
    api = SlackApi()
    api.start(ca)
    clean_env.setenv("SSL_CERT_FILE", str(ca.bundle))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        clean_env.delenv(name, raising=False)
    clean_env.setenv("HTTPS_PROXY", api.proxy_url)  # read by slack_sdk's client, as a deployment's proxy is
    clean_env.setenv("FINANCIAL_ETL_ALERT_SLACK_TOKEN", TOKEN)
    clean_env.setenv("FINANCIAL_ETL_ALERT_SLACK_CHANNEL", "#etl-alerts")
    yield api
    api.stop()


@op
def extract_prices():
    # A step error that quotes both secrets, as a careless library might.
    raise ValueError(f"{STEP_ERROR} (login {PASSWORD}, token {TOKEN})")


@job
def daily_stock_metrics():
    extract_prices()


def _failed_run(instance):
    """A real failed run in a real instance, and its failure event."""
    tags = {**range_tags(day("2024-01-02"), day("2024-01-31")), REASON_TAG: "nightly"}
    result = daily_stock_metrics.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    return result, failure


def _evaluate(name, capfd, log: list[str] | None = None):
    """Evaluate the configured sensor `name` on a failed run; what the sensor's logger
    wrote (Dagster's console handler, stderr) is added to `log`."""
    settings = load_settings()
    sensors = {s.name: s for s in build_failure_sensors(settings, year_partitions(settings.start_date))}
    instance = DagsterInstance.ephemeral()
    result, failure = _failed_run(instance)
    context = build_run_status_sensor_context(
        sensor_name=name,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=failure,
        context=build_sensor_context(instance=instance, sensor_name=name),
    ).for_run_failure()
    capfd.readouterr()  # the run's own output (its error quotes the secrets) is not the sensor's
    try:
        sensors[name](context)
    finally:
        instance.dispose()
        if log is not None:
            log.append(capfd.readouterr().err)
    return result


def _assert_the_alert(text: str, result, *secrets: str) -> None:
    """The alert names run, job, partitions, step and error, and none of the configured secrets."""
    assert result.run_id in text
    assert "daily_stock_metrics" in text
    assert "2024-01-02 to 2024-01-31" in text
    assert STEP_ERROR in text and "extract_prices" in text
    assert secrets and not [s for s in secrets if s in text]


# --- settings -----------------------------------------------------------------------------


SMTP = {  # the least an e-mail alert needs
    "FINANCIAL_ETL_ALERT_SMTP_HOST": "smtp.example.com",
    "FINANCIAL_ETL_ALERT_SMTP_PASSWORD": PASSWORD,
    "FINANCIAL_ETL_ALERT_SMTP_FROM": "etl@example.com",
    "FINANCIAL_ETL_ALERT_SMTP_TO": "a@example.com",
}
SLACK = {"FINANCIAL_ETL_ALERT_SLACK_TOKEN": TOKEN, "FINANCIAL_ETL_ALERT_SLACK_CHANNEL": "#etl"}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"FINANCIAL_ETL_ALERT_WEBHOOK_URL": "https://hooks.example.com/x"},
            "FINANCIAL_ETL_ALERT_WEBHOOK_URL is no longer read",
        ),
        (
            {"FINANCIAL_ETL_ALERT_SMTP_HOST": "smtp.example.com"},
            "needs FINANCIAL_ETL_ALERT_SMTP_PASSWORD, FINANCIAL_ETL_ALERT_SMTP_FROM, FINANCIAL_ETL_ALERT_SMTP_TO",
        ),
        ({"FINANCIAL_ETL_ALERT_SMTP_PASSWORD": PASSWORD}, "set without FINANCIAL_ETL_ALERT_SMTP_HOST"),
        ({**SMTP, "FINANCIAL_ETL_ALERT_SMTP_TO": "oncall"}, "FINANCIAL_ETL_ALERT_SMTP_TO: 'oncall' is not an e-mail"),
        ({**SMTP, "FINANCIAL_ETL_ALERT_SMTP_PORT": "70000"}, "FINANCIAL_ETL_ALERT_SMTP_PORT='70000' is not a port"),
        (
            {**SMTP, "FINANCIAL_ETL_ALERT_SMTP_TLS": "none"},
            "FINANCIAL_ETL_ALERT_SMTP_TLS='none' is not one of starttls",
        ),
        ({"FINANCIAL_ETL_ALERT_SLACK_TOKEN": TOKEN}, "Slack alerts needs FINANCIAL_ETL_ALERT_SLACK_CHANNEL"),
        ({**SLACK, "FINANCIAL_ETL_ALERT_SLACK_CHANNEL": "#a b"}, "FINANCIAL_ETL_ALERT_SLACK_CHANNEL='#a b' is not"),
        (
            {**SLACK, "FINANCIAL_ETL_ALERT_SLACK_TOKEN": f"{TOKEN} x"},
            "FINANCIAL_ETL_ALERT_SLACK_TOKEN holds whitespace",
        ),
    ],
)
def test_bad_alert_settings_fail_naming_the_setting_and_never_the_secret(env, named):
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env)
    assert named in str(excinfo.value)
    assert PASSWORD not in str(excinfo.value) and TOKEN not in str(excinfo.value)


def test_alert_settings_default_the_port_and_user_and_keep_secrets_out_of_repr():
    settings = load_settings({**SMTP, **SLACK, "FINANCIAL_ETL_ALERT_SMTP_TO": "a@example.com, b@example.com"})
    email_alerts = settings.alert_email
    assert (email_alerts.port, email_alerts.security, email_alerts.user) == (587, "STARTTLS", "etl@example.com")
    assert email_alerts.recipients == ("a@example.com", "b@example.com")
    assert PASSWORD not in repr(settings) and TOKEN not in repr(settings)
    assert load_settings({**SMTP, "FINANCIAL_ETL_ALERT_SMTP_TLS": "ssl"}).alert_email.port == 465


# --- which sensors --------------------------------------------------------------------------


def test_the_alert_log_sensor_is_always_there_and_email_and_slack_only_when_configured(workdir, clean_env, smtp, slack):
    defs = build_definitions(load_settings())
    for name in ("run_failure_alerts", "run_failure_email", "run_failure_slack"):
        assert defs.resolve_sensor_def(name).default_status == DefaultSensorStatus.RUNNING
    for name in (
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_USER",
        "SMTP_PASSWORD",
        "SMTP_FROM",
        "SMTP_TO",
        "SLACK_TOKEN",
        "SLACK_CHANNEL",
    ):
        clean_env.delenv(f"FINANCIAL_ETL_ALERT_{name}")
    settings = load_settings()
    assert [s.name for s in build_failure_sensors(settings, year_partitions(settings.start_date))] == [
        "run_failure_alerts"
    ]


# --- the alert log --------------------------------------------------------------------------


def test_the_alert_log_records_the_failed_run_without_secrets(workdir, smtp, slack, capfd):
    result = _evaluate("run_failure_alerts", capfd, log := [])
    line = (workdir / "data" / "alerts.log").read_text().splitlines()[-1]
    record = json.loads(line)
    assert (record["run_id"], record["job"], record["partitions"], record["reason"]) == (
        result.run_id,
        "daily_stock_metrics",
        "2024-01-02 to 2024-01-31",
        "nightly",
    )
    assert record["failed_steps"][0]["step"] == "extract_prices"
    _assert_the_alert(line, result, PASSWORD, TOKEN)
    _assert_the_alert(log[0], result, PASSWORD, TOKEN)
    assert smtp.messages == [] and slack.posts == []  # the log sensor sends nothing


# --- e-mail -----------------------------------------------------------------------------------


def test_a_failed_run_is_emailed_through_the_local_smtp_server(workdir, smtp, capfd):
    result = _evaluate("run_failure_email", capfd, log := [])
    assert len(smtp.messages) == 1
    message = email.message_from_bytes(smtp.messages[0], policy=email.policy.default)
    assert [a.addr_spec for a in message["To"].addresses] == ["oncall@example.com", "data@example.com"]
    assert "daily_stock_metrics" in message["Subject"] and "2024-01-02 to 2024-01-31" in message["Subject"]
    _assert_the_alert(message.get_content(), result, PASSWORD)
    assert smtp.logins == [("etl-bot", True)]  # over STARTTLS, with the configured login
    assert PASSWORD not in log[0]


def test_an_email_refused_once_is_retried_and_arrives_once(workdir, smtp, capfd):
    smtp.refuse = 1
    result = _evaluate("run_failure_email", capfd, log := [])
    assert smtp.refused == 1 and len(smtp.messages) == 1
    message = email.message_from_bytes(smtp.messages[0], policy=email.policy.default)
    _assert_the_alert(message.get_content(), result, PASSWORD)
    assert f"attempt 1 of {SEND_ATTEMPTS}: SMTPDataError" in log[0]


def test_a_wrong_smtp_password_fails_the_tick_naming_the_login_error_not_the_password(workdir, smtp, capfd):
    smtp.password = "another-password"
    with pytest.raises(AlertDeliveryError) as excinfo:
        _evaluate("run_failure_email", capfd, log := [])
    assert f"after {SEND_ATTEMPTS} attempts: SMTPAuthenticationError" in str(excinfo.value)
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__ is False
    assert excinfo.value.__context__ is None
    assert len(smtp.logins) == SEND_ATTEMPTS and smtp.messages == []
    assert PASSWORD not in str(excinfo.value) + log[0]


# --- Slack --------------------------------------------------------------------------------------


def test_a_failed_run_is_posted_to_slack_through_the_local_api(workdir, slack, capfd):
    result = _evaluate("run_failure_slack", capfd, log := [])
    assert len(slack.posts) == 1
    post = slack.posts[0]
    assert (post["path"], post["channel"], post["authorization"]) == (
        "/api/chat.postMessage",
        "#etl-alerts",
        f"Bearer {TOKEN}",
    )
    assert slack.tunnels == ["slack.com:443"]
    _assert_the_alert(post["text"], result, TOKEN)
    _assert_the_alert(json.dumps(post["blocks"]), result, TOKEN)
    assert TOKEN not in log[0]


def test_a_slack_post_failing_once_is_retried_and_arrives_once_with_the_token_redacted(workdir, slack, capfd):
    slack.fail = 1
    result = _evaluate("run_failure_slack", capfd, log := [])
    assert len(slack.failed) == 1 and len(slack.posts) == 1
    _assert_the_alert(slack.posts[0]["text"], result, TOKEN)
    logged = log[0]
    assert "attempt 1 of" in logged and "gateway rejected Bearer ***" in logged  # the error, its token redacted
    assert TOKEN not in logged


def test_a_slack_post_that_keeps_failing_raises_an_error_without_the_token(workdir, slack, capfd):
    slack.fail = SEND_ATTEMPTS
    with pytest.raises(AlertDeliveryError) as excinfo:
        _evaluate("run_failure_slack", capfd, log := [])
    assert "gateway rejected Bearer ***" in str(excinfo.value)
    assert excinfo.value.__cause__ is None and excinfo.value.__context__ is None
    assert len(slack.failed) == SEND_ATTEMPTS and slack.posts == []
    assert TOKEN not in str(excinfo.value) + log[0]


# --- through Dagster's ticks ------------------------------------------------------------------


def test_ticks_send_each_failed_run_once_and_never_again_after_its_retries_ran_out(workdir, slack):
    """Why the retries run within the tick: Dagster moves the sensor's cursor past a run
    even when sending for it raised, so no later tick tries it again."""
    (workdir / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(tempdir=str(workdir / "dagster_home"))
    settings = load_settings()
    sensor = build_failure_sensors(settings, year_partitions(settings.start_date))[-1]
    assert sensor.name == "run_failure_slack"

    def tick(cursor):
        with build_sensor_context(instance=instance, cursor=cursor, sensor_name=sensor.name) as context:
            return sensor.evaluate_tick(context)

    try:
        started = tick(None)  # the sensor starts after the runs already recorded
        slack.fail = SEND_ATTEMPTS
        lost, _ = _failed_run(instance)
        failed_tick = tick(started.cursor)
        [reaction] = failed_tick.dagster_run_reactions
        assert reaction.dagster_run.run_id == lost.run_id
        error = reaction.error.to_string()
        assert "AlertDeliveryError" in error and "gateway rejected Bearer ***" in error and TOKEN not in error
        assert len(slack.failed) == SEND_ATTEMPTS and slack.posts == []
        after = tick(failed_tick.cursor)
        assert after.dagster_run_reactions == [] and len(slack.failed) == SEND_ATTEMPTS  # not tried again

        posted, _ = _failed_run(instance)
        sent = tick(after.cursor)
        assert [r.error for r in sent.dagster_run_reactions] == [None]
        assert tick(sent.cursor).dagster_run_reactions == []
        assert len(slack.posts) == 1
        _assert_the_alert(slack.posts[0]["text"], posted, TOKEN)
    finally:
        instance.dispose()
