"""Segment webhooks: Segment POSTs signed events; jankycron stores them in a Redis stream before
it answers 2xx, and the segment_events job drains the stream into the segment_* tables, one row
per messageId however often Segment retried. Real Redis (db 12), a real gunicorn, the real CLI.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import requests
from conftest import ROOT, Workspace, free_port, gunicorn, warehouse_rows

from jankycron.config import Settings
from jankycron.discovery import discover
from jankycron.errors import ConfigError
from jankycron.runner import Context, load_tables, run_job
from jankycron.sources import segment
from jankycron.web import create_app

REDIS = os.environ.get("JANKYCRON_TEST_SEGMENT_REDIS", "redis://127.0.0.1:6379/12")
SECRET = "whsec-not-for-logs-8f3a"
TABLES = sorted(segment.TABLES.values())


@pytest.fixture
def r() -> redis.Redis:
    client = redis.Redis.from_url(REDIS)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def settings(**env: str) -> Settings:
    return Settings.from_env({"JANKYCRON_SEGMENT_SECRET": SECRET,
                              "JANKYCRON_WEBHOOK_REDIS_URL": REDIS, **env})


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def event(mid: str, kind: str = "track", **fields) -> dict:
    base = {"type": kind, "messageId": mid, "anonymousId": "anon-1", "userId": None,
            "receivedAt": "2026-11-25T10:00:00.250Z", "sentAt": "2026-11-25T10:00:00.100Z",
            "originalTimestamp": "2026-11-25T09:59:59.900Z",
            "timestamp": "2026-11-25T10:00:00.050Z",
            "context": {"ip": "203.0.113.9", "library": {"name": "analytics.js",
                                                         "version": "4.1.0"},
                        "page": {"url": "https://bank.example/pay?x=1", "path": "/pay"},
                        "userAgent": "Mozilla/5.0"}}
    return {**base, **fields}


def post(client, payload: dict | list | bytes, signature: str | None = "sign", **headers):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if signature == "sign":
        signature = sign(body)
    if signature is not None:
        headers["X-Signature"] = signature
    return client.post("/webhooks/segment", data=body, headers=headers,
                       content_type="application/json")


def stored(r: redis.Redis) -> list[bytes]:
    return [fields[b"body"] for _, fields in r.xrange(segment.STREAM)]


# ------------------------------------------------------------------------------ the endpoint
def test_a_signed_event_is_stored_before_the_200(r: redis.Redis) -> None:
    client = create_app(settings()).test_client()
    body = json.dumps(event("m-1")).encode()
    resp = post(client, body)
    assert resp.status_code == 200 and resp.get_json() == {"accepted": 1}
    assert stored(r) == [body]


@pytest.mark.parametrize("case", ["missing", "wrong secret", "tampered body", "not hex",
                                  "not ascii"])
def test_a_bad_or_missing_signature_is_401_and_nothing_is_stored(
        r: redis.Redis, case: str, caplog: pytest.LogCaptureFixture) -> None:
    client = create_app(settings()).test_client()
    body = json.dumps(event("m-1")).encode()
    signature = {"missing": None, "wrong secret": sign(body, "other"),
                 "tampered body": sign(body.replace(b"m-1", b"m-2")), "not hex": "x" * 40,
                 "not ascii": "é" * 40}[case]
    resp = post(client, body, signature=signature)
    assert resp.status_code == 401
    assert ("missing" if case == "missing" else "bad") in resp.get_json()["error"]
    assert stored(r) == []
    assert SECRET not in resp.get_data(as_text=True) and SECRET not in caplog.text


def test_the_signature_is_over_the_raw_bytes_not_reserialised_json(r: redis.Redis) -> None:
    # What a JavaScript sender may emit: its own spacing, key order and \u escapes.
    raw = (b'{ "type":"track",  "messageId":"m-\\u00e9",\n "event":"Caf\\u00e9 Visited",'
           b'"properties":{"b":1,"a":"\\u2603"}, "anonymousId":"a"}')
    reserialised = json.dumps(json.loads(raw)).encode()
    assert reserialised != raw
    client = create_app(settings()).test_client()

    assert post(client, raw, signature=sign(reserialised)).status_code == 401
    assert post(client, raw, signature=sign(raw)).status_code == 200
    assert stored(r) == [raw]  # kept byte for byte


def test_a_batch_is_accepted_whole(r: redis.Redis) -> None:
    client = create_app(settings()).test_client()
    batch = [event("m-1"), event("m-2", "identify", traits={"plan": "gold"}), event("m-3", "page")]
    resp = post(client, batch)
    assert resp.status_code == 200 and resp.get_json() == {"accepted": 3}
    assert [e["messageId"] for e in json.loads(stored(r)[0])] == ["m-1", "m-2", "m-3"]


@pytest.mark.parametrize("body, says", [
    (b'{"type": "track", "messageId": ', "not JSON"),
    (b"\xff\xfe{}", "not JSON"),
    (b"42", "not a JSON object"),
    (b"[]", "empty batch"),
    (json.dumps([event("m-1"), "oops"]).encode(), "event 1 of the batch is not a JSON object"),
    (json.dumps([event("m-1"), {"type": "track"}]).encode(), "event 1 of the batch has no "
                                                             "messageId"),
    (json.dumps({"type": "track", "messageId": ""}).encode(), "the event has no messageId"),
])
def test_malformed_bodies_are_400_saying_why(r: redis.Redis, body: bytes, says: str) -> None:
    resp = post(create_app(settings()).test_client(), body)
    assert resp.status_code == 400
    assert says in resp.get_json()["error"] and "\n" not in resp.get_json()["error"]
    assert stored(r) == []


def test_an_oversize_body_is_413(r: redis.Redis) -> None:
    client = create_app(settings(JANKYCRON_WEBHOOK_MAX_BODY="2KB")).test_client()
    big = json.dumps([event(f"m-{i}") for i in range(20)]).encode()
    assert len(big) > 2048
    resp = post(client, big)
    assert resp.status_code == 413 and "JANKYCRON_WEBHOOK_MAX_BODY" in resp.get_json()["error"]
    assert post(client, [event("m-1")]).status_code == 200  # a small one still goes in
    assert len(stored(r)) == 1


def test_without_a_secret_nothing_is_accepted(r: redis.Redis) -> None:
    client = create_app(Settings.from_env({"JANKYCRON_WEBHOOK_REDIS_URL": REDIS})).test_client()
    resp = post(client, [event("m-1")], signature=sign(b"anything"))
    assert resp.status_code == 503
    assert resp.get_json() == {
        "error": "webhook not configured: JANKYCRON_SEGMENT_SECRET is not set"}
    assert stored(r) == []


def test_storage_down_is_503_so_segment_retries() -> None:
    down = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    client = create_app(settings(JANKYCRON_WEBHOOK_REDIS_URL=down)).test_client()
    started = time.monotonic()
    resp = post(client, [event("m-1")])
    assert resp.status_code == 503 and time.monotonic() - started < 4  # Segment waits 5 s
    error = resp.get_json()["error"]
    assert error.startswith("events not stored: Redis at redis://:***@127.0.0.1")
    assert "hunter2" not in error and SECRET not in error


def test_the_stream_store_setting() -> None:
    assert Settings.from_env({}).webhook_redis_url == "redis://localhost:6379/0"  # the broker
    assert Settings.from_env({"JANKYCRON_BROKER_URL": "filesystem://"}).webhook_redis_url is None
    assert Settings.from_env({}).webhook_max_body == 16 * 1024**2
    with pytest.raises(ConfigError, match="JANKYCRON_WEBHOOK_REDIS_URL"):
        Settings.from_env({"JANKYCRON_WEBHOOK_REDIS_URL": "http://cache:6379"})
    with pytest.raises(ConfigError, match="JANKYCRON_WEBHOOK_MAX_BODY"):
        Settings.from_env({"JANKYCRON_WEBHOOK_MAX_BODY": "lots"})
    client = create_app(Settings.from_env({"JANKYCRON_SEGMENT_SECRET": SECRET,
                                           "JANKYCRON_BROKER_URL": "filesystem://"})).test_client()
    resp = post(client, [event("m-1")])
    assert resp.status_code == 503 and "JANKYCRON_WEBHOOK_REDIS_URL" in resp.get_json()["error"]


# ------------------------------------------------------------------------------ gunicorn
def chunked_post(port: int, body: bytes, signature: str) -> int:
    """A chunked request (no Content-Length), as a proxy may forward one; the status code."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /webhooks/segment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nTransfer-Encoding: chunked\r\nX-Signature: " + signature.encode() +
                  b"\r\nConnection: close\r\n\r\n")
        for i in range(0, len(body), 1000):
            chunk = body[i:i + 1000]
            s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        return int(s.makefile("rb").readline().split()[1])


def test_gunicorn_serves_the_webhook(r: redis.Redis, tmp_path: Path) -> None:
    env = {"JANKYCRON_SEGMENT_SECRET": SECRET, "JANKYCRON_WEBHOOK_REDIS_URL": REDIS,
           "JANKYCRON_WEBHOOK_MAX_BODY": "8KB",
           "JANKYCRON_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}"}
    with gunicorn(tmp_path, env) as web:
        port = web.port
        url = f"{web.url}/webhooks/segment"
        single = json.dumps(event("g-1")).encode()
        batch = json.dumps([event("g-2"), event("g-3", "screen", name="Home")]).encode()
        for body, n in ((single, 1), (batch, 2)):
            resp = requests.post(url, data=body, timeout=10, headers={
                "X-Signature": sign(body), "Content-Type": "application/json"})
            assert resp.status_code == 200 and resp.json() == {"accepted": n}
        assert requests.post(url, data=single, timeout=10,
                             headers={"X-Signature": sign(b"x")}).status_code == 401
        big = json.dumps([event(f"g-{i}") for i in range(40)]).encode()
        assert chunked_post(port, big, sign(big)) == 413  # no Content-Length, still capped
        small = json.dumps(event("g-4")).encode()
        assert chunked_post(port, small, sign(small)) == 200
        assert stored(r) == [single, batch, small]
    assert SECRET not in web.output, web.output


# ------------------------------------------------------------------------------ the drain
def segment_ws(ws: Workspace, crash_after: int | None = None) -> Workspace:
    """The bundled segment_events job (or a copy that crashes after N rows) and the tables."""
    source = (ROOT / "jobs" / "segment_events.py").read_text()
    if crash_after is not None:
        loop = ("    for table, row in segment.drain(run, settings):\n"
                "        yield run.to(table, row)")
        assert loop in source
        source = source.replace(loop, (
            "    for n, (table, row) in enumerate(segment.drain(run, settings), 1):\n"
            "        yield run.to(table, row)\n"
            f"        if os.environ.get('CRASH') and n >= {crash_after}:\n"
            "            raise RuntimeError('worker died mid-drain')"))
    (ws.jobs / "segment_events.py").write_text(source)
    ws.env.update({"JANKYCRON_WEBHOOK_REDIS_URL": REDIS, "JANKYCRON_SEGMENT_SECRET": SECRET})
    ws.cli("migrate", "--path", str(ROOT / "warehouse"), check=True)
    return ws


def counts(ws: Workspace) -> dict[str, int]:
    return {t: warehouse_rows(ws, f"SELECT COUNT(*) FROM {t}")[0][0] for t in TABLES}


def pending(r: redis.Redis) -> int:
    return r.xpending(segment.STREAM, segment.GROUP)["pending"]


def test_post_then_drain_lands_one_row_per_message_id(ws: Workspace, r: redis.Redis) -> None:
    ws = segment_ws(ws)
    client = create_app(ws.settings).test_client()
    for _ in range(3):  # Segment retried the first request twice
        assert post(client, event("dup-1", event="Order Completed",
                                  properties={"total": 12.5, "currency": "EUR"})).status_code == 200
    assert post(client, [
        event("i-1", "identify", userId="u-1", traits={"email": "a@bank.example"}),
        event("p-1", "page", name="Pay", category="Checkout",
              properties={"path": "/pay", "url": "https://bank.example/pay", "title": "Pay"}),
        event("s-1", "screen", name="Home"),
        event("g-1", "group", groupId="org-9", traits={"name": "Acme"}),
        event("a-1", "alias", userId="u-1", previousId="anon-1"),
        event("t-2", event="Signed Up"),
    ]).status_code == 200

    ws.cli("run", "segment_events", "--local", check=True)
    assert counts(ws) == {"segment_aliases": 1, "segment_groups": 1, "segment_identifies": 1,
                          "segment_pages": 1, "segment_screens": 1, "segment_tracks": 2}
    # The drain stages one copy of a messageId it read several times (the source's own
    # dedupe), so its counts reconcile with nothing replaced.
    (drain,) = ws.cli_json("history")
    assert (drain["rows_extracted"], drain["rows_loaded"], drain["rows_rejected"],
            drain["rows_replaced"]) == (7, 7, 0, 0)
    row = warehouse_rows(ws, "SELECT event, event_text, context_ip, context_library_name, "
                             "context_page_path, received_at, \"timestamp\", properties "
                             "FROM segment_tracks WHERE id = 'dup-1'")[0]
    assert row[:5] == ("order_completed", "Order Completed", "203.0.113.9", "analytics.js",
                       "/pay")
    assert (str(row[5]), str(row[6])) == ("2026-11-25 10:00:00.250000",
                                          "2026-11-25 10:00:00.050000")
    props = row[7] if isinstance(row[7], dict) else json.loads(row[7])
    assert props == {"total": 12.5, "currency": "EUR"}
    assert warehouse_rows(ws, "SELECT previous_id, user_id FROM segment_aliases") == [
        ("anon-1", "u-1")]
    assert warehouse_rows(ws, "SELECT path, title, category FROM segment_pages") == [
        ("/pay", "Pay", "Checkout")]

    # Segment retries once more after the drain; the next runs merge it and empty the stream.
    assert post(client, event("dup-1", event="Order Completed")).status_code == 200
    ws.cli("run", "segment_events", "--local", check=True)
    ws.cli("run", "segment_events", "--local", check=True)
    assert counts(ws)["segment_tracks"] == 2
    assert pending(r) == 0 and r.xlen(segment.STREAM) == 0  # acknowledged, then trimmed
    # The late retry is another run's record: loaded there (over the earlier row), not replaced.
    runs = ws.cli_json("history")
    assert [(r["rows_extracted"], r["rows_loaded"], r["rows_replaced"]) for r in runs] == [
        (0, 0, 0), (1, 1, 0), (7, 7, 0)]


def test_a_drain_that_crashes_before_staging_loses_nothing(duck_ws: Workspace,
                                                           r: redis.Redis) -> None:
    ws = segment_ws(duck_ws, crash_after=3)
    client = create_app(ws.settings).test_client()
    for i in range(4):
        assert post(client, [event(f"c-{i}-{j}") for j in range(5)]).status_code == 200

    crashed = ws.cli("run", "segment_events", "--local", env={"CRASH": "1"})
    assert crashed.returncode == 1 and "worker died mid-drain" in crashed.stderr
    assert counts(ws)["segment_tracks"] == 0
    assert pending(r) == 4 and r.xlen(segment.STREAM) == 4  # read, not acknowledged

    assert post(client, event("c-late")).status_code == 200  # arrives meanwhile
    ws.cli("run", "segment_events", "--local", check=True)
    assert counts(ws)["segment_tracks"] == 21
    ws.cli("run", "segment_events", "--local", check=True)
    assert pending(r) == 0 and r.xlen(segment.STREAM) == 0


def test_a_crash_after_staging_before_the_ack_duplicates_nothing(duck_ws: Workspace,
                                                                 r: redis.Redis) -> None:
    ws = segment_ws(duck_ws)
    client = create_app(ws.settings).test_client()
    assert post(client, [event(f"k-{j}") for j in range(5)]).status_code == 200
    ws.cli("run", "segment_events", "--local", check=True)
    assert counts(ws)["segment_tracks"] == 5 and pending(r) == 1

    # The worker died after its batch was recorded but before its state (the ranges to ack)
    # was saved: the next run finds the entries pending and unclaimed, and stages them again.
    db = sqlite3.connect(ws.settings.state_url[len("sqlite:///"):])
    db.execute("DELETE FROM jc_job_state WHERE job = 'segment_events'")
    db.commit()
    db.close()
    again = ws.cli("run", "segment_events", "--local", "--json", check=True)
    assert json.loads(again.stdout)[0]["rows_staged"] == 5
    assert counts(ws)["segment_tracks"] == 5
    ws.cli("run", "segment_events", "--local", check=True)
    assert pending(r) == 0 and r.xlen(segment.STREAM) == 0


def test_with_redis_down_the_drain_fails_and_acknowledges_nothing(duck_ws: Workspace,
                                                                  r: redis.Redis) -> None:
    ws = segment_ws(duck_ws)
    client = create_app(ws.settings).test_client()
    assert post(client, [event("d-1"), event("d-2")]).status_code == 200
    down = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    failed = ws.cli("run", "segment_events", "--local",
                    env={"JANKYCRON_WEBHOOK_REDIS_URL": down})
    assert failed.returncode == 1
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and "Segment stream at redis://:***@" in line
    assert "hunter2" not in failed.stderr and "Traceback" not in failed.stderr
    assert counts(ws)["segment_tracks"] == 0
    assert r.xlen(segment.STREAM) == 1  # still there for the next run
    ws.cli("run", "segment_events", "--local", check=True)
    assert counts(ws)["segment_tracks"] == 2


def test_a_rerun_of_a_drain_interval_adds_to_it_and_loses_nothing(
        duck_ws: Workspace, r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A drain's rerun reads new entries, not the same ones again: with rerun_replaces=False
    its batch does not supersede the interval's earlier batch, so both land, and every entry
    is acknowledged once its rows are loaded."""
    ws = segment_ws(duck_ws)
    for name, value in ws.env.items():  # the job reads its environment, as in production
        monkeypatch.setenv(name, value)
    job = discover(ws.jobs)[0].get("segment_events")
    assert job.rerun_replaces is False
    x, y, z = (job.interval_on(datetime(2026, 11, 25, 10, m, tzinfo=UTC)) for m in (0, 5, 10))
    client = create_app(ws.settings).test_client()
    ctx = Context(ws.settings)
    try:
        assert post(client, [event("a-1"), event("a-2")]).status_code == 200
        run_job(ctx, job, x, load=False)  # staged; the load comes later (Redshift: every 10m)
        assert post(client, event("b-1")).status_code == 200
        run_job(ctx, job, y, load=False)
        assert post(client, event("c-1")).status_code == 200
        run_job(ctx, job, x, load=False)  # an operator reruns x: it reads only c-1
        load_tables(ctx, job.tables)  # x's first batch is not replaced by the rerun
        assert sorted(warehouse_rows(ws, "SELECT id FROM segment_tracks")) == [
            ("a-1",), ("a-2",), ("b-1",), ("c-1",)]
        run_job(ctx, job, z)  # acknowledges what the loaded runs read
        assert pending(r) == 0
        run_job(ctx, job, z)
        assert pending(r) == 0 and r.xlen(segment.STREAM) == 0
    finally:
        ctx.close()


def test_an_event_with_a_lone_surrogate_is_a_dead_letter_and_later_drains_go_on(
        duck_ws: Workspace, r: redis.Redis) -> None:
    """An emoji cut in half (``"\\ud83d"`` in the JSON) used to fail the drain in staging, on
    every later drain too, since its entry was never acknowledged. Now it is a dead letter,
    the rest loads, and its entry is acknowledged with the others."""
    ws = segment_ws(duck_ws)
    client = create_app(ws.settings).test_client()
    raw = (b'[{"type":"track","messageId":"half-1","event":"Liked \\ud83d",'
           b'"anonymousId":"a"},{"type":"track","messageId":"ok-1","event":"Liked",'
           b'"anonymousId":"a"}]')
    assert post(client, raw).status_code == 200
    assert post(client, event("ok-2")).status_code == 200

    ws.cli("run", "segment_events", "--local", check=True)
    assert counts(ws)["segment_tracks"] == 2
    (letter,) = ws.cli_json("deadletters")
    assert letter["table"] == "segment_tracks" and letter["phase"] == "stage"
    assert "field event_text: a string holds a lone surrogate (\\ud83d)" in letter["reason"]

    assert post(client, event("ok-3")).status_code == 200
    ws.cli("run", "segment_events", "--local", check=True)  # acks the first drain's entries
    assert counts(ws)["segment_tracks"] == 3
    ws.cli("run", "segment_events", "--local", check=True)
    assert pending(r) == 0 and r.xlen(segment.STREAM) == 0
    assert [h["status"] for h in ws.cli_json("history")] == ["success"] * 3
