"""Reruns and backfills replace rows by key; they never duplicate them."""

from __future__ import annotations

from datetime import date

from conftest import Workspace, create_table, warehouse_rows

from jankycron.discovery import discover
from jankycron.runner import Context, run_job

TABLE = "CREATE TABLE events (id bigint NOT NULL, day varchar(10), version varchar(20))"

# Two records per day; the record with id = 100 appears on every day (a slowly changing
# entity), so overlapping intervals carry the same key with different values.
JOB = '''
from jankycron import job

@job(schedule="0 0 * * *", table="events", key="id")
def events(run):
    day = run.start.date().isoformat()
    n = int(run.start.strftime("%Y%m%d"))
    yield {"id": n, "day": day, "version": run.state.get("version", "v1")}
    yield {"id": 100, "day": day, "version": "shared"}
'''


def _rows(ws: Workspace) -> list[tuple]:
    return warehouse_rows(ws, "SELECT id, day, version FROM events ORDER BY id")


def test_rerun_of_the_same_interval_replaces(ws: Workspace) -> None:
    create_table(ws, TABLE)
    ws.write_job("events", JOB)
    for _ in range(3):
        ws.cli("run", "events", "--date", "2026-11-20", "--local", check=True)
    assert _rows(ws) == [(100, "2026-11-20", "shared"), (20261120, "2026-11-20", "v1")]
    runs = ws.cli_json("history")
    assert [r["status"] for r in runs] == ["success"] * 3


def test_overlapping_backfill_leaves_one_row_per_key(ws: Workspace) -> None:
    create_table(ws, TABLE)
    ws.write_job("events", JOB)
    ws.cli("backfill", "events", "--start", "2026-11-01", "--end", "2026-11-05", "--local",
           check=True)
    ws.cli("backfill", "events", "--start", "2026-11-03", "--end", "2026-11-07", "--local",
           check=True)
    rows = _rows(ws)
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)) == 8  # 7 days + the shared key
    # The shared key holds the value from the newest interval loaded.
    assert (100, "2026-11-07", "shared") in rows


def test_backfill_runs_each_interval_oldest_first_and_shows_progress(ws: Workspace) -> None:
    create_table(ws, TABLE)
    ws.write_job("events", JOB)
    proc = ws.cli("backfill", "events", "--start", "2026-11-01", "--end", "2026-11-03",
                  "--local", check=True)
    assert "[1/3] 2026-11-01T00:00:00Z" in proc.stderr
    assert "[3/3] 2026-11-03T00:00:00Z" in proc.stderr
    starts = sorted(r["start"] for r in ws.cli_json("history"))
    assert starts == ["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"]


def test_same_key_twice_in_one_run_last_one_wins(ws: Workspace) -> None:
    create_table(ws, TABLE)
    ws.write_job("dupes", '''
        from jankycron import job

        @job(schedule="0 0 * * *", table="events", key="id")
        def dupes(run):
            yield {"id": 1, "version": "first"}
            yield {"id": 2, "version": "only"}
            yield {"id": 1, "version": "second"}
            yield {"id": 1, "version": "third"}
    ''')
    ws.cli("run", "dupes", "--date", "2026-11-20", "--local", check=True)
    assert warehouse_rows(ws, "SELECT id, version FROM events ORDER BY id") == [
        (1, "third"), (2, "only")]
    (run,) = ws.cli_json("history")
    # Every extracted record is accounted for: landed, rejected, or replaced by a later one.
    assert (run["rows_extracted"], run["rows_loaded"], run["rows_rejected"],
            run["rows_replaced"]) == (4, 2, 0, 2)


def test_composite_key(ws: Workspace) -> None:
    create_table(ws, "CREATE TABLE pairs (repo varchar(20) NOT NULL, number int NOT NULL, "
                     "title varchar(50))")
    ws.write_job("pairs", '''
        from jankycron import job

        @job(schedule="0 0 * * *", table="pairs", key=("repo", "number"))
        def pairs(run):
            yield {"repo": "a", "number": 1, "title": "a1"}
            yield {"repo": "b", "number": 1, "title": "b1"}
            yield {"repo": "a", "number": 1, "title": "a1 again"}
    ''')
    ws.cli("run", "pairs", "--date", "2026-11-20", "--local", check=True)
    ws.cli("run", "pairs", "--date", "2026-11-20", "--local", check=True)
    assert warehouse_rows(ws, "SELECT repo, number, title FROM pairs ORDER BY repo") == [
        ("a", 1, "a1 again"), ("b", 1, "b1")]


def test_a_job_feeds_several_tables(ws: Workspace) -> None:
    create_table(ws, "CREATE TABLE parents (id int NOT NULL, name varchar(20))")
    create_table(ws, "CREATE TABLE children (id int NOT NULL, parent_id int)")
    ws.write_job("family", '''
        from jankycron import job

        @job(schedule="0 0 * * *", table={"parents": "id", "children": "id"})
        def family(run):
            yield {"id": 1, "name": "p"}
            yield run.to("children", {"id": 10, "parent_id": 1})
            yield run.to("children", {"id": 11, "parent_id": 1})
    ''')
    ws.cli("run", "family", "--date", "2026-11-20", "--local", check=True)
    assert warehouse_rows(ws, "SELECT id, name FROM parents") == [(1, "p")]
    assert warehouse_rows(ws, "SELECT id, parent_id FROM children ORDER BY id") == [
        (10, 1), (11, 1)]
    (run,) = ws.cli_json("history")
    assert (run["rows_extracted"], run["rows_loaded"], run["status"]) == (3, 3, "success")


def test_load_dry_run_shows_the_plan_and_changes_nothing(ws: Workspace) -> None:
    create_table(ws, TABLE)
    ws.write_job("events", JOB)
    registry, _ = discover(ws.jobs)
    job = registry.get("events")
    ctx = Context(ws.settings)
    try:
        for day in (1, 2, 2):  # day 2 twice: the rerun supersedes the first
            run_job(ctx, job, job.interval_on(date(2026, 11, day)), load=False)
    finally:
        ctx.close()

    proc = ws.cli("load", "--dry-run", check=True)
    assert "events (key id): 2 batch(es), 4 rows in one transaction" in proc.stdout
    assert "superseded by a newer run of the same interval" in proc.stdout
    assert 'DELETE FROM "events" USING stage' in proc.stdout
    (plan,) = ws.cli_json("load", "--dry-run")
    assert [b["start"] for b in plan["batches"]] == ["2026-11-01T00:00:00Z",
                                                     "2026-11-02T00:00:00Z"]
    assert len(plan["superseded"]) == 1 and plan["rows"] == 4
    assert all(b["manifest"].endswith("/manifest.json") and b["parts"] == 1
               for b in plan["batches"])
    assert _rows(ws) == []  # nothing loaded

    ws.cli("load", "--local", check=True)
    assert len(_rows(ws)) == 3  # two days + the shared key


def test_load_due_coalesces_loads_per_table_interval(ws: Workspace) -> None:
    create_table(ws, TABLE)
    ws.write_job("events", JOB)
    ws.cli("run", "events", "--date", "2026-11-01", "--local", check=True)  # loaded just now
    registry, _ = discover(ws.jobs)
    job = registry.get("events")
    ctx = Context(ws.settings)
    try:
        for day in (2, 3):
            run_job(ctx, job, job.interval_on(date(2026, 11, day)), load=False)
    finally:
        ctx.close()

    hourly = {"JANKYCRON_LOAD_INTERVAL": "1h"}
    proc = ws.cli("load", "--due", "--local", check=True, env=hourly)
    assert "events: not due; last load" in proc.stderr and "nothing due" in proc.stdout
    assert len(_rows(ws)) == 2  # only day 1 so far

    proc = ws.cli("load", "--due", "--local", check=True,
                  env={**hourly, "JANKYCRON_LOAD_INTERVALS": "events=0"})
    assert "events: 2 batch(es), 4 loaded" in proc.stdout  # both pending batches, one commit
    assert len(_rows(ws)) == 4


def test_the_newest_of_quick_reruns_wins(ws: Workspace) -> None:
    """Reruns of one interval started within the same second: the last one's data lands."""
    create_table(ws, TABLE)
    ws.write_job("events", JOB)
    registry, _ = discover(ws.jobs)
    job = registry.get("events")
    interval = job.interval_on(date(2026, 11, 1))
    ctx = Context(ws.settings)
    try:
        for round_ in range(6):
            for version in ("old", "new"):
                ctx.ledger.save_state("events", {"version": f"{version}{round_}"})
                run_job(ctx, job, interval, load=False)
            ctx.loader.load_table("events", ("id",))
            assert _rows(ws)[1] == (20261101, "2026-11-01", f"new{round_}")
    finally:
        ctx.close()
