"""Alerts reach people per job, never fail a job, and never carry a secret.

Slack and webhook routes post to a real HTTP server on loopback; e-mail goes to a small real
SMTP listener; Sentry runs as the real SDK client with a transport that keeps the envelopes
(``sentry_sdk.init(transport=...)`` is the SDK's own hook for where envelopes go).
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler

import pytest
import sentry_sdk
from conftest import free_port, http_server
from sentry_sdk.transport import Transport

from jankycron.alerts import Alerts, bind_sentry, check_route, init_sentry, monitor_slug
from jankycron.config import Settings
from jankycron.discovery import discover
from jankycron.job import job
from jankycron.runner import Context, run_job

SLACK_TOKEN = "T0001/B0002/sekritSlackToken"
HOOK_TOKEN = "hookTokenXYZ"
DB_PASSWORD = "hunter2"
MONDAY_0210 = datetime(2026, 11, 23, 2, 10, tzinfo=UTC)  # inside "mon 02:00-02:30"
MONDAY_0300 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------ a receiver
class Receiver:
    """A real HTTP server: records every POST; answers 500 on paths starting /broken."""

    url: str  # set while it serves

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append((self.path, json.loads(body)))
                status = 500 if self.path.startswith("/broken") else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"oops")

            def log_message(self, *args) -> None:
                pass

        return Handler

    def to(self, path: str) -> list[dict]:
        return [body for p, body in self.posts if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    with http_server(r.handler()) as r.url:
        yield r


def settings_for(receiver: Receiver, **extra: str) -> Settings:
    return Settings.from_env({
        "JANKYCRON_SLACK_WEBHOOK_URL": f"{receiver.url}/services/{SLACK_TOKEN}",
        "JANKYCRON_WAREHOUSE_URL": f"postgresql://loader:{DB_PASSWORD}@db.internal:5432/wh",
        "JANKYCRON_MAINTENANCE_WINDOW": "mon 02:00-02:30",
        **extra,
    })


def make_job(name: str, *alert: str):
    return job(schedule="0 4 * * *", table="orders", key="id", alert=alert,
               owner="data-eng", name=name)(lambda run: iter(()))


RUN = {"run_id": "20261126T040001000000Z-abc123", "job": "orders", "status": "failed",
       "start": "2026-11-25T04:00:00Z", "end": "2026-11-26T04:00:00Z", "error": "x"}
ERROR = (f"TerminalError: cannot reach postgresql://loader:{DB_PASSWORD}@db.internal/wh\n"
         "Traceback (most recent call last):\n  File 'jobs/orders.py', line 3")


# ------------------------------------------------------------------------------ routes
def test_a_failed_run_reaches_slack_and_the_webhook_with_what_an_operator_needs(
        receiver: Receiver) -> None:
    j = make_job("orders", "slack:#data-eng", f"{receiver.url}/hook/{HOOK_TOKEN}")
    Alerts(settings_for(receiver), now=MONDAY_0300).run_failed(j, RUN, ERROR)

    [slack] = receiver.to(f"/services/{SLACK_TOKEN}")
    assert slack["channel"] == "#data-eng"
    for text in (slack["text"], json.dumps(receiver.to(f"/hook/{HOOK_TOKEN}"))):
        assert "orders" in text and "20261126T040001000000Z-abc123" in text
        assert "2026-11-25T04:00:00Z..2026-11-26T04:00:00Z" in text
        assert "TerminalError: cannot reach postgresql://loader:***@db.internal/wh" in text
        assert "Traceback" not in text  # the first line only
        assert DB_PASSWORD not in text and SLACK_TOKEN not in text
    [hook] = receiver.to(f"/hook/{HOOK_TOKEN}")
    assert hook["event"] == "run_failed" and hook["job"] == "orders"
    assert hook["run_id"] == RUN["run_id"] and hook["owner"] == "data-eng"
    assert (hook["start"], hook["end"]) == (RUN["start"], RUN["end"])


def test_a_route_that_answers_500_or_refuses_does_not_raise_and_the_others_still_go(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    refused = f"http://127.0.0.1:{free_port()}/dead/{HOOK_TOKEN}"
    j = make_job("orders", f"{receiver.url}/broken/{HOOK_TOKEN}", refused, "slack:#data-eng")
    with caplog.at_level(logging.INFO, logger="jankycron.alerts"):
        Alerts(settings_for(receiver)).run_failed(j, RUN, "boom")  # must not raise

    assert len(receiver.to(f"/services/{SLACK_TOKEN}")) == 1  # sent after two failures
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 2, failures
    assert "HTTP 500" in failures[0] and "ConnectionError" in failures[1]
    assert all("orders" in f and RUN["run_id"] in f for f in failures)
    assert HOOK_TOKEN not in caplog.text and SLACK_TOKEN not in caplog.text


def test_a_slack_outage_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env({"JANKYCRON_SLACK_WEBHOOK_URL":
                           f"http://127.0.0.1:{free_port()}/services/{SLACK_TOKEN}"})
    Alerts(s).run_lost(make_job("orders", "slack:#data-eng"), RUN, "no heartbeat for 5m")
    assert "alert to slack:#data-eng not sent: ConnectionError" in caplog.text
    assert SLACK_TOKEN not in caplog.text


def test_the_maintenance_window_holds_back_warehouse_alerts_only(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    j = make_job("orders", "slack:#data-eng")
    inside = Alerts(settings_for(receiver), now=lambda: MONDAY_0210)
    with caplog.at_level(logging.INFO, logger="jankycron.alerts"):
        inside.run_failed(j, RUN, "warehouse unreachable", warehouse=True)
    assert receiver.to(f"/services/{SLACK_TOKEN}") == []
    assert "held back" in caplog.text and "mon 02:00-02:30" in caplog.text

    inside.run_failed(j, RUN, "KeyError: 'id'")  # a job's own bug is not the warehouse's
    Alerts(settings_for(receiver), now=MONDAY_0300).run_failed(
        j, RUN, "warehouse unreachable", warehouse=True)  # after the window: page
    texts = [b["text"] for b in receiver.to(f"/services/{SLACK_TOKEN}")]
    assert len(texts) == 2 and "KeyError" in texts[0] and "warehouse unreachable" in texts[1]


def test_missed_and_lost_runs_say_what_happened(receiver: Receiver) -> None:
    j = make_job("orders", f"{receiver.url}/hook")
    a = Alerts(settings_for(receiver))
    a.run_missed(j, datetime(2026, 11, 24, 4, tzinfo=UTC), datetime(2026, 11, 26, 5, tzinfo=UTC))
    a.run_missed(j, None, datetime(2026, 11, 26, 5, tzinfo=UTC))
    a.run_lost(j, RUN, "worker stopped heartbeating at 2026-11-26T04:03:00Z")
    missed, never, lost = receiver.to("/hook")
    assert missed["event"] == "run_missed" and "2026-11-24T04:00:00Z" in missed["text"]
    assert "2026-11-26T05:00:00Z" in missed["text"]
    assert "no successful run yet" in never["text"]
    assert lost["event"] == "run_lost" and lost["run_id"] == RUN["run_id"]
    assert "stopped heartbeating" in lost["text"]


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: no TLS, no auth."""

    def handle(self) -> None:
        self.wfile.write(b"220 test ESMTP\r\n")
        data, in_data = [], False
        while line := self.rfile.readline():
            if in_data:
                if line == b".\r\n":
                    self.server.messages.append(b"".join(data).decode())
                    in_data, data = False, []
                    self.wfile.write(b"250 queued\r\n")
                else:
                    data.append(line)
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.wfile.write(b"250-test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                in_data = True
                self.wfile.write(b"354 go on\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_an_email_route_sends_through_smtp_and_a_login_without_tls_is_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPHandler)
    server.messages = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        j = make_job("orders", "mailto:ops@bank.example", "email:dba@bank.example")
        s = Settings.from_env({"JANKYCRON_SMTP_URL": f"smtp://127.0.0.1:{port}",
                               "JANKYCRON_ALERT_FROM": "jankycron@bank.example"})
        Alerts(s).run_failed(j, RUN, ERROR)
        assert len(server.messages) == 2
        mail = server.messages[0]
        assert "To: ops@bank.example" in mail and "From: jankycron@bank.example" in mail
        assert "Subject: [jankycron] orders failed: TerminalError" in mail
        assert RUN["run_id"] in mail

        with_login = Settings.from_env(
            {"JANKYCRON_SMTP_URL": f"smtp://alerts:mailpass@127.0.0.1:{port}"})
        Alerts(with_login).run_failed(make_job("orders", "mailto:ops@bank.example"), RUN, "x")
        assert len(server.messages) == 2  # not sent: the password would cross in clear
        assert "offers no TLS; credentials not sent" in caplog.text
        assert "mailpass" not in caplog.text
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("route, error", [
    ("slack:#data-eng", None),
    ("slack:@alice", None),
    ("https://hooks.example/alerts/abc", None),
    ("mailto:ops@bank.example,dba@bank.example", None),
    ("email:ops@bank.example", None),
    ("slack:data-eng", "expected slack:#channel"),
    ("slack:#Data Eng", "expected slack:#channel"),
    ("https:///nohost", "not a URL with a host"),
    ("mailto:nobody", "expected mailto:name@domain"),
    ("pagerduty:svc-key-123", "alert route pagerduty:...: expected slack:#channel"),
    ("", "expected slack:#channel"),
])
def test_check_route_says_what_is_wrong(route: str, error: str | None) -> None:
    got = check_route(route)
    assert got is None if error is None else error in got
    assert "svc-key-123" not in (got or "")  # an unknown route's target may be a key


def test_check_route_names_the_missing_setting() -> None:
    bare = Settings.from_env({})
    assert "JANKYCRON_SLACK_WEBHOOK_URL" in check_route("slack:#data-eng", bare)
    assert "JANKYCRON_SMTP_URL" in check_route("mailto:ops@bank.example", bare)
    assert check_route("https://hooks.example/x", bare) is None


# ------------------------------------------------------------------------------ Sentry
class KeepEnvelopes(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.envelopes = []

    def capture_envelope(self, envelope) -> None:
        self.envelopes.append(envelope)

    def items(self, kind: str) -> list[dict]:
        return [i.payload.json for e in self.envelopes for i in e.items if i.type == kind]

    def raw(self) -> str:
        return b"".join(e.serialize() for e in self.envelopes).decode("utf-8", "replace")


@pytest.fixture
def sentry(receiver: Receiver) -> Iterator[tuple[KeepEnvelopes, Settings]]:
    transport = KeepEnvelopes()
    s = settings_for(receiver, SENTRY_DSN="https://publickey@sentry.example/42")
    init_sentry(s, transport=transport)
    yield transport, s
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)  # back to no client for the next tests


def test_each_job_gets_its_own_sentry_issue_tagged_with_its_run(sentry) -> None:
    transport, s = sentry
    a = Alerts(s)
    a.run_failed(make_job("orders"), RUN, ERROR)
    a.run_failed(make_job("orders"), {**RUN, "run_id": "second"}, "ValueError: other text")
    a.run_failed(make_job("invoices"), {**RUN, "job": "invoices"}, ERROR)

    events = transport.items("event")
    assert [e["fingerprint"] for e in events] == [
        ["jankycron-job", "orders"], ["jankycron-job", "orders"], ["jankycron-job", "invoices"]]
    tags = events[0]["tags"]
    assert tags["job"] == "orders" and tags["run_id"] == RUN["run_id"]
    assert (tags["interval_start"], tags["interval_end"]) == (RUN["start"], RUN["end"])
    assert events[1]["tags"]["run_id"] == "second"
    assert DB_PASSWORD not in transport.raw() and "publickey" not in json.dumps(events)


def test_a_failed_run_is_one_sentry_event_not_one_per_log_line(sentry, duck_ws) -> None:
    """The runner logs the failure at ERROR (for the worker's log) and the task alerts it:
    Sentry gets the alert only, so one failed run is one event in its job's issue."""
    transport, s = sentry
    duck_ws.write_job("broken", """
        from jankycron import job

        @job(schedule="0 0 * * *", table="t", key="id")
        def broken(run):
            raise ValueError("the source sent nonsense")
            yield {}
    """)
    registry, _ = discover(duck_ws.jobs)
    the_job = registry.get("broken")
    ctx = Context(duck_ws.settings)
    with sentry_sdk.isolation_scope():
        bind_sentry(the_job, RUN)
        with pytest.raises(ValueError):
            run_job(ctx, the_job, the_job.interval_on(datetime(2026, 11, 20).date()))
        [row] = ctx.ledger.history("broken")
        Alerts(s).run_failed(the_job, row, row["error"])
    ctx.close()
    [event] = transport.items("event")
    assert event["fingerprint"] == ["jankycron-job", "broken"]
    assert "the source sent nonsense" in json.dumps(event)


def test_an_error_captured_inside_a_bound_run_groups_with_its_job_and_is_scrubbed(
        sentry) -> None:
    transport, _ = sentry
    with sentry_sdk.isolation_scope():
        bind_sentry(make_job("orders"), RUN)
        try:
            raise RuntimeError(f"lost postgresql://loader:{DB_PASSWORD}@db.internal/wh")
        except RuntimeError:
            sentry_sdk.capture_exception()
    [event] = transport.items("event")
    assert event["fingerprint"] == ["jankycron-job", "orders"]
    assert event["tags"]["run_id"] == RUN["run_id"]
    assert DB_PASSWORD not in transport.raw()


def test_sentry_and_the_routes_never_get_a_job_s_token_or_a_query_password(
        receiver: Receiver) -> None:
    """Secrets the job read from its environment (GITHUB_TOKEN) and a password in a URL's
    query string are scrubbed from Sentry events (alerts and captured exceptions alike) and
    from the webhook's payload."""
    token, query_password = "ghp_alertToken1234567890", "QueryPassw0rd"
    transport = KeepEnvelopes()
    s = settings_for(receiver, SENTRY_DSN="https://publickey@sentry.example/42",
                     GITHUB_TOKEN=token,
                     JANKYCRON_STATE_URL=f"postgresql://u@db.internal/x?password={query_password}")
    init_sentry(s, transport=transport)
    try:
        j = make_job("orders", f"{receiver.url}/hook/{HOOK_TOKEN}")
        error = (f"RuntimeError: 401 for token={token}; ledger "
                 f"postgresql://u@db.internal/x?password={query_password}")
        Alerts(s, now=MONDAY_0300).run_failed(j, RUN, error)
        with sentry_sdk.isolation_scope():
            bind_sentry(j, RUN)
            try:
                raise RuntimeError(error)
            except RuntimeError:
                sentry_sdk.capture_exception()
        sentry_sdk.flush()
        events = transport.items("event")
        assert len(events) == 2
        assert "401 for token=***" in transport.raw()
        payload = json.dumps(receiver.to(f"/hook/{HOOK_TOKEN}"))
        assert "401 for token=***" in payload and "password=***" in payload
        for text in (transport.raw(), payload):
            assert token not in text and query_password not in text
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)


def test_a_crons_check_in_per_job_says_ok_once_loaded(sentry) -> None:
    transport, s = sentry
    a, j = Alerts(s), make_job("orders_daily")
    check_in_id = a.checkin(j, "in_progress")
    assert check_in_id
    assert a.checkin(j, "ok", check_in_id) == check_in_id

    started, done = transport.items("check_in")
    assert done["status"] == "ok" and done["check_in_id"] == check_in_id
    assert started["status"] == "in_progress"
    assert done["monitor_slug"] == monitor_slug(j) == "jankycron-orders-daily"
    config = done["monitor_config"]
    assert config["schedule"] == {"type": "crontab", "value": "0 4 * * *"}
    assert config["timezone"] == "UTC"
    with pytest.raises(ValueError, match="check-in status 'done'"):
        a.checkin(j, "done")


def test_without_a_dsn_nothing_goes_to_sentry(receiver: Receiver) -> None:
    s = settings_for(receiver)
    init_sentry(s)  # no-op
    assert not sentry_sdk.get_client().is_active()
    assert Alerts(s).checkin(make_job("orders"), "in_progress") is None


def test_in_worker_and_beat_sentry_runs_with_the_celery_integration(sentry) -> None:
    from sentry_sdk.integrations.celery import CeleryIntegration

    transport, s = sentry
    init_sentry(s, celery=True, transport=transport)
    integration = sentry_sdk.get_client().get_integration(CeleryIntegration)
    assert integration is not None
    assert integration.monitor_beat_tasks is False  # jankycron checks in per job itself
