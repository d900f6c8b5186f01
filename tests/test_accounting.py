"""Accounting a user can reconcile: for every run, ``rows_extracted = rows_loaded +
rows_rejected + rows_replaced``, where ``rows_loaded`` is the rows that landed and
``rows_replaced`` counts the records a later record of the same run with the same key replaced.

On both backends (DuckDB + SQLite ledger, PostgreSQL + S3 emulator + PostgreSQL ledger), and on
PostgreSQL on each of its load paths: validating while extracting (a ``--local`` run), the
direct load (staged, then ``load``), and the validated load (the direct load turned down, as
``tests/test_direct.py`` does). The Redshift merge is covered in ``tests/test_redshift.py``.
"""

from __future__ import annotations

import sqlite3
from datetime import date

import psycopg2
import pytest
from conftest import Workspace, create_table, warehouse_rows

from jankycron.config import Settings
from jankycron.discovery import discover
from jankycron.ledger import SCHEMA, Ledger
from jankycron.load import LoadResult
from jankycron.load.postgres import PostgresSession
from jankycron.runner import Context, load_tables, run_job
from jankycron.web import create_app

TABLE = "CREATE TABLE orders (id bigint NOT NULL, v varchar(20), amount numeric(10,2))"

# 494 records, and key 7 twice: the last one wins, the first is replaced.
TWICE = '''
from jankycron import job

@job(schedule="0 0 * * *", table="orders", key="id")
def orders(run):
    for i in range(493):
        yield {"id": i, "v": "first"}
    yield {"id": 7, "v": "again"}
'''

DAY = date(2026, 11, 20)


def _job(ws: Workspace, name: str = "orders"):
    registry, errors = discover(ws.jobs)
    assert not errors
    return registry.get(name)


def _stage(ws: Workspace, days: list[date], name: str = "orders") -> list[str]:
    """Run the job for each day without loading; the run ids."""
    job = _job(ws, name)
    ctx = Context(ws.settings, progress=lambda _: None)
    try:
        return [run_job(ctx, job, job.interval_on(d), load=False)["run_id"] for d in days]
    finally:
        ctx.close()


def _load(ws: Workspace, name: str = "orders") -> list[LoadResult]:
    job = _job(ws, name)
    ctx = Context(ws.settings, progress=lambda _: None)
    try:
        return load_tables(ctx, job.tables)
    finally:
        ctx.close()


def _history(ws: Workspace) -> dict[str, dict]:
    return {r["run_id"]: r for r in ws.cli_json("history")}


def _reconciles(run: dict) -> bool:
    return run["rows_extracted"] == (run["rows_loaded"] + run["rows_rejected"]
                                     + run["rows_replaced"])


# (backend, how the batch loads): in the run itself (``--local``; PostgreSQL validates while
# the job extracts), or staged and then loaded (PostgreSQL: the direct load, or held to the
# validated path; DuckDB has only the validated path).
LOADS = [("duckdb", "run"), ("duckdb", "staged"), ("postgresql", "run"),
         ("postgresql", "direct"), ("postgresql", "validated")]


def _workspace_for(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
                   ) -> tuple[Workspace, str]:
    backend, path = request.param
    ws = request.getfixturevalue("duck_ws" if backend == "duckdb" else "pg_ws")
    if path == "validated":
        monkeypatch.setattr(PostgresSession, "load_direct", lambda *a, **k: False)
    return ws, path


@pytest.fixture(params=LOADS, ids=["-".join(x) for x in LOADS])
def loads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
          ) -> tuple[Workspace, str]:
    return _workspace_for(request, monkeypatch)


STAGED = [x for x in LOADS if x[1] != "run"]


@pytest.fixture(params=STAGED, ids=["-".join(x) for x in STAGED])
def staged_loads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
                 ) -> tuple[Workspace, str]:
    return _workspace_for(request, monkeypatch)


def _run_or_stage_and_load(ws: Workspace, path: str, day: date = DAY) -> tuple[dict, bool]:
    """One run of ``orders`` for ``day`` along ``path``: its history row, and whether the load
    went direct."""
    if path == "run":
        proc = ws.cli("run", "orders", "--date", day.isoformat(), "--local", check=True)
        return {**ws.cli_json("history")[0], "stdout": proc.stdout}, False
    (run_id,) = _stage(ws, [day])
    (result,) = _load(ws)
    return _history(ws)[run_id], result.direct


def test_a_run_that_yields_one_key_twice_says_493_loaded_1_replaced(
        loads: tuple[Workspace, str]) -> None:
    ws, path = loads
    create_table(ws, TABLE)
    ws.write_job("orders", TWICE)
    run, direct = _run_or_stage_and_load(ws, path)
    assert direct == (path == "direct")
    assert (run["status"], run["rows_extracted"], run["rows_loaded"], run["rows_rejected"],
            run["rows_replaced"]) == ("success", 494, 493, 0, 1)
    assert warehouse_rows(ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM orders") == [(493, 493)]
    assert warehouse_rows(ws, "SELECT v FROM orders WHERE id = 7") == [("again",)]
    if path == "run":  # the run summary says so
        assert ("494 extracted, 493 loaded, 0 dead-lettered, 1 replaced by a later record "
                "with the same key") in run["stdout"]


DEAD_DUPLICATE = '''
from jankycron import job

@job(schedule="0 0 * * *", table="orders", key="id")
def orders(run):
    for i in range(100):
        yield {"id": i, "v": "ok", "amount": "1.50"}
    yield {"id": 1, "v": "later, bad", "amount": "1.555"}   # dead letter: 1 stays "ok"
    yield {"id": 2, "v": "later", "amount": "2.00"}         # replaces 2
    yield {"id": 2, "v": "last, bad", "amount": "2.555"}    # dead letter: "later" lands
    yield {"id": 3, "v": "cannot stage", "amount": float("nan")}  # dead letter at stage
'''


def test_a_later_duplicate_that_is_dead_lettered_does_not_replace(
        loads: tuple[Workspace, str]) -> None:
    ws, path = loads
    create_table(ws, TABLE)
    ws.write_job("orders", DEAD_DUPLICATE)
    run, _ = _run_or_stage_and_load(ws, path)
    assert (run["rows_extracted"], run["rows_loaded"], run["rows_rejected"],
            run["rows_replaced"]) == (104, 100, 3, 1)
    assert _reconciles(run)
    assert warehouse_rows(ws, "SELECT id, v FROM orders WHERE id IN (1, 2, 3) ORDER BY id") == [
        (1, "ok"), (2, "later"), (3, "ok")]
    assert sorted(d["phase"] for d in ws.cli_json("deadletters")) == ["load", "load", "stage"]


# Key 1 in every interval (twice in the first and the last); the others are the interval's own.
SHARED = '''
from jankycron import job

@job(schedule="0 0 * * *", table="orders", key="id")
def orders(run):
    day = run.start.day
    yield {"id": 1, "v": f"day {day}"}
    for i in range(10):
        yield {"id": day * 100 + i, "v": "own"}
    if day != 21:
        yield {"id": 1, "v": f"day {day} again"}
'''


def test_a_backfill_counts_a_key_shared_by_intervals_as_loaded_in_each(
        staged_loads: tuple[Workspace, str]) -> None:
    """Three intervals staged, then loaded in one merge (as ``backfill`` does): the newest
    interval's key 1 lands; the older intervals' key 1 counts as loaded for their own runs
    (it is what their interval held), and only the repeat inside a run counts as replaced."""
    ws, path = staged_loads
    create_table(ws, TABLE)
    ws.write_job("orders", SHARED)
    ids = _stage(ws, [date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)])
    (result,) = _load(ws)
    assert result.direct == (path == "direct")
    runs = _history(ws)
    got = [(runs[r]["rows_extracted"], runs[r]["rows_loaded"], runs[r]["rows_replaced"])
           for r in ids]
    assert got == [(12, 11, 1), (11, 11, 0), (12, 11, 1)]
    assert (result.rows_loaded, result.rows_replaced) == (33, 2)
    assert warehouse_rows(ws, "SELECT COUNT(*) FROM orders") == [(31,)]
    assert warehouse_rows(ws, "SELECT v FROM orders WHERE id = 1") == [("day 22 again",)]


def test_the_counts_add_up_over_history_for_reruns_and_replay(ws: Workspace) -> None:
    """Duplicates, dead letters at stage and at load, a rerun of a loaded interval, a rerun
    that supersedes a pending one, and a replay (with a key twice among the replayed records)
    after the column is widened: every run that loaded reconciles."""
    create_table(ws, TABLE)
    ws.write_job("orders", '''
        from jankycron import job

        @job(schedule="0 0 * * *", table="orders", key="id")
        def orders(run):
            day = run.start.day
            for i in range(50):
                yield {"id": day * 100 + i, "v": "ok"}
            yield {"id": day * 100, "v": "replaces the first"}
            yield {"id": day * 100 + 60, "v": "1", "amount": "1.555"}  # too many places
            yield {"id": day * 100 + 60, "v": "2", "amount": "1.556"}
            yield {"id": day * 100 + 61, "v": {1, 2}}       # a set: JSON cannot hold it
    ''')
    ws.cli("run", "orders", "--date", "2026-11-20", "--local", check=True)
    ws.cli("run", "orders", "--date", "2026-11-20", "--local", check=True)  # a rerun
    _stage(ws, [date(2026, 11, 21)])
    _stage(ws, [date(2026, 11, 21)])  # supersedes the pending one
    _load(ws)
    create_table(ws, "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(10,3)")
    ws.cli("deadletters", "replay", "orders", check=True)

    runs = ws.cli_json("history")
    statuses = sorted(r["status"] for r in runs)
    assert statuses == ["success"] * 4 + ["superseded"], runs
    for r in runs:
        if r["status"] == "success":
            assert _reconciles(r), r
    extraction = [r for r in runs if r["rows_extracted"] == 54 and r["status"] == "success"]
    assert [(r["rows_loaded"], r["rows_rejected"], r["rows_replaced"]) for r in extraction] == [
        (50, 3, 1)] * 3
    (superseded,) = [r for r in runs if r["status"] == "superseded"]
    assert (superseded["rows_loaded"], superseded["rows_replaced"]) == (0, 0)
    # The replay: the two open dead letters of each interval's key 60 (the superseded and the
    # rerun-replaced ones are no longer listed); within the replay, one replaces the other.
    (replayed,) = [r for r in runs if r["rows_extracted"] == 4]
    assert (replayed["rows_loaded"], replayed["rows_rejected"], replayed["rows_replaced"]) == (
        2, 0, 2)
    assert warehouse_rows(ws, "SELECT id, v FROM orders WHERE id IN (2060, 2160) ORDER BY id") == [
        (2060, "2"), (2160, "2")]
    assert warehouse_rows(ws, "SELECT COUNT(*) FROM orders") == [(102,)]


def test_history_and_run_json_carry_rows_replaced(ws: Workspace) -> None:
    create_table(ws, TABLE)
    ws.write_job("orders", TWICE)
    (run,) = ws.cli_json("run", "orders", "--date", "2026-11-20", "--local")
    assert (run["rows_loaded"], run["rows_replaced"]) == (493, 1)
    (row,) = ws.cli_json("history")
    assert {"rows_extracted", "rows_staged", "rows_loaded", "rows_rejected",
            "rows_replaced"} <= set(row)
    assert (row["rows_staged"], row["rows_loaded"], row["rows_replaced"]) == (494, 493, 1)
    header, line = ws.cli("history", check=True).stdout.splitlines()
    assert header.split()[4:8] == ["STAGED", "LOADED", "REJECTED", "REPLACED"]
    assert line.split()[4:8] == ["494", "493", "0", "1"]


def test_a_ledger_from_before_rows_replaced_opens_and_reads(ws: Workspace) -> None:
    """A ledger created by the first release (no upgrade columns at all), with a run in it,
    opens, shows the old run with 0 replaced, and counts new runs."""
    url = ws.settings.state_url
    old_run = ("20261101T000000000000Z-aaaaaa", "orders", "2026-10-31T00:00:00Z",
               "2026-11-01T00:00:00Z", "success", 5, 5, 5, 0, "{}", "2026-11-01T00:01:00Z",
               "2026-11-01T00:02:00Z", None)
    insert = ("INSERT INTO jc_runs (id, job, interval_start, interval_end, status, "
              "rows_extracted, rows_staged, rows_loaded, rows_rejected, dropped_keys, "
              "started_at, finished_at, error) VALUES (" + ", ".join(["{}"] * 13) + ")")
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        for stmt in SCHEMA:
            conn.execute(stmt)
        conn.execute(insert.format(*["?"] * 13), old_run)
        conn.commit()
        conn.close()
    else:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            for stmt in SCHEMA:
                cur.execute(stmt)
            cur.execute(insert.format(*["%s"] * 13), old_run)
        conn.close()

    (old,) = ws.cli_json("history")
    assert (old["rows_loaded"], old["rows_replaced"]) == (5, 0)
    create_table(ws, TABLE)
    ws.write_job("orders", TWICE)
    ws.cli("run", "orders", "--date", "2026-11-20", "--local", check=True)
    new, old = ws.cli_json("history")
    assert (new["rows_loaded"], new["rows_replaced"], old["rows_replaced"]) == (493, 1, 0)
    ledger = Ledger(url)  # opening it again changes nothing
    try:
        assert len(ledger.history()) == 2
    finally:
        ledger.close()


def test_a_loader_that_died_after_commit_records_the_replaced_count(ws: Workspace) -> None:
    """The merge commits, then the process dies before the ledger update; the next load reads
    the batch back from the warehouse's ``jankycron_loads`` and the run still reconciles.

    The crash is simulated (the ledger update raises), as in tests/test_concurrency.py: a real
    process cannot be killed on demand at exactly that instant."""
    create_table(ws, TABLE)
    ws.write_job("orders", TWICE)
    (run_id,) = _stage(ws, [DAY])
    job = _job(ws)
    ctx = Context(ws.settings, progress=lambda _: None)
    try:
        def die(outcomes):  # noqa: ANN001, ANN202
            raise KeyboardInterrupt

        ctx.ledger.batches_done = die
        with pytest.raises(KeyboardInterrupt):
            ctx.loader.load_table("orders", job.tables["orders"])
    finally:
        ctx.close()
    ws.cli("load", "--local", check=True)
    run = _history(ws)[run_id]
    assert (run["status"], run["rows_loaded"], run["rows_replaced"]) == ("success", 493, 1)
    assert warehouse_rows(ws, "SELECT COUNT(*) FROM orders") == [(493,)]


def test_the_status_page_and_metrics_show_the_replaced_count(duck_ws: Workspace) -> None:
    create_table(duck_ws, TABLE)
    duck_ws.write_job("orders", TWICE)
    duck_ws.cli("run", "orders", "--date", "2026-11-20", "--local", check=True)
    client = create_app(Settings.from_env({**duck_ws.env, "JANKYCRON_LOCK_URL": "off"})
                        ).test_client()
    assert "493 / 0 (1 replaced)" in client.get("/jobs/orders").get_data(as_text=True)
    metrics = client.get("/metrics").get_data(as_text=True).splitlines()
    assert 'jankycron_rows_loaded_total{table="orders"} 493.0' in metrics
    assert 'jankycron_rows_replaced_total{table="orders"} 1.0' in metrics
