"""Real failures in the middle of a load: the warehouse drops the loader's connection, the
loader process is killed. Nothing is lost, nothing is loaded twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date

import pytest
from conftest import Workspace, create_table, pg_query, warehouse_rows

from jankycron.discovery import discover
from jankycron.errors import WarehouseUnavailable
from jankycron.runner import Context, run_job

JOB = '''
from jankycron import job

@job(schedule="0 0 * * *", table="events", key="id")
def events(run):
    base = run.start.day * 1_000_000
    for i in range(N):
        yield {"id": base + i, "day": run.start.day, "pad": "x" * 150}
'''


def _stage(ws: Workspace, days: range, n: int = 2000) -> None:
    create_table(ws, "CREATE TABLE events (id bigint NOT NULL, day int, pad varchar(200))")
    ws.write_job("events", JOB.replace("range(N)", f"range({n})"))
    registry, _ = discover(ws.jobs)
    job = registry.get("events")
    ctx = Context(ws.settings)
    try:
        for d in days:
            run_job(ctx, job, job.interval_on(date(2026, 11, d)), load=False)
    finally:
        ctx.close()


def test_the_warehouse_drops_the_connection_mid_load(pg_ws: Workspace) -> None:
    _stage(pg_ws, range(1, 4))
    db = pg_ws.env["JANKYCRON_WAREHOUSE_URL"].rsplit("/", 1)[1]

    def drop_connections(message: str) -> None:
        if "loading" in message:  # the loader has its session open: cut it, as a failover would
            pg_query(pg_ws.env["JANKYCRON_STATE_URL"].rsplit("/", 1)[0] + "/test",
                     "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                     " AND pid <> pg_backend_pid() AND query NOT ILIKE %s",
                     (db, "%jc_batches%"))

    ctx = Context(pg_ws.settings, progress=drop_connections)
    try:
        with pytest.raises(WarehouseUnavailable):
            ctx.loader.load_table("events", ("id",))
    finally:
        ctx.close()
    assert warehouse_rows(pg_ws, "SELECT COUNT(*) FROM events") == [(0,)]

    pg_ws.cli("load", "--local", check=True)
    assert warehouse_rows(pg_ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM events") == [
        (6000, 6000)]
    assert {r["status"] for r in pg_ws.cli_json("history")} == {"success"}


@pytest.mark.slow
def test_a_loader_killed_mid_load_is_finished_later_exactly_once(pg_ws: Workspace) -> None:
    _stage(pg_ws, range(1, 4), n=60_000)
    proc = subprocess.Popen([sys.executable, "-m", "jankycron", "load", "--local"],
                            cwd=pg_ws.path, env={**os.environ, **pg_ws.env},
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "loading 3 batch(es)" in line, line
    time.sleep(0.5)  # inside the validation or the merge
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stderr.close()
    assert warehouse_rows(pg_ws, "SELECT COUNT(*) FROM events") in ([(0,)], [(180_000,)])

    pg_ws.cli("load", "--local", check=True, timeout=300)
    assert warehouse_rows(pg_ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM events") == [
        (180_000, 180_000)]
    runs = pg_ws.cli_json("history")
    assert [r["status"] for r in runs] == ["success"] * 3
    assert sum(r["rows_loaded"] for r in runs) == 180_000
