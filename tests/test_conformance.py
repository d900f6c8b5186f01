"""The same record gets the same outcome on every backend.

One table of hostile records (``CASES``: a column, a value as JSON, and the outcome: it lands
with exactly this value as the warehouse prints it, or it is a dead letter whose reason matches
a pattern) runs through the real loader on DuckDB, PostgreSQL (direct and validated) and the
Redshift stand-in. On Redshift the loader checks each staged line in Python before COPY
(``warehouse.LineCheck``); the stand-in then converts with PostgreSQL's input functions, so it
cannot prove what Redshift's own COPY parsing makes of what passes those checks.

All cases go through one job and two loads per backend (the cases that land, then the dead
letters), so the whole file runs in seconds rather than one load per case.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg2
import pytest
from conftest import S3, Workspace, _workspace, create_table, pg_query, warehouse_rows
from redshift_standin import StandIn, install

from jankycron.discovery import discover
from jankycron.load import direct
from jankycron.load.postgres import PostgresSession
from jankycron.load.redshift import RedshiftWarehouse
from jankycron.runner import Context, run_job

# Every column type the cases need; DuckDB has JSON where PostgreSQL has jsonb.
COLUMNS = [
    ("i", "integer"), ("bi", "bigint"), ("si", "smallint"), ("n", "numeric(10,2)"),
    ("f", "double precision"), ("b", "boolean"), ("d", "date"), ("ts", "timestamp"),
    ("tz", "timestamptz"), ("u", "uuid"), ("v", "varchar(100)"), ("t", "text"),
    ("j", "jsonb"), ("$.c", "text"), ("/p", "text"), ("a b", "text"), ("it's", "text"),
    ('x"y', "text"),
]
DUCK_TYPES = {"jsonb": "json"}
COPY_SPECIALS = "\\.\n\\N\t\r\n\r|,;\"'\\\\"
LONG = "x" * 200_000
SURROGATE = "lone surrogate"  # refused at staging (a stage dead letter), on every backend


@dataclass(frozen=True)
class Case:
    column: str
    value: str  # the value as JSON text (what the job yields, json.loads'ed)
    lands: str | None = None  # the value as the warehouse prints it (CAST AS VARCHAR); or
    dead: str | None = None  # a pattern the dead letter's reason matches
    # Where a backend truly cannot match (README, "Status and limits"): what it does instead,
    # pinned: the value it prints, or DEAD.
    differs: tuple[tuple[str, str], ...] = ()
    direct: bool = True  # does a direct PostgreSQL load take it (or give way to validation)?

    @property
    def is_dead(self) -> bool:
        return self.dead is not None


def L(column: str, value: str, printed: str | None) -> Case:  # noqa: N802
    return Case(column, value, lands=printed if printed is not None else "<NULL>")


def V(column: str, value: str, printed: str) -> Case:  # noqa: N802
    """A case that lands, through the validated path on PostgreSQL: the direct load gives way
    (a float into numeric or text, a negative zero, JSON into text, an integer beyond 64 bits:
    orjson reads it as a float)."""
    return Case(column, value, lands=printed, direct=False)


def D(column: str, value: str, why: str = "") -> Case:  # noqa: N802
    return Case(column, value, dead=why)


S = json.dumps  # a string value as JSON
DEAD = "<dead letter>"


def pinned(case: Case, **differs: str) -> Case:
    """``case``, except on the backends named (``postgresql_direct=...``): a pinned limit."""
    return Case(case.column, case.value, case.lands, case.dead,
                tuple((k.replace("_", "-"), v) for k, v in differs.items()), case.direct)


PG = {"postgresql_direct", "postgresql_validated"}

CASES: list[Case] = [
    # ---- integers: only digits with an optional sign; nothing rounded or reinterpreted
    L("i", "7", "7"), L("i", S("7"), "7"), L("i", S("+7"), "7"), L("i", S("-0"), "0"),
    L("i", S("007"), "7"), L("i", "-2147483648", "-2147483648"), L("i", "null", None),
    D("i", "1.5"), D("i", S("1.5")), D("i", S("2.5")), D("i", "1.0"), D("i", S("1.0")),
    D("i", S("1e2")), D("i", S("1E+2")), D("i", S("0x1F")), D("i", S("0b101")),
    D("i", S("1_000")), D("i", S(" 7")), D("i", S("7 ")), D("i", S("")), D("i", "true"),
    D("i", "false"), D("i", S("Infinity")), D("i", "2147483648"), D("i", S("١٢")),
    D("i", "[1]"), D("i", '{"a": 1}'),
    L("bi", "9223372036854775807", "9223372036854775807"), D("bi", "9223372036854775808"),
    D("bi", "100000000000000000000"),
    pinned(D("bi", "1e16"), **dict.fromkeys(PG, "10000000000000000")),
    L("si", "-32768", "-32768"), D("si", "32768"),
    # ---- numeric(10,2): no rounding, no spelling PostgreSQL and DuckDB read differently
    L("n", S("1.50"), "1.50"), L("n", S("1.5"), "1.50"), V("n", "1.5", "1.50"),
    L("n", "12", "12.00"), L("n", S("-0.5"), "-0.50"), L("n", S("+3"), "3.00"),
    L("n", S("1.500000"), "1.50"), L("n", S("99999999.99"), "99999999.99"),
    L("n", S(".5"), "0.50"), L("n", S("1.0"), "1.00"), L("n", S("-0"), "0.00"),
    D("n", S("1.555")), D("n", S("1.001")), D("n", "0.001"), D("n", S("999999999")),
    D("n", S("100000000.00")), D("n", S("1e2")), D("n", S("1_0")), D("n", S(" 1.5")),
    D("n", S("Infinity")), D("n", S("NaN")), D("n", S("")), D("n", S(".")), D("n", "true"),
    D("n", S("0x10")),
    # ---- double precision
    L("f", "1.5", "1.5"), L("f", "0.1", "0.1"), L("f", "7", "7"), L("f", S("2.5"), "2.5"),
    L("f", S("-1e-05"), "-1e-05"), L("f", "1e+16", "1e+16"), L("f", S("1E+2"), "100"),
    pinned(V("f", "-0.0", "0"), redshift_standin="-0"), L("f", S("-0"), "-0"),
    D("f", S("Infinity")), D("f", S("-inf")), D("f", S("NaN")), D("f", S("1_000")),
    D("f", S("0x10")), D("f", S(" 1.5 ")), D("f", S("1e400")), D("f", "true"),
    # ---- boolean: what PostgreSQL and DuckDB both read as one
    L("b", "true", "true"), L("b", "false", "false"), L("b", S("true"), "true"),
    L("b", S("false"), "false"), L("b", "1", "true"), L("b", "0", "false"),
    L("b", S("yes"), "true"), L("b", S("t"), "true"), L("b", S("TRUE"), "true"),
    L("b", S("n"), "false"),
    D("b", S("on")), D("b", S("off")), D("b", S(" true ")), D("b", S("2")), D("b", "2"),
    D("b", "1.0"), D("b", S("tr")), D("b", S("")),
    # ---- date: YYYY-MM-DD, a real day, years 0001 to 9999
    L("d", S("2026-02-28"), "2026-02-28"), L("d", S("0001-01-01"), "0001-01-01"),
    L("d", S("9999-12-31"), "9999-12-31"), L("d", S("2024-02-29"), "2024-02-29"),
    D("d", S("2026-02-29")),
    D("d", S("2026-02-30")), D("d", S("2026-11-20T10:00:00")), D("d", S("2026-11-20 00:00")),
    D("d", S("0000-01-01")), D("d", S("10000-01-01")), D("d", S("20261120")),
    D("d", S("2026-1-2")), D("d", "20261120"),
    # ---- timestamp (holds UTC): at most 6 fractional digits, offsets converted, no zone names
    L("ts", S("2026-11-20 10:00:00"), "2026-11-20 10:00:00"),
    L("ts", S("2026-11-20T10:00:00.123456"), "2026-11-20 10:00:00.123456"),
    L("ts", S("2026-11-20T10:00:00Z"), "2026-11-20 10:00:00"),
    L("ts", S("2026-11-20T10:00:00+05:30"), "2026-11-20 04:30:00"),
    L("ts", S("2026-11-20T23:59:59.999999-01:00"), "2026-11-21 00:59:59.999999"),
    L("ts", S("2026-11-20"), "2026-11-20 00:00:00"), L("ts", S("2026-11-20 10:00"),
                                                       "2026-11-20 10:00:00"),
    D("ts", S("2026-11-20 23:59:59.9999999")), D("ts", S("2026-11-20 10:00:00.123456789")),
    D("ts", S("2026-11-20 24:00:00")), D("ts", S("2026-12-31 23:59:60")),
    D("ts", S("2026-11-20 10:00 Europe/Paris")), D("ts", S("2026-11-20 10:00:00 UTC")),
    L("ts", S("2026-11-20 10:00:00+0530"), "2026-11-20 04:30:00"),
    L("ts", S("2026-11-20 10:00:00+05"), "2026-11-20 05:00:00"),
    D("ts", S("2026-11-20 10:00:00+5")), D("ts", S("2026-11-20 10:00:00 +05:00")),
    D("ts", S("now")), D("ts", S("epoch")), D("ts", S("infinity")), D("ts", "1700000000"),
    D("ts", S("0000-01-01 00:00:00")), D("ts", S("10000-01-01 00:00:00")),
    D("ts", S("2026-11-20 25:00:00")),
    L("tz", S("2026-11-20T10:00:00+01:00"), "2026-11-20 09:00:00+00"),
    L("tz", S("2026-11-20 10:00:00.5Z"), "2026-11-20 10:00:00.5+00"),
    L("tz", S("2026-11-20 10:00:00"), "2026-11-20 10:00:00+00"),
    D("tz", S("2026-11-20 10:00:00.1234567+00:00")), D("tz", S("2026-11-20 10:00 Europe/Paris")),
    D("tz", S("2026-11-20 24:00:00Z")),
    # ---- uuid: the canonical form, either case
    L("u", S("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    L("u", S("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    D("u", S("{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}")),
    D("u", S("a0eebc999c0b4ef8bb6d6bb9bd380a11")),
    D("u", S("a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11")),
    D("u", S("urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")), D("u", S("not-a-uuid")),
    D("u", "true"), D("u", "7"),
    # ---- varchar(100): counted in characters; never truncated
    L("v", S("é" * 100), "é" * 100), L("v", S("🚀" * 100), "🚀" * 100),
    L("v", S("x" * 100), "x" * 100), L("v", S(""), ""), L("v", "true", "true"),
    L("v", "12", "12"),
    pinned(D("v", S("x" * 101)), duckdb="x" * 101), pinned(D("v", S(LONG)), duckdb=LONG),
    pinned(D("v", S("é" * 101)), duckdb="é" * 101),
    # ---- text: every character as it was, whatever COPY or CSV would make of it
    L("t", S(COPY_SPECIALS), COPY_SPECIALS), L("t", S("\\."), "\\."), L("t", S("\\N"), "\\N"),
    L("t", S("a\n\\.\nb"), "a\n\\.\nb"), L("t", S("a\tb"), "a\tb"),
    L("t", S("a\r\nb\rc\n"), "a\r\nb\rc\n"),
    L("t", S("line\u2028sep\u2029para\x85nel"), "line\u2028sep\u2029para\x85nel"),
    L("t", S("\x01\x02\x1b\x7f"), "\x01\x02\x1b\x7f"),
    L("t", S("quote \" backslash \\ '' end\\"), "quote \" backslash \\ '' end\\"),
    L("t", S("null"), "null"), L("t", S(""), ""), L("t", "null", None),
    L("t", S(LONG), LONG), L("t", S("Zoë 渡辺 🚀 \U0010ffff"), "Zoë 渡辺 🚀 \U0010ffff"),
    V("t", "12345678901234567890123", "12345678901234567890123"), L("t", "true", "true"),
    L("t", S("  padded  "), "  padded  "), V("t", "0.1", "0.1"),
    # JSON into a string column: its text as each warehouse prints JSON (a pinned limit)
    pinned(V("t", "1.5e-07", "0.00000015"), duckdb="1.5e-7", redshift_standin="1.5e-07"),
    pinned(V("t", '{"b": 1, "a": [1.5, "x"]}', '{"a": [1.5, "x"], "b": 1}'),
           duckdb='{"b":1,"a":[1.5,"x"]}', redshift_standin='{"b": 1, "a": [1.5, "x"]}'),
    D("t", S("a\x00b")), D("t", S("\x00")),
    D("t", S("\ud800"), SURROGATE), D("t", S("a\udfffb"), SURROGATE),
    # ---- jsonb
    L("j", '{"a": [1, "x", null, true], "b": {"c": "d\\n"}}',
      '{"a": [1, "x", null, true], "b": {"c": "d\\n"}}'),
    L("j", S("just a string"), '"just a string"'), L("j", "[]", "[]"), L("j", "{}", "{}"),
    V("j", '{"big": 123456789012345678901234567890}',
      '{"big": 123456789012345678901234567890}'),
    L("j", '{"a b": "it\'s", "$.c": 1}', '{"$.c": 1, "a b": "it\'s"}'),
    L("j", "[" * 200 + "]" * 200, "[" * 200 + "]" * 200),
    L("j", "null", None), L("j", "true", "true"), L("j", "12", "12"),
    # A job yields dicts, so a staged line has no duplicate keys; JSON text is a JSON string.
    L("j", S('{"a": 1, "a": 2}'), '"{\\"a\\": 1, \\"a\\": 2}"'),
    D("j", S("\x00")), D("j", '{"a": "x\\u0000y"}'),
    # ---- columns whose names read as JSON paths or need quoting
    L("$.c", S("dollar"), "dollar"), L("/p", S("slash"), "slash"), L("a b", S("space"), "space"),
    L("it's", S("quote"), "quote"), L('x"y', S("dquote"), "dquote"),
]


# --------------------------------------------------------------------------------- running
JOB = '''
import json
from pathlib import Path
from jankycron import job

CASES = json.loads((Path(__file__).parent / "cases.json").read_text())


@job(schedule="0 0 * * *", table={"conf": "id"})
def conf(run):
    # day 20: the cases that land (directly, on PostgreSQL); day 21: the rest
    later = run.interval.start.day == 21
    for n, column, value, is_later in CASES:
        if is_later == later:
            yield {"id": n, column: json.loads(value)}
'''


def _ddl(duck: bool) -> str:
    def ident(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'
    cols = ", ".join(f"{ident(c)} {DUCK_TYPES.get(t, t) if duck else t}" for c, t in COLUMNS)
    return f"CREATE TABLE conf (id bigint NOT NULL, {cols})"


def _select() -> str:
    cols = ", ".join('CAST("' + c.replace('"', '""') + '" AS VARCHAR)' for c, _ in COLUMNS)
    return f"SELECT id, {cols} FROM conf ORDER BY id"


@dataclass
class Outcome:
    printed: dict[int, str]  # case number -> the value as the warehouse prints it
    letters: dict[int, str]  # case number -> the dead letter's reason
    direct: list[bool]  # per load: straight into the table?


def _write_job(ws: Workspace, cases: list[tuple[int, Case]]) -> None:
    (ws.jobs / "cases.json").write_text(json.dumps(
        [[n, c.column, c.value, c.is_dead or not c.direct] for n, c in cases]))
    ws.write_job("conf", JOB)


def _run_and_load(ws: Workspace, context) -> Outcome:  # noqa: ANN001
    registry, errors = discover(ws.jobs)
    assert not errors
    job = registry.get("conf")
    direct_loads = []
    for day in (20, 21):
        ctx = context()
        try:
            run_job(ctx, job, job.interval_on(date(2026, 11, day)), load=False)
            direct_loads.append(ctx.loader.load_table("conf", ("id",)).direct)
        finally:
            ctx.close()
    ctx = context()
    try:
        letters = {_record(d)["id"]: d["reason"]
                   for d in ctx.ledger.deadletters("conf", limit=None)}
    finally:
        ctx.close()
    return Outcome({}, letters, direct_loads)


def _record(letter: dict) -> dict:
    """A dead letter's record: its staged JSON line (phase load), or the repr of what the job
    yielded (phase stage: it had no JSON form)."""
    if letter["phase"] == "stage":
        return ast.literal_eval(letter["record"])
    return json.loads(letter["record"])


def _printed(rows: list[tuple], cases: dict[int, Case]) -> dict[int, str]:
    names = [c for c, _ in COLUMNS]
    out = {}
    for row in rows:
        case = cases[row[0]]
        value = row[1 + names.index(case.column)]
        out[row[0]] = "<NULL>" if value is None else value
        others = [v for name, v in zip(names, row[1:], strict=True) if name != case.column]
        assert others == [None] * len(others), f"case {row[0]}: other columns filled"
    return out


def _numbered() -> list[tuple[int, Case]]:
    return list(enumerate(CASES, 1))


def _duckdb(tmp_path: Path) -> Outcome:
    ws = _workspace(tmp_path, {})
    create_table(ws, _ddl(duck=True))
    _write_job(ws, _numbered())
    got = _run_and_load(ws, lambda: Context(ws.settings, progress=lambda _: None))
    got.printed = _printed(warehouse_rows(ws, _select()), dict(_numbered()))
    return got


def _postgres(tmp_path: Path, pg_url: str, s3: S3, monkeypatch: pytest.MonkeyPatch,
              validated: bool) -> Outcome:
    ws = _workspace(tmp_path, {**s3.env, "JANKYCRON_WAREHOUSE_URL": pg_url,
                               "JANKYCRON_STATE_URL": pg_url,
                               "JANKYCRON_STORE_URL": f"s3://{s3.new_bucket()}/jankycron"})
    create_table(ws, _ddl(duck=False))
    _write_job(ws, _numbered())
    if validated:  # as tests/test_direct.py does: hold the table to the validated path
        monkeypatch.setattr(PostgresSession, "load_direct", lambda *a, **k: False)
    got = _run_and_load(ws, lambda: Context(ws.settings, progress=lambda _: None))
    got.printed = _printed(warehouse_rows(ws, _select()), dict(_numbered()))
    if not validated:
        _check_direct_refuses(ws, pg_url)
    return got


def _check_direct_refuses(ws: Workspace, pg_url: str) -> None:
    """Each dead-letter case, alone, must make a direct load give up: its rule refuses it
    (``NotDirect``), or PostgreSQL refuses its CSV row. Checked with the direct load's own
    ``Plan`` and COPY options in a transaction that is rolled back, case by case."""
    ctx = Context(ws.settings, progress=lambda _: None)
    try:
        columns = ctx.warehouse.columns("conf")
    finally:
        ctx.close()
    plan = direct.Plan(columns, ("id",))
    names = ", ".join('"' + c.name.replace('"', '""') + '"' for c in columns)
    conn = psycopg2.connect(pg_url, options="-c TimeZone=UTC")
    try:
        for n, case in _numbered():
            if not case.is_dead:
                continue
            try:
                line = json.dumps({"id": n, case.column: json.loads(case.value)},
                                  ensure_ascii=False).encode()
            except UnicodeEncodeError:
                continue  # a lone surrogate: staging refuses it before any loader sees it
            try:
                (row,) = plan.render([line], [n])
            except direct.NotDirect:
                continue
            with conn.cursor() as cur:
                try:
                    cur.copy_expert(f"COPY conf ({names}) FROM STDIN WITH ({direct.COPY_OPTIONS})",
                                    _One(row + b"\n"))
                except (psycopg2.DataError, psycopg2.IntegrityError):
                    pass
                else:
                    raise AssertionError(f"case {n} ({case.column} = {case.value[:60]}): a "
                                         "direct load would take what the validated path "
                                         "dead-letters")
                finally:
                    conn.rollback()
    finally:
        conn.close()


class _One:
    def __init__(self, data: bytes):
        self.data = data

    def read(self, size: int = -1) -> bytes:
        data, self.data = self.data, b""
        return data


def _redshift(tmp_path: Path, pg_url: str, s3: S3) -> Outcome:
    install(pg_url)
    ws = _workspace(tmp_path, {**s3.env,
                               "JANKYCRON_WAREHOUSE_URL": "redshift://" + pg_url.split("://")[1],
                               "JANKYCRON_STORE_URL": f"s3://{s3.new_bucket()}/jankycron",
                               "JANKYCRON_REDSHIFT_IAM_ROLE": "arn:aws:iam::123456789012:role/R"})
    pg_query(pg_url, _ddl(duck=False))
    _write_job(ws, _numbered())
    standin = StandIn(s3.client())

    def context() -> Context:
        ctx = Context(ws.settings, progress=lambda _: None)
        ctx.__dict__["warehouse"] = RedshiftWarehouse(
            ws.settings.warehouse_url, ws.settings.statement_timeout, ctx.store,
            "arn:aws:iam::123456789012:role/R", connect=standin)
        return ctx

    got = _run_and_load(ws, context)
    got.printed = _printed(pg_query(pg_url, _select()), dict(_numbered()))
    return got


BACKENDS = ["duckdb", "postgresql-direct", "postgresql-validated", "redshift-standin"]


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    return {}


@pytest.fixture(params=BACKENDS)
def outcome(request: pytest.FixtureRequest, outcomes: dict[str, Outcome], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> tuple[str, Outcome]:
    backend = request.param
    if backend not in outcomes:
        if backend == "duckdb":
            outcomes[backend] = _duckdb(tmp_path)
        else:
            pg_url = request.getfixturevalue("pg_url")
            s3 = request.getfixturevalue("s3")
            if backend == "redshift-standin":
                outcomes[backend] = _redshift(tmp_path, pg_url, s3)
            else:
                outcomes[backend] = _postgres(tmp_path, pg_url, s3, monkeypatch,
                                              validated=backend.endswith("validated"))
    return backend, outcomes[backend]


def _describe(n: int, case: Case) -> str:
    return f"case {n}: {case.column} = {case.value[:60]}"


def _same(backend: str, column: str, printed: str, expected: str) -> bool:
    """The printed value is the expected one. Two printings differ by backend and are compared
    by value (README, "Status and limits"): floats (PostgreSQL prints 7, DuckDB 7.0) and JSON
    on DuckDB (its JSON type keeps key order and prints no spaces; jsonb sorts keys)."""
    if printed == expected:
        return True
    if "<NULL>" in (printed, expected):
        return False
    if column == "f":  # the same double, sign of zero included
        return (float(printed), math.copysign(1, float(printed))) == (
            float(expected), math.copysign(1, float(expected)))
    if column == "j" and backend == "duckdb":
        return json.loads(printed) == json.loads(expected)
    return False


def _wrong(backend: str, got: Outcome) -> list[str]:
    wrong = []
    for n, case in _numbered():
        expected = dict(case.differs).get(backend)
        dead = case.is_dead if expected is None else expected == DEAD
        lands = case.lands if expected is None else expected
        if dead:
            reason = got.letters.get(n)
            if n in got.printed:
                wrong.append(f"{_describe(n, case)}: landed as {got.printed[n][:60]!r}")
            elif reason is None:
                wrong.append(f"{_describe(n, case)}: neither landed nor a dead letter")
            elif not re.search(case.dead or "", reason):
                wrong.append(f"{_describe(n, case)}: reason {reason!r}")
        elif n not in got.printed:
            wrong.append(f"{_describe(n, case)}: dead letter {got.letters.get(n)!r}")
        elif not _same(backend, case.column, got.printed[n], lands or ""):
            wrong.append(f"{_describe(n, case)}: printed {got.printed[n][:60]!r}, "
                         f"expected {(lands or '')[:60]!r}")
    return wrong


def test_every_case_has_its_outcome(outcome: tuple[str, Outcome]) -> None:
    """Each record lands with exactly the expected value or is a dead letter whose reason
    matches, on every backend, except the pinned limits (``pinned``)."""
    backend, got = outcome
    wrong = _wrong(backend, got)
    assert not wrong, f"{backend}: {len(wrong)} case(s) differ:\n" + "\n".join(wrong)
    if backend == "postgresql-direct":  # the landing cases went straight into the table
        assert got.direct[0], "the landing cases did not load directly"
