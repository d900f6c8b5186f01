"""Direct loads (load.direct) leave exactly the rows the validated path leaves, or give way to it.

Every test stages the same records into two identical PostgreSQL tables, ``direct`` (loaded the
usual way, which tries the direct load first) and ``valid`` (held to the validated path), over
the S3 emulator, and compares the tables row for row, as PostgreSQL prints them.
"""

from __future__ import annotations

import gzip
from datetime import date

import pytest
from conftest import Workspace, create_table, warehouse_rows

from jankycron.discovery import discover
from jankycron.load.postgres import PostgresSession
from jankycron.runner import Context, run_job
from jankycron.staging import keys_of, read_manifest
from jankycron.store import open_store

COLUMNS = """(
    id bigint NOT NULL,
    txt text, short varchar(20), code char(3),
    amount numeric(12,2), exact numeric, ratio double precision, small real,
    flag boolean, day date, local_at timestamp, at timestamptz, doc jsonb, ref uuid,
    span interval, nums int[]
)"""

# Records that a direct load takes as they are.
GOOD = r'''
import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

IST, CET = timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=1))


def good(n, seed):
    yield {"id": 1, "txt": "Zoë 渡辺 🚀 \u2028 line sep", "short": "", "code": "abc",
           "amount": Decimal("12.50"), "exact": Decimal("1.000"), "ratio": 0.1, "small": 1.5,
           "flag": True, "day": date(2026, 2, 28),
           "local_at": datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=IST),
           "at": datetime(2026, 11, 20, 10, 0, tzinfo=CET),
           "doc": {"a": [1, "x", None, True], "b": {"c": "d\n"}},
           "ref": UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "span": "1 day 02:00",
           "nums": "{1,2,3}"}
    yield {"id": 2}  # every other column missing: NULL
    yield {"id": 3, "txt": 'quote " backslash \\ newline \n tab \t cr \r control \x01 end\\',
           "short": "null", "code": "NUL", "amount": 7, "exact": "-0.50", "ratio": 1e-05,
           "small": 3, "flag": "yes", "day": "2026-11-20", "local_at": "2026-11-20T10:00:00Z",
           "at": "2026-11-20 10:00:00+00", "doc": "just a string",
           "ref": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12", "span": 3600, "nums": None}
    yield {"id": 4, "txt": 12345, "short": True, "ratio": 1e16, "small": 2 ** 70 + 1,
           "exact": 2 ** 62, "doc": [1, [2, [3]]], "local_at": "2026-11-20 23:59:59.999999",
           "amount": "-0.5", "flag": 0, "unknown": "dropped"}
    rng = random.Random(seed)
    for i in range(n):  # enough lines for several parts and pieces, some keys repeated
        yield {"id": 10 + rng.randrange(n), "txt": f"row {i} " + "é\\\"" * rng.randrange(40),
               "amount": Decimal(rng.randrange(10 ** 6)).scaleb(-2), "ratio": rng.random(),
               "at": datetime(2026, 11, 20, tzinfo=timezone.utc) + timedelta(seconds=i),
               "doc": {"i": i, "tags": ["x"] * (i % 3)}}
    yield {"id": 2, "txt": "the last line with a key wins"}
'''

JOB = '''
from decimal import Decimal
from jankycron import job
from _records import good


@job(schedule="0 0 * * *", table={"direct": "id", "valid": "id"})
def both(run):
    for record in RECORDS(run):
        yield record
        yield run.to("valid", dict(record))
'''


def _stage(ws: Workspace, records: str, days: list[int]) -> None:
    """Run the job ``both`` (staging only) for each day; ``records`` is its generator."""
    (ws.jobs / "_records.py").write_text(GOOD)
    ws.write_job("both", JOB.replace("RECORDS(run)", records))
    _run(ws, days)


def _run(ws: Workspace, days: list[int]) -> None:
    """Run the workspace's job ``both`` (staging only) for each day."""
    registry, errors = discover(ws.jobs)
    assert not errors
    job = registry.get("both")
    ctx = Context(ws.settings, progress=lambda _: None)
    try:
        for day in days:
            run_job(ctx, job, job.interval_on(date(2026, 11, day)), load=False)
    finally:
        ctx.close()


def _load(ws: Workspace, monkeypatch: pytest.MonkeyPatch, key: tuple[str, ...] = ("id",)
          ) -> dict:
    """Load ``direct`` the usual way and ``valid`` the validated way; results, dead letters."""
    real = PostgresSession.load_direct

    def validated_only_for_valid(self, *args, **kwargs):  # noqa: ANN001, ANN202
        return False if self.table == "valid" else real(self, *args, **kwargs)

    monkeypatch.setattr(PostgresSession, "load_direct", validated_only_for_valid)
    ctx = Context(ws.settings, progress=lambda _: None)
    try:
        results = {t: ctx.loader.load_table(t, key) for t in ("direct", "valid")}
        letters = {t: sorted((d["line"], d["reason"]) for d in ctx.ledger.deadletters(t))
                   for t in ("direct", "valid")}
    finally:
        ctx.close()
    return {"results": results, "letters": letters}


def _stage_and_load(ws: Workspace, monkeypatch: pytest.MonkeyPatch, records: str,
                    days: list[int]) -> dict:
    _stage(ws, records, days)
    return _load(ws, monkeypatch)


def _rows(ws: Workspace, table: str) -> list[tuple]:
    return warehouse_rows(ws, f"SELECT id, t::text FROM {table} t ORDER BY id")


@pytest.fixture
def tables(pg_ws: Workspace) -> Workspace:
    pg_ws.env["JANKYCRON_PART_SIZE"] = "64KB"  # several parts, so several key files
    for name in ("direct", "valid"):
        create_table(pg_ws, f"CREATE TABLE {name} {COLUMNS}")
    return pg_ws


def test_a_direct_load_leaves_what_the_validated_path_leaves(
        tables: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unicode, escapes and control characters, NULL against "null" and "", integers and
    booleans into text, decimals, floats, offsets converted for timestamp columns, jsonb,
    uuid, interval and array text: the same rows as validation gives, and the last line per key
    wins within a batch, across batches, and over rows already in the table."""
    for name in ("direct", "valid"):  # rows a load replaces, and one it leaves alone
        create_table(tables, f"INSERT INTO {name} (id, txt) VALUES (3, 'old'), (5, 'kept')")

    # Three days loaded together: the same keys in each, so later batches replace lines.
    got = _stage_and_load(tables, monkeypatch, "good(3000, run.interval.start.day)",
                          [20, 21, 22])
    direct, valid = got["results"]["direct"], got["results"]["valid"]

    assert direct.direct and not valid.direct
    # Both count the same lines replaced by a later line of their own batch (3 x 3005 staged).
    assert direct.rows_loaded == valid.rows_loaded
    assert direct.rows_replaced == valid.rows_replaced > 0
    assert direct.rows_loaded + direct.rows_replaced == 3 * 3005
    assert direct.rows_rejected == valid.rows_rejected == 0
    assert direct.dropped_keys == valid.dropped_keys == {"unknown": 3}
    rows = _rows(tables, "direct")
    assert rows == _rows(tables, "valid")
    assert len(rows) > 1000
    by_id = dict(rows)
    assert "the last line with a key wins" in by_id[2]
    assert "kept" in by_id[5] and "old" not in by_id[3]
    # The values themselves, as PostgreSQL reads them.
    (row,) = warehouse_rows(tables, "SELECT txt, short, local_at::text, ratio, flag, doc, "
                                    "ref::text, span::text FROM direct WHERE id = 3")
    assert row[0] == 'quote " backslash \\ newline \n tab \t cr \r control \x01 end\\'
    assert row[1] == "null" and row[2] == "2026-11-20 10:00:00" and row[3] == 1e-05
    assert row[4] is True and row[5] == "just a string"
    assert row[6] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12" and row[7] == "01:00:00"
    assert warehouse_rows(tables, "SELECT local_at::text, short IS NULL FROM direct "
                                  "WHERE id = 2") == [(None, True)]
    # 10:00:00.123456 at +05:30 is 04:30 UTC; a timestamp column holds UTC.
    assert warehouse_rows(tables, "SELECT local_at::text FROM direct WHERE id = 1") == [
        ("2026-11-20 04:30:00.123456",)]


# One record each that a direct load must not take as it is: it gives way to the validated
# path, which either dead-letters the record or stores a value the direct load would not.
REFUSED = {
    "more decimal places than the scale": '{"id": 7, "amount": Decimal("1.234")}',
    "a date with a time": '{"id": 7, "day": "2026-11-20T10:00:00"}',
    "a string longer than varchar(20)": '{"id": 7, "short": "x" * 21}',
    "a malformed uuid": '{"id": 7, "ref": "not-a-uuid"}',
    "a null merge key": '{"id": None, "txt": "no key"}',
    "a missing merge key": '{"txt": "no key"}',
    "a NUL character": '{"id": 7, "txt": "a\\x00b"}',
    "a float into text (jsonb writes 1e-05 as 0.00001)": '{"id": 7, "txt": 1e-05}',
    "an object into text": '{"id": 7, "txt": {"b": 1, "a": [1, 2]}}',
    "a negative zero": '{"id": 7, "ratio": -0.0}',
    "a float inside jsonb": '{"id": 7, "doc": {"price": 1.5e-07}}',
    "an integer beyond 64 bits": '{"id": 7, "exact": 2 ** 70}',
    "a timestamp in a named zone": '{"id": 7, "local_at": "2026-11-20 10:00 America/New_York"}',
    "a timestamp with a seven-digit fraction":
        '{"id": 7, "local_at": "2026-11-20 10:00:00.1234567"}',
    "a boolean into a uuid": '{"id": 7, "ref": True}',
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_a_direct_load_cannot_take_loads_the_validated_way(
        tables: Workspace, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    records = f"[*good(20, 1), {REFUSED[case]}, {{'id': 8, 'txt': 'after'}}]"
    got = _stage_and_load(tables, monkeypatch, records, [20])
    direct, valid = got["results"]["direct"], got["results"]["valid"]

    assert not direct.direct
    assert (direct.rows_loaded, direct.rows_rejected, direct.rows_replaced) == (
        valid.rows_loaded, valid.rows_rejected, valid.rows_replaced)
    assert got["letters"]["direct"] == got["letters"]["valid"]
    assert _rows(tables, "direct") == _rows(tables, "valid")
    assert "after" in dict(_rows(tables, "direct"))[8]


def _key_files(ws: Workspace) -> list[str]:
    ctx = Context(ws.settings, progress=lambda _: None)
    try:
        return [keys_of(p) for b in ctx.ledger.pending_batches("direct")
                for p in read_manifest(ctx.store, b.manifest_key)]
    finally:
        ctx.close()


def test_parts_staged_without_key_files_load_the_validated_way(
        tables: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    _stage(tables, "good(500, 1)", [20])
    store = open_store(tables.settings)
    for key in _key_files(tables)[-1:]:  # as if staged by an older jankycron
        store.delete(key)
    direct = _load(tables, monkeypatch)["results"]["direct"]
    assert not direct.direct and direct.rows_loaded + direct.rows_replaced == 505
    assert _rows(tables, "direct") == _rows(tables, "valid")


def test_a_key_file_that_does_not_match_its_part_is_not_trusted(
        tables: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Key file lines name the rows a load deletes: one that does not match its line (here,
    a key file saying 99 where the line says 3) must not delete row 99."""
    create_table(tables, "INSERT INTO direct (id, txt) VALUES (99, 'kept')")  # good(0): 1-4
    _stage(tables, "good(0, 1)", [20])
    store = open_store(tables.settings)
    (key,) = _key_files(tables)
    lines = gzip.decompress(store.get_bytes(key)).split(b"\n")
    assert lines[2] == b"3"
    lines[2] = b"99"
    store.put_bytes(key, gzip.compress(b"\n".join(lines)))

    ctx = Context(tables.settings, progress=lambda _: None)
    try:
        result = ctx.loader.load_table("direct", ("id",))
    finally:
        ctx.close()
    assert not result.direct
    assert [r[0] for r in _rows(tables, "direct")] == [1, 2, 3, 4, 99]


def test_a_two_column_key_replaces_and_dedupes_the_same_way(
        pg_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Key files with two values a line (a string with quotes and commas, and a date): rows
    already in the table are replaced, and the last line per key wins across batches."""
    for name in ("direct", "valid"):
        create_table(pg_ws, f"CREATE TABLE {name} (region varchar(20) NOT NULL, "
                            "day date NOT NULL, n int, note text)")
        create_table(pg_ws, f"INSERT INTO {name} VALUES ('eu', '2026-11-01', 0, 'old'), "
                            "('us', '2026-11-01', 0, 'kept')")
    pg_ws.write_job("both", '''
        from datetime import date
        from jankycron import job

        @job(schedule="0 0 * * *", table={"direct": ("region", "day"),
                                           "valid": ("region", "day")})
        def both(run):
            d = run.interval.start.day
            for i in range(300):
                record = {"region": ["eu", 'a "b", c'][i % 2], "day": date(2026, 11, 1 + i % 7),
                          "n": d * 1000 + i, "note": f"day {d} line {i}"}
                yield record
                yield run.to("valid", dict(record))
    ''')
    _run(pg_ws, [20, 21])
    direct = _load(pg_ws, monkeypatch, ("region", "day"))["results"]["direct"]

    assert direct.direct
    rows = warehouse_rows(pg_ws, "SELECT * FROM direct ORDER BY 1, 2")
    assert rows == warehouse_rows(pg_ws, "SELECT * FROM valid ORDER BY 1, 2")
    assert len(rows) == 15  # 14 keys from the job, and the us row it does not touch
    assert ("us", date(2026, 11, 1), 0, "kept") in rows
    # Each key's last line: day 21's, among its last 14 lines (286..299).
    assert all(r[3].startswith("day 21 line ") and int(r[3].split()[-1]) >= 286
               for r in rows if r[3] != "kept")
