"""Records that do not fit go to the dead-letter store with the reason; the rest still load."""

from __future__ import annotations

import gzip
import json
from datetime import date

import pytest
from conftest import S3, Workspace, create_table, warehouse_rows

from jankycron.discovery import discover
from jankycron.runner import Context, load_tables, run_job

TABLE = """CREATE TABLE people (
    id int NOT NULL,
    name varchar(10) NOT NULL,
    score numeric(5,2),
    born date,
    seen_at timestamptz
)"""

JOB = '''
from datetime import date, datetime, timezone
from decimal import Decimal
from jankycron import job

@job(schedule="0 0 * * *", table="people", key="id")
def people(run):
    for i in range(200):
        yield {"id": i, "name": f"p{i}", "score": Decimal("1.25"), "born": date(1990, 1, 1),
               "seen_at": datetime(2026, 11, 20, tzinfo=timezone.utc), "nickname": "x"}
    yield {"id": 1000, "name": None}                              # NOT NULL
    yield {"id": 1001, "name": "ok", "score": Decimal("1.255")}   # would round
    yield {"id": 1002, "name": "ok", "born": "2026-11-20T10:00:00Z"}  # would truncate the time
    yield {"id": 1003, "name": "ok", "seen_at": "yesterday-ish"}  # not a timestamp
    yield {"id": "abc", "name": "ok"}                             # not an integer
    yield {"name": "no id"}                                       # no merge key
    yield {"id": 1006, "name": "ok", "score": float("nan")}       # no exact JSON form
    yield {"id": 1007, "name": "ok", "score": {1, 2}}             # not JSON at all
    yield {"id": 1008, "name": "ok", "score": Decimal("99999")}   # out of range for (5,2)
'''

EXPECTED = {  # id -> words the reason must contain
    1000: ["name"],
    1001: ["score", "2 places", "1.255"],
    1002: ["born", "date"],
    1003: ["seen_at"],
    "abc": ["id"],
    None: ["id", "merge key"],
    1006: ["NaN"],
    1007: ["set"],
    1008: ["score"],
}


def _record_id(text: str):
    try:
        return json.loads(text).get("id")
    except json.JSONDecodeError:  # stage-phase letters keep the Python repr
        return 1006 if "1006" in text else 1007 if "1007" in text else text


def test_bad_records_are_dead_lettered_with_reasons_and_good_ones_load(ws: Workspace) -> None:
    create_table(ws, TABLE)
    ws.write_job("people", JOB)
    proc = ws.cli("run", "people", "--date", "2026-11-20", "--local")
    assert proc.returncode == 0, proc.stderr  # dead letters do not fail a run
    assert "9 dead-lettered" in proc.stdout

    assert warehouse_rows(ws, "SELECT COUNT(*), MIN(id), MAX(id) FROM people") == [(200, 0, 199)]

    letters = ws.cli_json("deadletters", "people")
    assert len(letters) == 9
    by_id = {_record_id(d["record"]): d for d in letters}
    assert set(by_id) == set(EXPECTED)
    for rid, words in EXPECTED.items():
        reason = by_id[rid]["reason"]
        for w in words:
            assert w in reason, f"reason for id={rid} lacks {w!r}: {reason}"
        assert by_id[rid]["table"] == "people" and by_id[rid]["job"] == "people"

    (run,) = ws.cli_json("history")
    assert run["status"] == "success"
    assert run["rows_extracted"] == 209
    assert run["rows_loaded"] == 200 and run["rows_rejected"] == 9
    assert run["rows_extracted"] == run["rows_loaded"] + run["rows_rejected"]
    assert run["dropped_keys"] == {"nickname": 200}


def test_dead_letters_are_kept_in_the_store(pg_ws: Workspace, s3: S3) -> None:
    create_table(pg_ws, TABLE)
    pg_ws.write_job("people", JOB)
    pg_ws.cli("run", "people", "--date", "2026-11-20", "--local", check=True)
    bucket = pg_ws.env["JANKYCRON_STORE_URL"].split("/")[2]
    keys = s3.keys(bucket, "jankycron/deadletter/people/")
    assert [k.rsplit("/", 1)[1] for k in keys] == ["load.ndjson.gz", "stage.ndjson.gz"]
    stored = []
    for key in keys:
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        stored += [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert len(stored) == 9
    assert all(d["reason"] and d["record"] and d["run_id"] for d in stored)


def test_rerun_lists_each_dead_letter_once(duck_ws: Workspace) -> None:
    create_table(duck_ws, TABLE)
    duck_ws.write_job("people", JOB)
    for _ in range(2):
        duck_ws.cli("run", "people", "--date", "2026-11-20", "--local", check=True)
    letters = duck_ws.cli_json("deadletters")
    assert len(letters) == 9
    newest = duck_ws.cli_json("history")[0]["run_id"]
    assert {d["run_id"] for d in letters} == {newest}


@pytest.mark.parametrize("bad_count", [1, 7])
def test_isolation_finds_every_bad_record_among_many(duck_ws: Workspace, bad_count: int) -> None:
    create_table(duck_ws, "CREATE TABLE nums (id int NOT NULL, v int)")
    duck_ws.write_job("nums", f'''
        from jankycron import job

        @job(schedule="0 0 * * *", table="nums", key="id")
        def nums(run):
            bad = set(range(17, 3000, 3000 // {bad_count}))
            for i in range(3000):
                yield {{"id": i, "v": "x" if i in bad else i}}
    ''')
    duck_ws.cli("run", "nums", "--date", "2026-11-20", "--local", check=True)
    assert warehouse_rows(duck_ws, "SELECT COUNT(*) FROM nums") == [(3000 - bad_count,)]
    letters = duck_ws.cli_json("deadletters")
    assert len(letters) == bad_count
    assert all("v" in d["reason"] for d in letters)


def test_a_nul_character_postgres_cannot_store_is_one_dead_letter(pg_ws: Workspace) -> None:
    """PostgreSQL text cannot hold U+0000: that record is refused, its neighbours load."""
    create_table(pg_ws, "CREATE TABLE notes (id int NOT NULL, body varchar(50))")
    pg_ws.write_job("notes", '''
        from jankycron import job

        @job(schedule="0 0 * * *", table="notes", key="id")
        def notes(run):
            yield {"id": 1, "body": "fine"}
            yield {"id": 2, "body": "nul \\x00 inside"}
            yield {"id": 3, "body": "also fine"}
    ''')
    pg_ws.cli("run", "notes", "--date", "2026-11-20", "--local", check=True)
    assert warehouse_rows(pg_ws, "SELECT id FROM notes ORDER BY id") == [(1,), (3,)]
    (letter,) = pg_ws.cli_json("deadletters")
    assert "cannot read the record" in letter["reason"] and "\\u0000" in letter["reason"]
    assert json.loads(letter["record"])["id"] == 2


DRAIN = '''
from jankycron import job

@job(schedule="0 0 * * *", table="inbox", key="id", rerun_replaces=False)
def inbox(run):
    # Each run reads what is new (a stream drain): its records differ from the last run's.
    n = run.state.get("n", 0)
    run.state["n"] = n + 1
    yield {"id": n * 10 + 1, "v": 1}
    yield {"id": n * 10 + 2, "v": "not a number"}
'''


def test_runs_of_a_job_whose_reruns_do_not_replace_all_land(duck_ws: Workspace) -> None:
    """rerun_replaces=False (a stream drain): two runs of one interval, staged before either
    was loaded and then one after, each land their rows, and every dead letter stays listed."""
    create_table(duck_ws, "CREATE TABLE inbox (id int NOT NULL, v int)")
    duck_ws.write_job("inbox", DRAIN)
    registry, _ = discover(duck_ws.jobs)
    job = registry.get("inbox")
    ctx = Context(duck_ws.settings)
    interval = job.interval_on(date(2026, 11, 20))
    run_job(ctx, job, interval, load=False)
    run_job(ctx, job, interval, load=False)
    load_tables(ctx, job.tables)
    run_job(ctx, job, interval)
    ctx.close()
    assert warehouse_rows(duck_ws, "SELECT id FROM inbox ORDER BY id") == [(1,), (11,), (21,)]
    letters = duck_ws.cli_json("deadletters")
    assert sorted(json.loads(d["record"])["id"] for d in letters) == [2, 12, 22]
    assert [r["status"] for r in duck_ws.cli_json("history")] == ["success"] * 3


SURROGATE_JOB = '''
from jankycron import job

@job(schedule="0 0 * * *", table="people", key="id")
def people(run):
    for i in range(50):
        yield {"id": i, "name": f"p{i}"}
        if i == 10:   # an emoji cut in half by a browser, in a value at depth and in a key
            yield {"id": 900, "name": "ok", "extra": {"tags": ["fine", "half \\ud83d"]}}
            yield {"id": 901, "name": "ok", "bad \\udc00 key": 1}
'''


def test_a_lone_surrogate_is_a_dead_letter_not_a_failed_run(ws: Workspace) -> None:
    """A string with a lone surrogate (in a value or a key) cannot be UTF-8: before, staging
    raised UnicodeEncodeError and the run failed on every attempt."""
    create_table(ws, TABLE)
    ws.write_job("people", SURROGATE_JOB)
    proc = ws.cli("run", "people", "--date", "2026-11-20", "--local")
    assert proc.returncode == 0, proc.stderr
    assert "52 extracted, 50 loaded, 2 dead-lettered" in proc.stdout
    assert warehouse_rows(ws, "SELECT COUNT(*) FROM people") == [(50,)]
    (run,) = ws.cli_json("history")
    assert run["status"] == "success"

    letters = sorted(ws.cli_json("deadletters", "people"), key=lambda d: d["line"])
    assert [d["phase"] for d in letters] == ["stage", "stage"]
    assert letters[0]["reason"].startswith(
        "field extra.tags[1]: a string holds a lone surrogate (\\ud83d), which UTF-8 cannot "
        "encode")
    assert letters[1]["reason"].startswith("field bad \\udc00 key (a key): ")
    for d in letters:  # stored escaped: the text itself is valid UTF-8
        d["record"].encode()
        d["reason"].encode()
    assert "half \\ud83d" in letters[0]["record"] and "900" in letters[0]["record"]
