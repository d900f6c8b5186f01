"""Settings come from one mapping; defaults are embedded; secrets never show."""

from __future__ import annotations

import pytest

from jankycron.config import Settings, parse_duration, parse_size, redact
from jankycron.errors import ConfigError


def test_defaults_need_no_servers() -> None:
    s = Settings.from_env({})
    assert s.warehouse_url.startswith("duckdb://")
    assert s.store_url.startswith("file://")
    assert s.state_url.startswith("sqlite://")
    assert str(s.jobs_path) == "jobs"
    assert s.statement_timeout == 900


@pytest.mark.parametrize("name, value", [
    ("JANKYCRON_WAREHOUSE_URL", "mysql://x/y"),
    ("JANKYCRON_STORE_URL", "ftp://host/path"),
    ("JANKYCRON_STATE_URL", "redis://localhost"),
    ("JANKYCRON_STATEMENT_TIMEOUT", "soon"),
    ("JANKYCRON_PART_SIZE", "huge"),
])
def test_a_bad_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_passwords_are_redacted_and_secrets_hidden_from_repr() -> None:
    url = "postgresql://loader:hunter2@db.internal:5432/wh"
    assert redact(url) == "postgresql://loader:***@db.internal:5432/wh"
    s = Settings.from_env({"JANKYCRON_WAREHOUSE_URL": url, "AWS_SECRET_ACCESS_KEY": "sekrit",
                           "SENTRY_DSN": "https://key@sentry.example/1"})
    assert "hunter2" not in repr(s) and "sekrit" not in repr(s) and "key@" not in repr(s)
    assert {"hunter2", "sekrit"} <= set(s.secrets())


def test_durations_and_sizes() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    assert parse_duration(45) == 45 and parse_duration("500ms") == 0.5
    assert parse_size("64MB") == 64 * 1024**2 and parse_size("512kb") == 512 * 1024


def test_alert_and_metrics_settings_and_their_secrets() -> None:
    s = Settings.from_env({
        "JANKYCRON_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T1/B2/slacktoken",
        "JANKYCRON_SMTP_URL": "smtps://alerts:mailpass@smtp.internal:465",
        "JANKYCRON_ALERT_FROM": "jankycron@bank.example", "JANKYCRON_METRICS_PORT": "9100"})
    assert (s.metrics_port, s.alert_from) == (9100, "jankycron@bank.example")
    assert "slacktoken" not in repr(s) and "mailpass" not in repr(s)
    assert {"mailpass", "https://hooks.slack.com/services/T1/B2/slacktoken"} <= set(s.secrets())
    assert Settings.from_env({}).metrics_port is None


@pytest.mark.parametrize("name, value", [
    ("JANKYCRON_SLACK_WEBHOOK_URL", "hooks.slack.com/services/T1/B2/slacktoken"),
    ("JANKYCRON_SMTP_URL", "imap://mail.internal"),
    ("JANKYCRON_METRICS_PORT", "ninety"),
    ("JANKYCRON_METRICS_PORT", "70000"),
])
def test_a_bad_alert_or_metrics_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name) as e:
        Settings.from_env({name: value})
    assert "slacktoken" not in str(e.value)  # the webhook URL is the secret: never echoed
