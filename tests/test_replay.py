"""After a fix (a widened column), dead letters are replayed: each lands exactly once and leaves
the dead-letter list; one that still does not fit comes back with the new reason."""

from __future__ import annotations

from conftest import Workspace, create_table, warehouse_rows

JOB = '''
from jankycron import job

@job(schedule="0 0 * * *", table="cities", key="id")
def cities(run):
    yield {"id": 1, "name": "Oslo", "pop": 700000}
    yield {"id": 2, "name": "Llanfairpwllgwyngyll", "pop": 3000}   # too long for varchar(10)
    yield {"id": 3, "name": "Ulm", "pop": "many"}                    # not an integer
    yield {"id": 4, "name": "Bath", "pop": {1, 2}}                   # never staged: a set
'''


def _widen(ws: Workspace) -> None:
    if ws.env["JANKYCRON_WAREHOUSE_URL"].startswith("duckdb"):
        # DuckDB does not enforce varchar lengths; change the type that refused a record.
        create_table(ws, "ALTER TABLE cities ALTER pop TYPE varchar")
    else:
        create_table(ws, "ALTER TABLE cities ALTER name TYPE varchar(40)")


def test_replay_after_widening_loads_each_record_once(ws: Workspace) -> None:
    create_table(ws, "CREATE TABLE cities (id int NOT NULL, name varchar(10), pop int)")
    ws.write_job("cities", JOB)
    ws.cli("run", "cities", "--date", "2026-11-20", "--local", check=True)
    before = {d["line"]: d for d in ws.cli_json("deadletters", "cities")}
    postgres = not ws.env["JANKYCRON_WAREHOUSE_URL"].startswith("duckdb")
    assert len(before) == (3 if postgres else 2)  # DuckDB takes the long name

    _widen(ws)
    proc = ws.cli("deadletters", "replay", "cities", check=True)
    assert "1 dead letter(s) cannot be replayed" in proc.stderr  # the set never was JSON
    assert ("1 loaded, 1 dead-lettered" if postgres else "1 loaded, 0 dead-lettered") in proc.stdout

    ids = [r[0] for r in warehouse_rows(ws, "SELECT id FROM cities ORDER BY id")]
    assert ids == ([1, 2] if postgres else [1, 2, 3])
    after = ws.cli_json("deadletters", "cities")
    reasons = sorted(d["reason"] for d in after)
    if postgres:  # "many" is still not an integer: back with the reason, from the replay run
        assert [d["phase"] for d in after].count("load") == 1
        assert any("pop" in r for r in reasons)
    assert any("set" in r for r in reasons)  # the stage-phase letter stays, unreplayable
    runs = ws.cli_json("history")
    assert runs[0]["status"] == "success" and runs[0]["rows_extracted"] == (2 if postgres else 1)

    # Replaying again finds only what still does not fit, and never duplicates a row.
    ws.cli("deadletters", "replay", "cities", check=True)
    assert warehouse_rows(ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM cities") == [
        (len(ids), len(ids))]


def test_replay_of_a_table_no_job_feeds_is_one_clear_line(duck_ws: Workspace) -> None:
    proc = duck_ws.cli("deadletters", "replay", "nope")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: no job feeds table 'nope'"
