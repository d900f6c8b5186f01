"""Opening the ledger never deadlocks a run (issue 12, item 1), against a real PostgreSQL:
opening a current ledger takes no table lock, the fleet's opens beside loading runs deadlock
nothing and fail nothing, and a transaction PostgreSQL aborts as a deadlock victim is run
again rather than failing the run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
from conftest import _workspace, pg_query

from jankycron import ledger as ledger_mod
from jankycron.errors import LedgerUnavailable
from jankycron.ledger import BatchStatus, Ledger, RunStatus
from jankycron.schedule import Interval

JOB = '''
from jankycron import job

@job(schedule="0 0 * * *", table="items_{n}", key="id")
def items_{n}(run):
    for i in range(200):
        yield {{"id": run.start.day * 1000 + i, "day": run.start.day}}
'''
JOBS, DAYS = 6, 6

# One loading process: every day of one job, each run extracted, staged and loaded.
RUNNER = '''
import sys
from datetime import UTC, datetime
from jankycron.config import Settings
from jankycron.discovery import discover
from jankycron.runner import Context, run_job
import os

name, days = sys.argv[1], int(sys.argv[2])
settings = Settings.from_env(os.environ)
registry, _ = discover(settings.jobs_path)
job = registry.get(name)
failures = 0
for d in range(1, days + 1):
    ctx = Context(settings)  # a fresh ledger open per run, as a worker's task does
    try:
        run_job(ctx, job, job.interval_on(datetime(2026, 11, d, tzinfo=UTC).date()))
    except Exception as e:
        failures += 1
        print(f"FAILED {name} day {d}: {type(e).__name__}: {e}", flush=True)
    finally:
        ctx.close()
sys.exit(failures)
'''

# The CLI, the status page and beat's ticks open the ledger all the time: as fast as it can.
OPENER = '''
import os, sys, time
from jankycron.ledger import Ledger
url, until = os.environ["JANKYCRON_STATE_URL"], time.monotonic() + float(sys.argv[1])
opens = errors = 0
while time.monotonic() < until:
    try:
        ledger = Ledger(url)
        ledger.history(limit=5)
        ledger.close()
        opens += 1
    except Exception as e:
        errors += 1
        print(f"ERROR {type(e).__name__}: {e}", flush=True)
print(f"opens={opens} errors={errors}", flush=True)
sys.exit(1 if errors else 0)
'''


@pytest.fixture
def pg_ledger_ws(tmp_path: Path, pg_url: str):
    """A PostgreSQL ledger and warehouse, a local-folder store."""
    ws = _workspace(tmp_path, {"JANKYCRON_STATE_URL": pg_url, "JANKYCRON_WAREHOUSE_URL": pg_url})
    for n in range(JOBS):
        ws.write_job(f"items_{n}", JOB.format(n=n))
        pg_query(pg_url, f"CREATE TABLE items_{n} (id int NOT NULL, day int)")
    Ledger(pg_url).close()  # the schema, as the first deploy leaves it
    return ws


@pytest.mark.slow
def test_a_fleet_opening_the_ledger_beside_loading_runs_deadlocks_nothing(pg_ledger_ws) -> None:
    ws = pg_ledger_ws
    env = {**os.environ, **ws.env}
    (ws.path / "runner.py").write_text(textwrap.dedent(RUNNER))
    (ws.path / "opener.py").write_text(textwrap.dedent(OPENER))
    runners = [subprocess.Popen([sys.executable, "runner.py", f"items_{n}", str(DAYS)],
                                cwd=ws.path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for n in range(JOBS)]
    openers = [subprocess.Popen([sys.executable, "opener.py", "25"], cwd=ws.path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(3)]
    outs = [p.communicate(timeout=240)[0] for p in runners + openers]
    everything = "\n".join(outs)
    assert "eadlock" not in everything, everything
    assert [p.returncode for p in runners + openers] == [0] * (JOBS + 3), everything
    assert all("errors=0" in out for out in outs[JOBS:]), outs[JOBS:]

    # Every run landed and says so: no failed run, so no run_failed alert.
    runs = ws.cli_json("history", "--limit", "1000")
    assert len(runs) == JOBS * DAYS
    assert {r["status"] for r in runs} == {RunStatus.SUCCESS}, runs
    for n in range(JOBS):
        assert pg_query(ws.env["JANKYCRON_STATE_URL"],
                        f"SELECT COUNT(*), COUNT(DISTINCT id) FROM items_{n}") == [
            (DAYS * 200, DAYS * 200)]


def test_opening_a_current_ledger_takes_no_table_lock(pg_url: str) -> None:
    """Another session holds every ledger table in ACCESS EXCLUSIVE mode (what a migration or
    a ``LOCK TABLE`` does): opening the ledger does not wait on it, so it cannot be part of a
    lock cycle with a loader either."""
    Ledger(pg_url).close()
    holder = psycopg2.connect(pg_url)
    opened: list[Ledger] = []
    opener = threading.Thread(target=lambda: opened.append(Ledger(pg_url)), daemon=True)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE jc_runs, jc_batches, jc_table_state, jc_job_state, "
                        "jc_deadletters, jc_schedule IN ACCESS EXCLUSIVE MODE")
        opener.start()
        opener.join(10)
        assert opened, "opening the ledger waited on a table lock"
    finally:
        holder.rollback()
        holder.close()
        opener.join(30)  # (a waiting open finishes once the locks are gone)
        for ledger in opened:
            ledger.close()


def test_an_older_ledger_is_upgraded_once_then_opens_without_ddl(pg_url: str) -> None:
    """A ledger from before schema versions (no jc_meta) is upgraded on its first open and
    records the version; later opens only read it."""
    Ledger(pg_url).close()
    pg_query(pg_url, "DROP TABLE jc_meta; DROP INDEX jc_runs_status")  # as an old release left it
    Ledger(pg_url).close()
    assert pg_query(pg_url, "SELECT value FROM jc_meta") == [(str(ledger_mod.SCHEMA_VERSION),)]
    assert pg_query(pg_url, "SELECT 1 FROM pg_indexes WHERE indexname = 'jc_runs_status'") == [
        (1,)]

    statements: list[str] = []

    class Tracing(psycopg2.extensions.connection):
        def cursor(self, *args, **kwargs):
            kwargs.setdefault("cursor_factory", TracingCursor)
            return super().cursor(*args, **kwargs)

    class TracingCursor(psycopg2.extensions.cursor):
        def execute(self, sql, args=None):
            statements.append(sql)
            return super().execute(sql, args)

    real = psycopg2.connect
    psycopg2.connect = lambda *a, **kw: real(*a, connection_factory=Tracing, **kw)
    try:
        Ledger(pg_url).close()
    finally:
        psycopg2.connect = real
    assert statements == ["SELECT value FROM jc_meta WHERE key = 'schema_version'"]


def _staged_run(ledger: Ledger) -> tuple[str, str]:
    interval = Interval(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
    run_id = ledger.start_run("items", interval)
    ledger.finish_run(run_id, RunStatus.STAGED, rows_extracted=3, rows_staged=3)
    return run_id, ledger.add_batch(run_id, "items", interval, "items", "m/items", 3, {})


def test_a_load_chosen_as_deadlock_victim_is_retried_not_failed(pg_url: str, caplog) -> None:
    """A real deadlock: another session locks the run's row, then waits on the batch's row
    that the loader's bookkeeping holds, while the loader waits on the run's row. PostgreSQL
    aborts one of the two (after deadlock_timeout, 1 s); if it is the loader, its transaction
    runs again from the start. Either way the run ends ``success`` with its rows."""
    ledger = Ledger(pg_url)
    run_id, batch_id = _staged_run(ledger)
    other = psycopg2.connect(pg_url)
    other_error: list[BaseException] = []
    try:
        with other.cursor() as cur:
            cur.execute("UPDATE jc_runs SET error = NULL WHERE id = %s", (run_id,))
        ready = threading.Event()

        def the_other_session() -> None:
            ready.wait(10)
            time.sleep(0.3)  # the loader holds the batch row and waits on the run row now
            try:
                with other.cursor() as cur:
                    cur.execute("UPDATE jc_batches SET rows = rows WHERE id = %s", (batch_id,))
                other.commit()
            except psycopg2.extensions.TransactionRollbackError as e:
                other_error.append(e)
                other.rollback()

        thread = threading.Thread(target=the_other_session, daemon=True)
        thread.start()
        real_roll_up = ledger._roll_up

        def roll_up(cur, *args):  # the moment the loader holds the batch row
            ready.set()
            return real_roll_up(cur, *args)

        ledger._roll_up = roll_up  # type: ignore[method-assign]
        ledger.batches_done({batch_id: (BatchStatus.LOADED, 3, 0, {})})
        thread.join(20)
    finally:
        other.close()
    run = ledger.run(run_id)
    assert (run["status"], run["rows_loaded"]) == (RunStatus.SUCCESS, 3)
    # The loader waited first, so its deadlock check fired first: it was the victim, retried.
    assert not other_error
    assert "ledger: deadlock detected; trying again (2 of 8)" in caplog.text
    ledger.close()


def test_serialization_failures_past_the_retries_are_one_line_unavailable(pg_url: str,
                                                                           monkeypatch) -> None:
    """A transaction that keeps being aborted (here: a body that raises PostgreSQL's
    SerializationFailure on every try, which a real server cannot be made to do on demand)
    is tried RETRIES times, then fails as LedgerUnavailable (transient: the task retries),
    with one clear line."""
    monkeypatch.setattr(ledger_mod, "RETRY_PAUSE", 0.001)
    ledger = Ledger(pg_url)
    tries = []

    def body(cur):
        tries.append(1)
        cur.execute("SELECT 1")
        raise psycopg2.errors.SerializationFailure("could not serialize access")

    with pytest.raises(LedgerUnavailable) as e:
        ledger.atomic(body)
    assert len(tries) == ledger_mod.RETRIES
    assert "busy (could not serialize access" in str(e.value)
    assert "\n" not in str(e.value)
    # ... and one that fails once, then succeeds, is simply done.
    tries.clear()

    def flaky(cur):
        tries.append(1)
        cur.execute("INSERT INTO jc_job_state (job, state, updated_at) VALUES ('j', '{}', 'x') "
                    "ON CONFLICT (job) DO UPDATE SET state = excluded.state")
        if len(tries) == 1:
            raise psycopg2.errors.DeadlockDetected("deadlock detected")
        return "done"

    assert ledger.atomic(flaky) == "done"
    assert len(tries) == 2
    assert ledger.get_state("j") == {}
    ledger.close()
