"""Retries and alerts on real workers. A TransientError is retried with growing delays, each
attempt a run in the ledger, and alerts nobody if a later attempt succeeds; anything else fails
at once and alerts exactly once, and so does a TransientError after the last retry. A job that
has not landed when its schedule says it should sends a missed-run alert, once. A warehouse
outage inside the maintenance window is retried and alerts nobody; outside it, it alerts.

Alerts go through the real sender (jankycron.alerts) to the jobs' webhook route, which the
test records (``Hooks``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from celery_helpers import Cluster, cluster_fixture, hooks_fixture, wait_until  # noqa: F401
from conftest import pg_query
from test_cli_errors import assert_clean_failure

from jankycron.schedule import fmt

TABLE = "CREATE TABLE items (id bigint NOT NULL, label text)"
DAY = "2026-11-20"
FLAKY = '''
import json, time
from pathlib import Path
from jankycron import TransientError, job

TRIES = Path(__file__).parent.parent / "tries.jsonl"

@job(schedule="0 3 * * *", table="items", key="id", retries=3, alert="{hook}")
def flaky(run):
    with TRIES.open("a") as f:
        f.write(json.dumps(time.time()) + "\\n")
    if len(TRIES.read_text().splitlines()) <= 3:
        raise TransientError("provider answered 503")
    yield {{"id": 1, "label": "at last"}}
'''
BOOM = '''
from jankycron import job

@job(schedule="0 3 * * *", table="items", key="id", retries=3, alert="{hook}")
def boom(run):
    yield {{"id": 1, "label": "x"}}
    raise ValueError("upstream sent garbage")
'''
DOWN = '''
from jankycron import TransientError, job

@job(schedule="0 3 * * *", table="items", key="id", retries=2, alert="{hook}")
def down(run):
    raise TransientError("provider answered 503")
    yield {{}}
'''


def admin(url: str, sql: str) -> None:
    """CREATE / DROP DATABASE (outside a transaction)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def test_a_transient_error_is_retried_with_growing_delays_then_succeeds(
        cluster: Cluster) -> None:
    cluster.rows(TABLE)
    cluster.ws.write_job("flaky", FLAKY.format(hook=cluster.hooks.url))
    cluster.worker()
    proc = cluster.ws.cli("run", "flaky", "--date", DAY, check=True)
    assert "success; 1 extracted, 1 loaded" in proc.stdout

    runs = cluster.runs("flaky")
    assert [(r["attempt"], r["status"]) for r in runs] == [
        (1, "retried"), (2, "retried"), (3, "retried"), (4, "success")]
    planned = [float(re.search(r"retrying in ([\d.]+)s", r["error"]).group(1))
               for r in runs[:3]]
    assert planned[0] <= planned[1] <= planned[2], planned  # exponential, jitter in the top half
    assert planned[2] >= 2 * 0.9 and planned[0] <= 1.05, planned  # base 1s: ~0.5-1, 1-2, 2-4
    tries = [json.loads(line) for line in (cluster.ws.path / "tries.jsonl").read_text().split()]
    waited = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert all(w >= p - 0.1 for w, p in zip(waited, planned, strict=True)), (waited, planned)
    assert cluster.rows("SELECT count(*) FROM items") == [(1,)]
    assert cluster.hooks.bodies == []  # it recovered: nobody is paged


def test_other_errors_fail_at_once_and_alert_once_per_run(cluster: Cluster) -> None:
    cluster.rows(TABLE)
    cluster.ws.write_job("boom", BOOM.format(hook=cluster.hooks.url))
    cluster.ws.write_job("down", DOWN.format(hook=cluster.hooks.url))
    cluster.worker()

    proc = cluster.ws.cli("run", "boom", "--date", DAY)
    assert_clean_failure(proc, "job boom failed: ValueError: upstream sent garbage",
                          "boom.py line 7")
    assert [(r["attempt"], r["status"]) for r in cluster.runs("boom")] == [(1, "failed")]
    (alert,) = cluster.hooks.events()
    assert alert["event"] == "run_failed" and alert["job"] == "boom"
    assert alert["run_id"] == cluster.runs("boom")[0]["run_id"]
    assert "upstream sent garbage" in alert["text"]

    proc = cluster.ws.cli("run", "down", "--date", DAY)
    assert_clean_failure(proc, "job down failed: provider answered 503")
    assert [(r["attempt"], r["status"]) for r in cluster.runs("down")] == [
        (1, "retried"), (2, "retried"), (3, "failed")]
    assert [a["job"] for a in cluster.hooks.events("run_failed")] == ["boom", "down"]
    assert cluster.rows("SELECT count(*) FROM items") == [(0,)]  # boom's one row never landed


def test_a_job_that_has_not_landed_when_due_alerts_missed_once(cluster: Cluster) -> None:
    """Workers for runs are down (only an ops worker is up): beat enqueues the job, nothing
    runs it, and the missed-run check says so once, not on every tick."""
    cluster.rows(TABLE)
    cluster.ws.write_job("late", f'''
from jankycron import job

@job(schedule="* * * * *", table="items", key="id", timeout="1s", alert="{cluster.hooks.url}")
def late(run):
    yield {{"id": int(run.start.timestamp()), "label": "late"}}
''')
    old = (datetime.now(UTC) - timedelta(minutes=10)).replace(second=0, microsecond=0)
    cluster.ws.cli("run", "late", "--date", fmt(old)[:16], "--local", check=True)
    ops = cluster.worker("ops", queues="jankycron.ops")
    cluster.beat()
    (missed,) = wait_until(lambda: cluster.hooks.events("run_missed", "late"),
                           "the missed-run alert")
    landed = fmt(old + timedelta(minutes=1))
    assert f"missed: last successful interval ended {landed}" in missed["text"]
    checks = ops.count("missed-run check: 1 job(s) overdue")
    wait_until(lambda: ops.count("missed-run check: 1 job(s) overdue") >= checks + 3,
               "three more missed-run checks")
    assert len(cluster.hooks.events("run_missed")) == 1
    assert [r["status"] for r in cluster.runs("late")] == ["success"]  # nothing else ran


@pytest.mark.parametrize("inside", [True, False], ids=["inside-window", "outside-window"])
def test_a_warehouse_outage_in_the_maintenance_window_is_retried_without_an_alert(
        cluster: Cluster, pg_url: str, inside: bool) -> None:
    now = datetime.now(UTC)
    start = now - timedelta(hours=1) if inside else now + timedelta(hours=6)
    end = start + timedelta(hours=2)
    warehouse = pg_url + "_wh"  # a database that does not exist yet: the warehouse is down
    cluster.ws.env.update({
        "JANKYCRON_WAREHOUSE_URL": warehouse,
        "JANKYCRON_MAINTENANCE_WINDOW": f"{start:%a} {start:%H:%M}-{end:%H:%M}"})
    cluster.ws.write_job("nightly", f'''
from jankycron import job

@job(schedule="0 3 * * *", table="items", key="id", retries=1, alert="{cluster.hooks.url}")
def nightly(run):
    yield {{"id": 1, "label": "kept while the warehouse is down"}}
''')
    cluster.worker()
    try:
        proc = cluster.ws.cli("run", "nightly", "--date", DAY)
        assert_clean_failure(proc, "job nightly failed: warehouse", "does not exist")
        (run,) = cluster.runs("nightly")
        assert (run["status"], run["attempt"]) == ("staged", 2)
        assert run["error"].startswith("load of items pending: warehouse ")
        if inside:
            assert "inside the maintenance window" in proc.stderr.splitlines()[-1]
            assert cluster.hooks.bodies == []
            assert "alert held back" in cluster.procs[0].text()
        else:
            (alert,) = cluster.hooks.bodies
            assert alert["event"] == "run_failed" and alert["job"] == "nightly"

        # The warehouse is back: the staged batch loads, nothing was lost.
        admin(pg_url, f"CREATE DATABASE {warehouse.rsplit('/', 1)[1]}")
        pg_query(warehouse, TABLE)
        cluster.ws.cli("load", "--local", check=True)
        assert pg_query(warehouse, "SELECT id, label FROM items") == [
            (1, "kept while the warehouse is down")]
    finally:
        cluster.stop()
        admin(pg_url, f"DROP DATABASE IF EXISTS {warehouse.rsplit('/', 1)[1]} WITH (FORCE)")
