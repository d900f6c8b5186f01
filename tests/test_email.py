"""The email events job reads Mailgun's Events API from a local server that behaves like it:
every event of every page in the run's window lands once, the window is the run's hour shifted
back by the provider's lag so that late events are read by the next run instead of missed,
rate limits are waited out and 5xx retried, a rerun duplicates nothing, and a bad key is one
line that never shows the key."""

from __future__ import annotations

import base64
import logging
import math
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT, Workspace, warehouse_rows
from mailgun_server import API_KEY, DOMAIN, Fault, Mailgun

from jankycron.errors import ConfigError, TransientError
from jankycron.sources import email

HOUR = "2026-11-20T10:00"
START = datetime(2026, 11, 20, 10, tzinfo=UTC)  # the run for [10:00, 11:00)...
END = START + timedelta(hours=1)
LO, HI = START - timedelta(minutes=30), END - timedelta(minutes=30)  # ...reads [09:30, 10:30)
LATER = END + timedelta(days=1)  # "now" in the unit tests: the hour is long settled
TRACKED = ["delivered", "failed", "opened", "clicked", "unsubscribed", "complained"]


def env_for(g: Mailgun, key: str = API_KEY, **extra: str) -> dict[str, str]:
    return {"MAILGUN_BASE_URL": g.base, "MAILGUN_DOMAIN": DOMAIN, "MAILGUN_API_KEY": key,
            **extra}


def provider(g: Mailgun, waits: list[float], **extra: str) -> email.EmailProvider:
    return email.provider_from_env(env_for(g, **extra), sleep=waits.append)


def build(g: Mailgun) -> set[str]:
    """Events of every kind inside [09:30, 10:30), at its edges and outside it, plus kinds the
    job does not ask for. Returns the ids that must land."""
    expected = set()
    inside = [timedelta(0), timedelta(minutes=1), timedelta(minutes=17, microseconds=250),
              timedelta(minutes=42), timedelta(minutes=59, seconds=59, microseconds=999000)]
    for off in inside:
        for kind in TRACKED:
            expected.add(g.add(kind, LO + off)["id"])
        g.add("accepted", LO + off)  # not asked for: neither requested nor kept
        g.add("stored", LO + off)
    for when in (LO - timedelta(microseconds=1000), LO - timedelta(hours=2), HI,
                 HI + timedelta(minutes=10), END + timedelta(hours=3)):
        for kind in TRACKED:
            g.add(kind, when)
    return expected


# ------------------------------------------------------------------------------ the pull
def test_every_page_is_followed_and_each_event_of_the_window_lands_once():
    g = Mailgun(page_size=3)
    waits: list[float] = []
    with g.serve():
        expected = build(g)
        rows = list(email.pull(START, END, provider(g, waits), now=LATER))

    assert {r["id"] for r in rows} == expected
    assert len(rows) == len(expected)  # each event once
    assert all(LO <= r["occurred_at"] < HI for r in rows)
    assert [r["occurred_at"] for r in rows] == sorted(r["occurred_at"] for r in rows)
    assert waits == []
    # one query for the shifted window, ascending, only the tracked event types...
    first = g.seen[0]
    assert first.path == f"/v3/{DOMAIN}/events"
    assert first.query == {"begin": str(int(LO.timestamp())), "end": str(int(HI.timestamp())),
                           "ascending": "yes", "limit": "300",
                           "event": "delivered OR failed OR opened OR clicked OR "
                                    "unsubscribed OR complained"}
    # ...then paging.next URLs, 3 events a page, up to the event stamped exactly at the end
    # (Mailgun's end is inclusive: the job stops there without asking for more pages)
    pages = g.pages_served()
    assert all(s.path.startswith(f"/v3/{DOMAIN}/events/") for s in pages[1:])
    assert len(pages) == math.ceil((len(expected) + 1) / 3)


def test_the_list_ends_at_an_empty_page():
    g = Mailgun(page_size=2)
    with g.serve():
        ids = {g.add("delivered", LO + timedelta(minutes=m))["id"] for m in range(4)}
        rows = list(email.pull(START, END, provider(g, []), now=LATER))
    assert {r["id"] for r in rows} == ids
    assert len(g.pages_served()) == 3  # two full pages, then the empty one that ends the list


def test_rows_are_normalised_with_utc_times_and_failures_split_by_severity():
    g = Mailgun()
    at = LO + timedelta(minutes=5, seconds=1, microseconds=500000)
    with g.serve():
        bounce = g.add("failed", at)
        deferred = g.add("failed", at, severity="temporary", reason="generic",
                         **{"delivery-status": {"code": 421, "message": "4.7.0 Try later"}})
        dropped = g.add("failed", at, reason="suppress-bounce",
                        **{"delivery-status": {"code": 605, "message": "",
                                               "description": "Not delivering to previously "
                                                              "bounced address"}})
        click = g.add("clicked", at)
        long_reply = g.add("failed", at, **{"delivery-status": {
            "code": 550, "message": "5.7.1 " + "ü" * 3000}})
        rows = {r["id"]: r for r in email.pull(START, END, provider(g, []), now=LATER)}

    b = rows[bounce["id"]]
    assert (b["provider"], b["event"], b["provider_event"], b["severity"], b["reason"]) == (
        "mailgun", "bounced", "failed", "permanent", "bounce")
    assert (b["delivery_code"], b["delivery_message"]) == (550, "5.1.1 User unknown")
    assert b["occurred_at"] == at and b["occurred_at"].utcoffset() == timedelta(0)
    assert b["recipient"] == bounce["recipient"] and b["domain"] == DOMAIN
    assert b["message_id"] == bounce["message"]["headers"]["message-id"]
    assert b["tags"] == ["newsletter"] and b["user_variables"] == bounce["user-variables"]
    assert (rows[deferred["id"]]["event"], rows[deferred["id"]]["delivery_code"]) == (
        "deferred", 421)
    d = rows[dropped["id"]]
    assert d["event"] == "dropped"
    assert d["delivery_message"] == "Not delivering to previously bounced address"
    c = rows[click["id"]]
    assert c["event"] == "clicked" and c["url"] == click["url"]
    assert (c["ip"], c["country"], c["city"]) == ("203.0.113.7", "DE", "Berlin")
    assert (c["client_type"], c["client_name"], c["device_type"]) == (
        "browser", "Firefox", "desktop")
    # a long SMTP reply is kept whole: nothing is cut on the way in
    assert rows[long_reply["id"]]["delivery_message"] == "5.7.1 " + "ü" * 3000


def test_a_429_is_waited_out_by_retry_after_and_5xx_are_retried(caplog):
    caplog.set_level(logging.DEBUG)
    g = Mailgun(page_size=3)
    waits: list[float] = []
    with g.serve():
        expected = build(g)
        g.fail_next(Fault(429, {"Retry-After": "7"}, {"message": "Too many requests"}),
                    on="next")
        g.fail_next(Fault(503, body={"message": "Service Unavailable"}), on="next")
        g.fail_next(Fault(502), on="next")
        rows = list(email.pull(START, END, provider(g, waits), now=LATER))
    assert {r["id"] for r in rows} == expected and len(rows) == len(expected)
    assert [s.status for s in g.seen][:5] == [200, 429, 503, 502, 200]
    assert waits[0] == 7.0
    assert 0.5 <= waits[1] <= 1.5 and 1.0 <= waits[2] <= 3.0  # jittered backoff, doubling
    assert len(waits) == 3
    assert "429 rate limited, Retry-After 7" in caplog.text  # the waits are logged...
    basic = base64.b64encode(f"api:{API_KEY}".encode()).decode()
    assert API_KEY not in caplog.text and basic not in caplog.text  # ...never the key


def test_5xx_that_persists_is_a_transient_error_so_the_run_is_retried_later():
    g = Mailgun()
    waits: list[float] = []
    with g.serve():
        g.add("delivered", LO)
        for _ in range(5):
            g.fail_next(Fault(500, body={"message": "oops"}))
        with pytest.raises(TransientError) as err:
            list(email.pull(START, END, provider(g, waits), now=LATER))
    assert str(err.value).endswith(f"/v3/{DOMAIN}/events: 500 Internal Server Error after "
                                   "4 retries")
    assert len(waits) == 4


def test_a_late_event_is_read_by_the_next_run_and_lands_once():
    g = Mailgun(page_size=3)
    with g.serve():
        early = g.add("delivered", LO + timedelta(minutes=10))
        # stamped 10:50, inside the 10:00-11:00 run's hour, but stored by Mailgun only later
        late = g.add("opened", END - timedelta(minutes=10), visible=False)
        first = list(email.pull(START, END, provider(g, []), now=END + timedelta(minutes=1)))
        g.arrive(late)
        second = list(email.pull(END, END + timedelta(hours=1), provider(g, []),
                                 now=END + timedelta(hours=1, minutes=1)))
    assert [r["id"] for r in first] == [early["id"]]
    assert [r["id"] for r in second] == [late["id"]]


def test_an_interval_not_over_yet_is_refused_before_any_request():
    g = Mailgun()
    with g.serve():
        g.add("delivered", LO)
        with pytest.raises(TransientError) as err:
            email.pull(START, END, provider(g, []), now=END - timedelta(minutes=1))
    assert g.seen == []
    assert str(err.value) == ("mailgun events until 2026-11-20 10:30:00 UTC may still arrive "
                              "(lag 30m); run this interval after 2026-11-20 11:00:00 UTC")


def test_the_lag_setting_moves_the_window():
    g = Mailgun()
    with g.serve():
        ids = [g.add("delivered", START - timedelta(minutes=m))["id"] for m in (61, 59, 1)]
        rows = list(email.pull(START, END, provider(g, [], MAILGUN_LAG="1h"), now=LATER))
    assert [r["id"] for r in rows] == ids[1:]  # [09:00, 10:00)
    assert g.seen[0].query["begin"] == str(int((START - timedelta(hours=1)).timestamp()))


def test_a_bad_key_is_a_one_line_config_error_without_the_key():
    g = Mailgun()
    bad = "key-wrong-do-not-print-9876"
    with g.serve():
        with pytest.raises(ConfigError) as err:
            list(email.pull(START, END, provider(g, [], MAILGUN_API_KEY=bad), now=LATER))
    msg = str(err.value)
    assert msg == (f"GET {g.base.split('//')[1]}/v3/{DOMAIN}/events: 401 Unauthorized: check "
                   "MAILGUN_API_KEY (and MAILGUN_BASE_URL: EU accounts use "
                   "https://api.eu.mailgun.net)")
    assert [s.status for s in g.seen] == [401]  # a bad key is not retried


# ------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("env, words", [
    ({"MAILGUN_DOMAIN": "mg.example.com"}, "MAILGUN_API_KEY is not set"),
    ({"MAILGUN_API_KEY": "k"}, "MAILGUN_DOMAIN is not set"),
    ({"MAILGUN_API_KEY": "k", "MAILGUN_DOMAIN": "https://mg.example.com"},
     "must be a domain name"),
    ({"MAILGUN_API_KEY": "k", "MAILGUN_DOMAIN": "d", "MAILGUN_BASE_URL": "api.mailgun.net"},
     "http(s) URL"),
    ({"MAILGUN_API_KEY": "k", "MAILGUN_DOMAIN": "d",
      "MAILGUN_BASE_URL": "https://api:k@api.mailgun.net"}, "must not carry credentials"),
    ({"MAILGUN_API_KEY": "k", "MAILGUN_DOMAIN": "d", "MAILGUN_LAG": "soon"}, "MAILGUN_LAG"),
    ({"MAILGUN_API_KEY": "k", "MAILGUN_DOMAIN": "d", "MAILGUN_EVENTS": "delivered,bounce"},
     "unknown event type(s) bounce"),
    ({"MAILGUN_API_KEY": "k", "MAILGUN_DOMAIN": "d", "MAILGUN_PAGE_SIZE": "1000"},
     "1 to 300"),
    ({"EMAIL_PROVIDER": "postmark"}, "EMAIL_PROVIDER must be one of mailgun"),
])
def test_missing_or_bad_settings_are_one_line_errors(env, words):
    with pytest.raises(ConfigError) as err:
        email.provider_from_env(env)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_settings_default_to_mailgun_us_and_never_show_the_key():
    s = email.mailgun_settings_from_env({"MAILGUN_API_KEY": "key-sekrit-123",
                                         "MAILGUN_DOMAIN": "mg.example.com"})
    assert (s.base_url, s.lag, s.page_size) == ("https://api.mailgun.net",
                                                timedelta(minutes=30), 300)
    assert s.events == tuple(TRACKED)
    eu = email.provider_from_env({"MAILGUN_API_KEY": "key-sekrit-123", "MAILGUN_DOMAIN": "d",
                                  "MAILGUN_BASE_URL": "https://api.eu.mailgun.net/v3/"})
    assert eu.client.base_url == "https://api.eu.mailgun.net/v3/d/"
    assert "sekrit" not in repr(s) + repr(eu)


# ------------------------------------------------------------------------------ the CLI
def setup_workspace(ws: Workspace) -> None:
    shutil.copy(ROOT / "jobs" / "email_events.py", ws.jobs)
    ws.cli("migrate", "--path", str(ROOT / "warehouse"), check=True)


def ids_in(ws: Workspace) -> list[str]:
    return [r[0] for r in warehouse_rows(ws, "SELECT id FROM email_events ORDER BY id")]


def test_cli_hourly_runs_load_late_events_once_wait_out_429_and_reruns_add_nothing(duck_ws):
    ws = duck_ws
    setup_workspace(ws)
    g = Mailgun(page_size=3)
    with g.serve():
        expected = build(g)
        late = g.add("complained", END - timedelta(minutes=10), visible=False)  # 10:50
        g.fail_next(Fault(429, {"Retry-After": "1"}, {"message": "Too many requests"}),
                    on="next")
        g.fail_next(Fault(502), on="next")
        began = time.monotonic()
        first = ws.cli("run", "email_events", "--date", HOUR, "--local", env=env_for(g))
        took = time.monotonic() - began
        assert first.returncode == 0, first.stderr
        assert sorted(ids_in(ws)) == sorted(expected)
        assert took >= 1.5  # Retry-After 1s and the 502's backoff were really waited
        assert [s.status for s in g.seen].count(429) == 1

        g.arrive(late)  # Mailgun stores the 10:50 complaint after the first run
        nxt = ws.cli("run", "email_events", "--date", "2026-11-20T11:00", "--local",
                     env=env_for(g))
        assert nxt.returncode == 0, nxt.stderr
        again = ws.cli("run", "email_events", "--date", HOUR, "--local", env=env_for(g))
        assert again.returncode == 0, again.stderr

    # the next run's window [10:30, 11:30) holds the late event and what was stamped 10:30-10:40
    in_next = {e["id"] for e in g.events if HI <= datetime.fromtimestamp(e["timestamp"], UTC)
               < HI + timedelta(hours=1) and e["event"] in TRACKED}
    assert late["id"] in in_next
    assert sorted(ids_in(ws)) == sorted(expected | in_next)  # once each
    assert warehouse_rows(ws, "SELECT event, occurred_at FROM email_events WHERE id = "
                              f"'{late['id']}'") == [("complained", datetime(2026, 11, 20, 10, 50))]
    history = ws.cli_json("history", "email_events")
    assert [h["status"] for h in history] == ["success"] * 3
    assert [h["rows_rejected"] for h in history] == [0, 0, 0]  # every row fits its columns
    runs = {(h["start"], h["rows_loaded"]) for h in history}
    assert ("2026-11-20T10:00:00Z", len(expected)) in runs
    assert ("2026-11-20T11:00:00Z", len(in_next)) in runs


def test_cli_run_on_postgres_keeps_types_and_json(pg_ws):
    ws = pg_ws
    setup_workspace(ws)
    g = Mailgun(page_size=3)
    with g.serve():
        expected = build(g)
        for _ in range(2):
            proc = ws.cli("run", "email_events", "--date", HOUR, "--local", env=env_for(g))
            assert proc.returncode == 0, proc.stderr
    assert sorted(ids_in(ws)) == sorted(expected)
    click = next(e for e in g.events if e["event"] == "clicked" and e["id"] in expected)
    (row,) = warehouse_rows(ws, "SELECT event, url, tags, user_variables, occurred_at, "
                                f"delivery_code FROM email_events WHERE id = '{click['id']}'")
    assert row[:4] == ("clicked", click["url"], ["newsletter"], click["user-variables"])
    assert row[4] == datetime.fromtimestamp(click["timestamp"], UTC).replace(tzinfo=None)
    counts = dict(warehouse_rows(ws, "SELECT event, count(*) FROM email_events GROUP BY event"))
    assert counts == {"delivered": 5, "bounced": 5, "opened": 5, "clicked": 5,
                      "unsubscribed": 5, "complained": 5}


def test_cli_bad_key_fails_with_one_line_that_does_not_show_the_key(duck_ws):
    ws = duck_ws
    setup_workspace(ws)
    bad = "key-wrong-do-not-print-1234"
    with Mailgun().serve() as g:
        build(g)
        proc = ws.cli("run", "email_events", "--date", HOUR, "--local", env=env_for(g, bad))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: GET 127.0.0.1:") and "401 Unauthorized" in lines[0]
    assert "check MAILGUN_API_KEY" in lines[0]
    basic = base64.b64encode(f"api:{bad}".encode()).decode()
    for secret in (bad, basic):
        assert secret not in proc.stderr + proc.stdout
    (run,) = ws.cli_json("history", "email_events")
    assert run["status"] == "failed" and "401" in run["error"] and bad not in run["error"]


def test_cli_missing_settings_fail_the_run_in_one_line_but_not_check(duck_ws):
    ws = duck_ws
    setup_workspace(ws)
    check = ws.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr  # no settings needed to check
    proc = ws.cli("run", "email_events", "--date", HOUR, "--local",
                  env={"MAILGUN_API_KEY": "", "MAILGUN_DOMAIN": DOMAIN})
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: MAILGUN_API_KEY is not set: a Mailgun API key that "
                                   "can read events is required")


def test_job_file_declares_the_table_key_and_schedule():
    from jankycron.discovery import discover

    registry, errors = discover(Path(ROOT / "jobs"))
    assert errors == []
    job = registry.get("email_events")
    assert dict(job.tables) == {"email_events": ("provider", "id")}
    assert job.schedule.expr == "0 * * * *" and job.retries == 3 and job.timeout < 3600
