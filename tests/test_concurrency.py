"""Two loaders at once, and a loader that dies between the warehouse commit and the ledger
update: every row lands exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

from conftest import Workspace, create_table, warehouse_rows

from jankycron.discovery import discover
from jankycron.ledger import BatchStatus
from jankycron.load import Loader
from jankycron.runner import Context, run_job

JOB = '''
from jankycron import job

@job(schedule="0 0 * * *", table="items", key="id")
def items(run):
    day = run.start.day
    for i in range(500):
        yield {"id": day * 1000 + i, "day": day}
    yield {"id": day * 1000 + 999, "day": "not a number"}
'''


def _stage_days(ws: Workspace, days: range) -> None:
    create_table(ws, "CREATE TABLE items (id int NOT NULL, day int)")
    ws.write_job("items", JOB)
    registry, errors = discover(ws.jobs)
    assert not errors
    job = registry.get("items")
    ctx = Context(ws.settings)
    try:
        for d in days:
            run_job(ctx, job, job.interval_on(datetime(2026, 11, d, tzinfo=UTC).date()),
                    load=False)
        assert len(ctx.ledger.pending_batches("items")) == len(days)
    finally:
        ctx.close()


def test_two_loaders_racing_on_one_table_load_every_row_once(pg_ws: Workspace) -> None:
    _stage_days(pg_ws, range(1, 13))
    env = {**os.environ, **pg_ws.env}
    procs = [subprocess.Popen([sys.executable, "-m", "jankycron", "load", "--local"],
                              cwd=pg_ws.path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # Both read the same pending list; exactly one merged it.
    assert sum("merged 6,000 rows" in err for _, err in outs) == 1, outs

    assert warehouse_rows(pg_ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM items") == [
        (12 * 500, 12 * 500)]
    assert warehouse_rows(pg_ws, "SELECT COUNT(*) FROM jankycron_loads") == [(12,)]
    runs = pg_ws.cli_json("history")
    assert {r["status"] for r in runs} == {"success"}
    assert sum(r["rows_loaded"] for r in runs) == 12 * 500
    assert sum(r["rows_rejected"] for r in runs) == 12
    assert len(pg_ws.cli_json("deadletters")) == 12


def test_a_loader_that_died_after_commit_does_not_load_again(ws: Workspace) -> None:
    """The merge commits, then the process dies before the ledger says 'loaded'.

    The crash is simulated (the ledger update raises) because a real process cannot be killed
    on demand at exactly that instant."""
    _stage_days(ws, range(1, 3))
    ctx = Context(ws.settings)
    try:
        loader = Loader(ctx.settings, ctx.ledger, ctx.store, ctx.warehouse)
        real_done = ctx.ledger.batches_done

        def die(outcomes):  # the crash: nothing reaches the ledger
            raise KeyboardInterrupt

        ctx.ledger.batches_done = die
        try:
            loader.load_table("items", ("id",))
        except KeyboardInterrupt:
            pass
        ctx.ledger.batches_done = real_done
        assert len(ctx.ledger.pending_batches("items")) == 2  # the ledger still says pending
    finally:
        ctx.close()

    # The next load finds both batches in jankycron_loads and only updates the ledger.
    proc = ws.cli("load", "--local", check=True)
    assert "nothing pending" not in proc.stdout
    assert warehouse_rows(ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM items") == [
        (1000, 1000)]
    runs = ws.cli_json("history")
    assert [r["status"] for r in runs] == ["success", "success"]
    assert [r["rows_loaded"] for r in runs] == [500, 500]
    assert [r["rows_rejected"] for r in runs] == [1, 1]
    ctx = Context(ws.settings)
    try:
        assert ctx.ledger.pending_batches() == []
        assert ctx.ledger._rows("SELECT DISTINCT status FROM jc_batches") == [
            {"status": BatchStatus.LOADED}]
    finally:
        ctx.close()


MANY_PARTS = '''
from jankycron import job

@job(schedule="0 0 * * *", table="items", key="id")
def items(run):
    for i in range(3000):
        yield {"id": i, "day": "bad" if i % 700 == 5 else run.start.day}
'''


def test_validating_while_extracting_across_many_parts(ws: Workspace) -> None:
    """Small parts: PostgreSQL validates each part while the job still yields; bad lines in
    different parts are isolated with their own line numbers."""
    create_table(ws, "CREATE TABLE items (id int NOT NULL, day int)")
    ws.write_job("items", MANY_PARTS)
    proc = ws.cli("-v", "run", "items", "--date", "2026-11-02", "--local", check=True,
                  env={"JANKYCRON_PART_SIZE": "4KB"})
    if ws.settings.warehouse_url.startswith("postgresql"):
        # The parts were validated as they were staged, not read again after extraction.
        assert "staged lines" not in proc.stderr
    assert warehouse_rows(ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM items") == [
        (2995, 2995)]
    letters = ws.cli_json("deadletters")
    assert sorted(d["line"] for d in letters) == [6, 706, 1406, 2106, 2806]
    assert all('"day":"bad"' in d["record"] for d in letters)
    (run,) = ws.cli_json("history")
    assert (run["rows_loaded"], run["rows_rejected"]) == (2995, 5)


def test_a_run_also_loads_older_pending_batches_of_its_table(ws: Workspace) -> None:
    """A batch left pending (its load failed earlier) is loaded by the next run, once."""
    _stage_days(ws, range(1, 2))  # day 1 staged, never loaded
    ws.cli("run", "items", "--date", "2026-11-02", "--local", check=True)
    assert warehouse_rows(ws, "SELECT day, COUNT(*) FROM items GROUP BY day ORDER BY day") == [
        (1, 500), (2, 500)]
    assert [r["status"] for r in ws.cli_json("history")] == ["success", "success"]
