"""The ledger lost in the middle of a run (a real PostgreSQL behind a TCP proxy the test cuts;
the warehouse and the store stay reachable): the CLI names the ledger, not the job; the run
ends failed, or is found by the sweeper; the staged objects no batch refers to are removed by
housekeeping after the grace period; nothing loads twice."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import S3, TcpProxy, Workspace, create_table, warehouse_rows

from jankycron import housekeeping
from jankycron.discovery import discover
from jankycron.errors import LedgerUnavailable
from jankycron.ledger import Ledger
from jankycron.schedule import Interval
from jankycron.store import open_store

JOB = '''
import os, time
from pathlib import Path
from jankycron import job

@job(schedule="0 0 * * *", table="events", key="id", timeout="2m")
def events(run):
    flags = Path(os.environ["FLAGS"])
    for i in range(100):
        yield {"id": i, "day": run.start.day}
    (flags / "extracting").touch()
    while not (flags / "go").exists():  # the test cuts the ledger now
        time.sleep(0.05)
    for i in range(100, 200):
        yield {"id": i, "day": run.start.day}
'''


class Alerts:
    """Records what the sweeper would send."""

    def __init__(self) -> None:
        self.lost: list[str] = []

    def run_lost(self, job: Any, run: dict[str, Any], detail: str) -> None:
        self.lost.append(run["run_id"])


@pytest.fixture
def proxy() -> TcpProxy:
    p = TcpProxy("127.0.0.1", 5432)
    yield p
    p.close()


def _setup(ws: Workspace, proxy: TcpProxy, tmp_path: Path) -> tuple[str, Path]:
    db = ws.env["JANKYCRON_STATE_URL"].rsplit("/", 1)[1]
    ledger_url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{db}"
    flags = tmp_path / "flags"
    flags.mkdir()
    ws.env.update({"JANKYCRON_STATE_URL": ledger_url, "JANKYCRON_HEARTBEAT": "1s",
                   "FLAGS": str(flags)})
    create_table(ws, "CREATE TABLE events (id bigint NOT NULL, day int)")
    ws.write_job("events", JOB)
    return ledger_url, flags


def _run_and_cut(ws: Workspace, proxy: TcpProxy, flags: Path, back_after: float | None
                 ) -> subprocess.CompletedProcess:
    """``jankycron run --local``; the ledger is cut while the job is in its generator, and
    comes back ``back_after`` seconds later (None: after the CLI gave up)."""
    proc = subprocess.Popen([sys.executable, "-m", "jankycron", "run", "events", "--date",
                             "2026-11-20", "--local"], cwd=ws.path, text=True,
                            env={**os.environ, **ws.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (flags / "extracting").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proxy.cut()
    (flags / "go").touch()
    if back_after is not None:
        time.sleep(back_after)
        proxy.restore()
    out, err = proc.communicate(timeout=120)
    if back_after is None:
        proxy.restore()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _staged(s3: S3, ws: Workspace) -> list[str]:
    bucket = ws.env["JANKYCRON_STORE_URL"].split("/")[2]
    return s3.keys(bucket, "jankycron/staging/")


def _assert_names_the_ledger(done: subprocess.CompletedProcess, ledger_url: str) -> None:
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: ledger {ledger_url} is unreachable ("), done.stderr
    assert "Traceback" not in done.stderr and "job events failed" not in done.stderr


def test_a_ledger_lost_mid_run_and_not_back_leaves_the_run_to_the_sweeper(
        pg_ws: Workspace, proxy: TcpProxy, s3: S3, tmp_path: Path) -> None:
    ledger_url, flags = _setup(pg_ws, proxy, tmp_path)
    done = _run_and_cut(pg_ws, proxy, flags, back_after=None)
    _assert_names_the_ledger(done, ledger_url)
    orphaned = _staged(s3, pg_ws)
    assert any(k.endswith("manifest.json") for k in orphaned)  # staged, never recorded

    settings = pg_ws.settings
    registry, _ = discover(pg_ws.jobs)
    store = open_store(settings)
    ledger = Ledger(ledger_url)
    try:
        (run,) = ledger.history()
        assert run["status"] == "running"  # the failure could not be recorded: heartbeat stops
        alerts, enqueued = Alerts(), []
        now = datetime.now(UTC)
        housekeeping.sweep(ledger, registry, alerts, settings, now + timedelta(seconds=10),
                           lambda job, interval, row: enqueued.append(interval))
        assert ledger.run(run["run_id"])["status"] == "lost"
        assert alerts.lost == [run["run_id"]] and len(enqueued) == 1

        assert "nothing pending" in pg_ws.cli("load", "--local", check=True).stdout
        # Within the grace period (1 day) nothing is removed; after it, the orphans are.
        assert pg_ws.cli_json("orphans") == []
        assert housekeeping.remove_orphans(ledger, store, registry, settings, now) == []
        assert _staged(s3, pg_ws) == orphaned
        later = now + timedelta(days=1, minutes=1)
        (gone,) = housekeeping.remove_orphans(ledger, store, registry, settings, later)
        assert (gone.run_id, gone.table, gone.status) == (run["run_id"], "events", "lost")
        assert sorted(gone.keys) == [k.removeprefix("jankycron/") for k in orphaned]
        assert _staged(s3, pg_ws) == []

        # The rerun the sweeper enqueued lands every row once; housekeeping keeps its batch.
        pg_ws.cli("run", "events", "--date", "2026-11-20", "--local", check=True)
        assert warehouse_rows(pg_ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM events") == [
            (200, 200)]
        kept = _staged(s3, pg_ws)
        assert kept and housekeeping.remove_orphans(ledger, store, registry, settings,
                                                     later + timedelta(days=1)) == []
        assert _staged(s3, pg_ws) == kept
    finally:
        ledger.close()


def test_a_ledger_back_within_seconds_records_the_run_failed(
        pg_ws: Workspace, proxy: TcpProxy, s3: S3, tmp_path: Path) -> None:
    ledger_url, flags = _setup(pg_ws, proxy, tmp_path)
    done = _run_and_cut(pg_ws, proxy, flags, back_after=2.0)
    _assert_names_the_ledger(done, ledger_url)
    (run,) = pg_ws.cli_json("history")
    assert run["status"] == "failed"
    assert run["error"].startswith(f"ledger {ledger_url} is unreachable")

    ledger = Ledger(ledger_url)
    try:
        later = datetime.now(UTC) + timedelta(days=1, minutes=1)
        (gone,) = housekeeping.remove_orphans(ledger, open_store(pg_ws.settings),
                                              discover(pg_ws.jobs)[0], pg_ws.settings, later)
    finally:
        ledger.close()
    assert gone.status == "failed" and len(gone.keys) >= 2
    assert _staged(s3, pg_ws) == []
    pg_ws.cli("run", "events", "--date", "2026-11-20", "--local", check=True)
    assert warehouse_rows(pg_ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM events") == [
        (200, 200)]


def test_the_ledger_maps_a_lost_connection_and_reconnects(pg_url: str, proxy: TcpProxy
                                                          ) -> None:
    db = pg_url.rsplit("/", 1)[1]
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{proxy.port}/{db}"
    ledger = Ledger(url)
    try:
        proxy.cut()
        with pytest.raises(LedgerUnavailable) as e:
            ledger.history()
        assert str(e.value).startswith(
            f"ledger postgresql://postgres:***@127.0.0.1:{proxy.port}/{db} is unreachable (")
        assert "s3cret-pw" not in str(e.value)
        with pytest.raises(LedgerUnavailable):  # still down: the reconnect is refused
            ledger.history()
        proxy.restore()
        assert ledger.history() == []  # back: a new connection, no restart needed
    finally:
        ledger.close()


def test_a_locked_sqlite_ledger_is_unavailable_not_a_bug(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    ledger = Ledger(url)
    ledger.conn.execute("PRAGMA busy_timeout=100")  # not 30 s, for the test
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LedgerUnavailable, match=r"is unreachable \(database is locked\)"):
            ledger.start_run("events", Interval(datetime(2026, 11, 20, tzinfo=UTC),
                                                datetime(2026, 11, 21, tzinfo=UTC)))
    finally:
        other.execute("ROLLBACK")
        other.close()
        ledger.close()



def test_a_run_declared_lost_while_it_ran_records_nothing(duck_ws: Workspace) -> None:
    """The sweeper marked the run lost (its heartbeats did not reach the ledger) and may have
    enqueued the interval again; when the old run finishes staging, it must not record its
    batch, or the interval's data could load twice."""
    create_table(duck_ws, "CREATE TABLE events (id bigint NOT NULL, day int)")
    duck_ws.write_job("events", '''
from jankycron import job
from jankycron.ledger import Ledger

@job(schedule="0 0 * * *", table="events", key="id")
def events(run):
    yield {"id": 1, "day": 1}
    other = Ledger(STATE)   # what the sweeper does from another process
    other.mark_lost(run.run_id, "lost: no heartbeat")
    other.close()
    yield {"id": 2, "day": 1}
'''.replace("STATE", repr(duck_ws.env["JANKYCRON_STATE_URL"])))
    done = duck_ws.cli("run", "events", "--date", "2026-11-20", "--local")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: run ")
    assert "is lost in the ledger" in done.stderr and "Traceback" not in done.stderr
    (run,) = duck_ws.cli_json("history")
    assert run["status"] == "lost" and run["rows_staged"] == 0
    assert "nothing pending" in duck_ws.cli("load", "--local", check=True).stdout
    assert warehouse_rows(duck_ws, "SELECT COUNT(*) FROM events") == [(0,)]


def test_parts_of_a_run_that_failed_mid_extraction_are_removed_after_the_grace(
        duck_ws: Workspace) -> None:
    """A job that raised after some parts were uploaded left them in the store for good."""
    create_table(duck_ws, "CREATE TABLE events (id bigint NOT NULL, day int)")
    duck_ws.write_job("events", '''
from jankycron import job

@job(schedule="0 0 * * *", table="events", key="id")
def events(run):
    for i in range(2000):
        yield {"id": i, "day": 1}
    raise RuntimeError("the API went away")
''')
    duck_ws.env["JANKYCRON_PART_SIZE"] = "4kb"
    assert duck_ws.cli("run", "events", "--date", "2026-11-20", "--local").returncode == 1
    store = duck_ws.path / "store"
    parts = sorted(store.rglob("*.ndjson.gz"))
    assert parts and not list(store.rglob("manifest.json"))
    assert duck_ws.cli_json("orphans") == []  # within JANKYCRON_ORPHAN_GRACE (1 day)

    db = sqlite3.connect(duck_ws.settings.state_url[len("sqlite:///"):])
    db.execute("UPDATE jc_runs SET started_at = '2026-01-01T00:00:00Z', "
               "finished_at = '2026-01-01T00:01:00Z'")  # as if it failed long ago
    db.commit()
    db.close()
    (listed,) = duck_ws.cli_json("orphans")
    assert (listed["status"], listed["removed"]) == ("failed", False)
    assert listed["objects"] == len(list(store.rglob("part-*")))
    assert sorted(store.rglob("*.ndjson.gz")) == parts  # listing removes nothing
    removed = duck_ws.cli("orphans", "--remove", check=True).stdout
    assert f"removed {listed['objects']} object(s)" in removed
    assert not list(store.rglob("part-*"))
    assert duck_ws.cli_json("orphans") == []  # looked at once

    duck_ws.write_job("events", '''
from jankycron import job

@job(schedule="0 0 * * *", table="events", key="id")
def events(run):
    for i in range(2000):
        yield {"id": i, "day": 1}
''')
    duck_ws.cli("run", "events", "--date", "2026-11-20", "--local", check=True)
    assert warehouse_rows(duck_ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM events") == [
        (2000, 2000)]
