"""One loader per table across processes: a Redis lock with an owner token and a TTL, checked
again right before commit (real Redis on 127.0.0.1:6379, database 15)."""

from __future__ import annotations

import os
import time
from datetime import date

import pytest
import redis
from conftest import Workspace, create_table, free_port, warehouse_rows

from jankycron.config import Settings
from jankycron.discovery import discover
from jankycron.load.lock import LockLost, TableLock
from jankycron.runner import Context, run_job

REDIS_URL = os.environ.get("JANKYCRON_TEST_REDIS", "redis://127.0.0.1:6379/15")

JOB = '''
from jankycron import job

@job(schedule="0 0 * * *", table="locked_items", key="id")
def locked_items(run):
    for i in range(300):
        yield {"id": i, "day": run.start.day}
'''


@pytest.fixture
def rds() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    client.delete("jankycron:load-lock:locked_items")
    yield client
    client.delete("jankycron:load-lock:locked_items")
    client.close()


def _stage(ws: Workspace) -> None:
    create_table(ws, "CREATE TABLE locked_items (id int NOT NULL, day int)")
    ws.write_job("locked_items", JOB)
    registry, _ = discover(ws.jobs)
    job = registry.get("locked_items")
    ctx = Context(ws.settings)
    try:
        run_job(ctx, job, job.interval_on(date(2026, 11, 3)), load=False)
    finally:
        ctx.close()


def test_a_second_loader_waits_then_gives_up_with_one_line(pg_ws: Workspace,
                                                          rds: redis.Redis) -> None:
    _stage(pg_ws)
    other = TableLock(rds, "locked_items", ttl=30)
    other.acquire(wait=0)
    try:
        proc = pg_ws.cli("load", "--local", env={"JANKYCRON_LOCK_URL": REDIS_URL,
                                                 "JANKYCRON_LOCK_WAIT": "1s"})
        assert proc.returncode == 1
        (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
        assert "being loaded by another loader" in line and other.token in line
        assert warehouse_rows(pg_ws, "SELECT COUNT(*) FROM locked_items") == [(0,)]
    finally:
        other.release()
    assert rds.get(other.key) is None  # released
    pg_ws.cli("load", "--local", check=True, env={"JANKYCRON_LOCK_URL": REDIS_URL})
    assert warehouse_rows(pg_ws, "SELECT COUNT(*) FROM locked_items") == [(300,)]
    assert rds.get(other.key) is None  # the loader released its lock too


def test_a_loader_that_lost_its_lock_rolls_back(pg_ws: Workspace, rds: redis.Redis) -> None:
    _stage(pg_ws)

    def steal(message: str) -> None:  # another loader takes over while this one validates
        if "loading" in message:
            rds.set("jankycron:load-lock:locked_items", "someone-else", px=30_000)

    ctx = Context(Settings.from_env({**pg_ws.env, "JANKYCRON_LOCK_URL": REDIS_URL}),
                  progress=steal)
    try:
        with pytest.raises(LockLost, match="rolled back"):
            ctx.loader.load_table("locked_items", ("id",))
        assert warehouse_rows(pg_ws, "SELECT COUNT(*) FROM locked_items") == [(0,)]
        assert len(ctx.ledger.pending_batches("locked_items")) == 1
        assert rds.get("jankycron:load-lock:locked_items") == b"someone-else"  # not ours to drop
    finally:
        ctx.close()
    rds.delete("jankycron:load-lock:locked_items")
    pg_ws.cli("load", "--local", check=True, env={"JANKYCRON_LOCK_URL": REDIS_URL})
    assert warehouse_rows(pg_ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM locked_items") == [
        (300, 300)]


def test_the_lock_is_renewed_while_a_load_runs(rds: redis.Redis) -> None:
    lock = TableLock(rds, "locked_items", ttl=1.5)
    lock.acquire(wait=0)
    try:
        time.sleep(4)  # well past the TTL: only renewal (every ttl/3) keeps it
        lock.ensure_owned()
        assert rds.get(lock.key).decode() == lock.token
    finally:
        lock.release()
    assert rds.get(lock.key) is None


def test_check_warns_when_redis_can_lose_locks(duck_ws: Workspace, rds: redis.Redis) -> None:
    create_table(duck_ws, "CREATE TABLE locked_items (id int NOT NULL, day int)")
    duck_ws.write_job("locked_items", JOB)
    proc = duck_ws.cli("check", env={"JANKYCRON_LOCK_URL": REDIS_URL})
    assert f"ok    lock store {REDIS_URL}" in proc.stdout
    appendonly = rds.config_get("appendonly")["appendonly"]
    warned = "warn  lock store: appendonly is not yes" in proc.stdout
    assert warned == (appendonly != "yes")
    assert proc.returncode == 0, proc.stdout  # a warning is not a failure


def test_check_fails_when_the_lock_store_is_down(duck_ws: Workspace) -> None:
    proc = duck_ws.cli("check", env={"JANKYCRON_LOCK_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert proc.returncode == 1
    assert "FAIL  lock store" in proc.stdout and "unreachable" in proc.stdout
