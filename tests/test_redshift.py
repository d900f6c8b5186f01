"""The Redshift loader's steps end to end, against the stand-in over PostgreSQL
(tests/redshift_standin.py says what that proves and what it does not): COPY/NOLOAD over
manifests in S3 (the emulator), line jumps from stl_load_errors, bisection where no line is
given, dedupe by __jc_seq, the merge transaction, dead letters and replay, outages."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import psycopg2
import pytest
from conftest import S3, Workspace, _workspace, pg_query
from redshift_standin import StandIn, install

from jankycron.config import Settings
from jankycron.discovery import discover
from jankycron.errors import ConfigError, TransientError
from jankycron.load import open_warehouse
from jankycron.load.redshift import RedshiftWarehouse
from jankycron.runner import Context, load_tables, replay, run_job

ROLE = "arn:aws:iam::123456789012:role/RedshiftLoad"


class RS:
    def __init__(self, ws: Workspace, pg_url: str, s3: S3, standin: StandIn):
        self.ws, self.pg_url, self.s3, self.standin = ws, pg_url, s3, standin

    def context(self) -> Context:
        ctx = Context(self.ws.settings)
        settings = self.ws.settings
        ctx.__dict__["warehouse"] = RedshiftWarehouse(
            settings.warehouse_url, settings.statement_timeout, ctx.store, ROLE,
            connect=self.standin)
        return ctx

    def run(self, job_name: str, day: date, **kw) -> tuple[dict, Context]:
        registry, _ = discover(self.ws.jobs)
        job = registry.get(job_name)
        ctx = self.context()
        return run_job(ctx, job, job.interval_on(day), **kw), ctx

    def rows(self, sql: str) -> list[tuple]:
        return pg_query(self.pg_url, sql)


@pytest.fixture
def rs(tmp_path: Path, pg_url: str, s3: S3) -> RS:
    install(pg_url)
    bucket = s3.new_bucket()
    ws = _workspace(tmp_path, {
        **s3.env,
        "JANKYCRON_WAREHOUSE_URL": "redshift://" + pg_url.split("://", 1)[1],
        "JANKYCRON_STORE_URL": f"s3://{bucket}/jankycron",
        "JANKYCRON_REDSHIFT_IAM_ROLE": ROLE,
        "JANKYCRON_PART_SIZE": "64KB",
    })
    return RS(ws, pg_url, s3, StandIn(s3.client()))


EVENTS = '''
from jankycron import job

@job(schedule="0 0 * * *", table="events", key="id")
def events(run):
    for i in range({n}):
        yield {{"id": f"m{{i}}", "userId": f"u{{i % 7}}", "amount": {amount},
               "extra": 1}}
    yield {{"id": "m0", "userId": "last", "amount": "9.99"}}   # the same key again
'''


def _events_table(rs: RS) -> None:
    # Redshift folds names to lower case: "userid" is what `"userId"` becomes there.
    rs.rows("CREATE TABLE events (id varchar(20) NOT NULL, userid varchar(10), "
            "amount numeric(10,2))")


def test_a_run_lands_once_through_noload_copy_and_merge(rs: RS) -> None:
    _events_table(rs)
    rs.ws.write_job("events", EVENTS.format(n=3000, amount='"1.50"'))
    run, _ = rs.run("events", date(2026, 11, 20))
    assert (run["status"], run["rows_loaded"], run["rows_rejected"], run["rows_replaced"]) == (
        "success", 3000, 0, 1)
    assert rs.rows("SELECT count(*), count(DISTINCT id) FROM events") == [(3000, 3000)]
    # The later line of the same key won, although COPY does not keep line order.
    assert rs.rows("SELECT userid, amount::text FROM events WHERE id = 'm0'") == \
        [("last", "9.99")]
    # camelCase keys matched their folded columns: only "extra" was dropped.
    assert run["dropped_keys"] == {"extra": 3000}
    noload, copy = rs.standin.copies
    # NOLOAD validates with exactly the real COPY's options, each over a manifest of this load.
    assert noload.endswith("\nNOLOAD")
    assert noload.splitlines()[2:-1] == copy.splitlines()[2:]
    assert "/loads/events/" in noload.splitlines()[1] and "/loads/events/" in copy.splitlines()[1]
    assert rs.s3.keys(rs.ws.settings.store_url.split("/")[2], "jankycron/loads/") == []  # tidied
    # A rerun of the interval replaces its rows; nothing doubles.
    rerun, _ = rs.run("events", date(2026, 11, 20))
    assert (rerun["rows_loaded"], rerun["rows_replaced"]) == (3000, 1)
    assert rs.rows("SELECT count(*) FROM events") == [(3000,)]
    assert rs.rows("SELECT count(*) FROM jankycron_loads") == [(2,)]


def test_across_intervals_the_newer_interval_wins(rs: RS) -> None:
    rs.rows("CREATE TABLE kv (k int NOT NULL, v varchar(20))")
    rs.ws.write_job("kv", '''
        from jankycron import job

        @job(schedule="0 0 * * *", table="kv", key="k")
        def kv(run):
            yield {"k": 1, "v": run.start.date().isoformat()}
    ''')
    registry, _ = discover(rs.ws.jobs)
    job = registry.get("kv")
    ctx = rs.context()
    for day in (date(2026, 11, 21), date(2026, 11, 20)):  # staged newest first
        run_job(ctx, job, job.interval_on(day), load=False)
    load_tables(ctx, job.tables)
    assert rs.rows("SELECT v FROM kv") == [("2026-11-21",)]


def test_the_merge_counts_what_a_later_record_of_the_same_run_replaced(rs: RS) -> None:
    """Three intervals loaded in one merge, key 1 in each (twice in the first and the last),
    and in the first a later duplicate of key 2000 that is dead-lettered: only a repeat inside a
    run counts as replaced, so every run reconciles; across runs the newest interval wins."""
    rs.rows("CREATE TABLE kv (k int NOT NULL, v varchar(20), n int)")
    rs.ws.write_job("kv", '''
        from jankycron import job

        @job(schedule="0 0 * * *", table="kv", key="k")
        def kv(run):
            day = run.start.day
            yield {"k": 1, "v": f"day {day}"}
            for i in range(10):
                yield {"k": day * 100 + i, "v": "own", "n": i}
            if day != 21:
                yield {"k": 1, "v": f"day {day} again"}
            if day == 20:
                yield {"k": 2000, "v": "bad", "n": "not a number"}  # 2000 stays "own"
    ''')
    registry, _ = discover(rs.ws.jobs)
    job = registry.get("kv")
    ctx = rs.context()
    runs = [run_job(ctx, job, job.interval_on(date(2026, 11, d)), load=False)["run_id"]
            for d in (20, 21, 22)]
    (result,) = load_tables(ctx, job.tables)
    assert (result.rows_loaded, result.rows_rejected, result.rows_replaced) == (33, 1, 2)
    got = [ctx.ledger.run(r) for r in runs]
    assert [(r["rows_extracted"], r["rows_loaded"], r["rows_rejected"], r["rows_replaced"])
            for r in got] == [(13, 11, 1, 1), (11, 11, 0, 0), (12, 11, 0, 1)]
    assert rs.rows("SELECT count(*) FROM kv") == [(31,)]
    assert rs.rows("SELECT k, v FROM kv WHERE k IN (1, 2000) ORDER BY k") == [
        (1, "day 22 again"), (2000, "own")]


BAD = '''
import random
from jankycron import job

@job(schedule="0 0 * * *", table="nums", key="id")
def nums(run):
    bad = set(random.Random(11).sample(range({n}), {k}))
    for i in range({n}):
        # Out of range for int: the loader's own checks pass it, COPY refuses it.
        yield {{"id": i, "v": 10 ** 12 if i in bad else i}}
'''


@pytest.mark.parametrize("line_numbers", [True, False], ids=["line-jump", "bisection"])
def test_bad_records_are_isolated_and_the_rest_loads(rs: RS, line_numbers: bool) -> None:
    n, k = 4000, 3
    rs.standin.line_numbers = line_numbers
    rs.rows("CREATE TABLE nums (id int NOT NULL, v int)")
    rs.ws.write_job("nums", BAD.format(n=n, k=k))
    run, ctx = rs.run("nums", date(2026, 11, 20))
    assert (run["rows_loaded"], run["rows_rejected"]) == (n - k, k)
    assert rs.rows("SELECT count(*) FROM nums") == [(n - k,)]
    letters = ctx.ledger.deadletters("nums")
    assert len(letters) == k
    for d in letters:
        assert "column v" in d["reason"] and "Redshift load error 1204" in d["reason"]
        assert '"v":1000000000000' in d["record"] and "__jc_seq" not in d["record"]
    noloads = sum(1 for c in rs.standin.copies if c.endswith("NOLOAD"))
    parts = len(ctx.store.list("staging/nums/"))
    assert parts > 2  # several parts: bisection works across parts, then lines
    if line_numbers:
        assert noloads == k + 1  # each error names its line: one validation per bad record
    else:
        assert noloads <= 1 + 2 * k * math.ceil(math.log2(n))


def test_what_other_backends_refuse_is_refused_before_copy(rs: RS) -> None:
    """COPY's own conversion reads more than the other backends (the stand-in: PostgreSQL's
    input functions, which take " 7" and round "1.555"); the loader refuses those lines before
    COPY, with the same rule, and sends timestamps with an offset in UTC (Redshift would drop
    the offset of one for a TIMESTAMP column)."""
    rs.rows("CREATE TABLE kinds (id int NOT NULL, n int, amount numeric(10,2), at timestamp)")
    rs.ws.write_job("kinds", '''
        from jankycron import job

        @job(schedule="0 0 * * *", table="kinds", key="id")
        def kinds(run):
            yield {"id": 1, "n": " 7"}
            yield {"id": 2, "amount": "1.555"}
            yield {"id": 3, "n": 7, "amount": "1.50", "at": "2026-11-20T10:00:00+05:30"}
    ''')
    run, ctx = rs.run("kinds", date(2026, 11, 20))
    assert (run["rows_loaded"], run["rows_rejected"]) == (1, 2)
    assert rs.rows("SELECT id, n, amount::text, at::text FROM kinds") == [
        (3, 7, "1.50", "2026-11-20 04:30:00")]
    reasons = sorted(d["reason"] for d in ctx.ledger.deadletters("kinds"))
    assert reasons[0].startswith("column amount: is not a decimal with at most 2 places")
    assert reasons[1].startswith("column n: is not an integer")


def test_a_null_merge_key_is_a_dead_letter(rs: RS) -> None:
    rs.rows("CREATE TABLE people (id int, name varchar(20))")
    rs.ws.write_job("people", '''
        from jankycron import job

        @job(schedule="0 0 * * *", table="people", key="id")
        def people(run):
            yield {"id": 1, "name": "Ada"}
            yield {"name": "nobody"}
            yield {"id": 2, "name": "Grace"}
    ''')
    run, ctx = rs.run("people", date(2026, 11, 20))
    assert (run["rows_loaded"], run["rows_rejected"]) == (2, 1)
    (d,) = ctx.ledger.deadletters("people")
    assert d["reason"] == "column id: missing or null, but it is a merge key"
    assert d["record"] == '{"name":"nobody"}' and d["line"] == 2
    assert rs.rows("SELECT id FROM people ORDER BY id") == [(1,), (2,)]


def test_replay_after_widening_loads_once(rs: RS) -> None:
    rs.rows("CREATE TABLE cities (id int NOT NULL, name varchar(5))")
    rs.ws.write_job("cities", '''
        from jankycron import job

        @job(schedule="0 0 * * *", table="cities", key="id")
        def cities(run):
            yield {"id": 1, "name": "Oslo"}
            yield {"id": 2, "name": "Trondheim"}
    ''')
    run, ctx = rs.run("cities", date(2026, 11, 20))
    (d,) = ctx.ledger.deadletters("cities")
    assert "column name" in d["reason"] and d["record"] == '{"id":2,"name":"Trondheim"}'
    rs.rows("ALTER TABLE cities ALTER name TYPE varchar(20)")
    registry, _ = discover(rs.ws.jobs)
    replay(ctx, "cities", registry.get("cities").tables["cities"])
    replay(ctx, "cities", registry.get("cities").tables["cities"])  # nothing left to replay
    assert rs.rows("SELECT id, name FROM cities ORDER BY id") == [(1, "Oslo"), (2, "Trondheim")]
    assert ctx.ledger.deadletters("cities") == []


def test_warehouse_down_then_back_loads_every_batch_once(rs: RS) -> None:
    _events_table(rs)
    rs.ws.write_job("events", EVENTS.format(n=50, amount='"2.00"'))
    rs.standin.fail_connect = psycopg2.OperationalError("could not connect to server")
    registry, _ = discover(rs.ws.jobs)
    job = registry.get("events")
    ctx = rs.context()
    for day in (date(2026, 11, 20), date(2026, 11, 21)):
        with pytest.raises(TransientError, match="could not connect"):
            run_job(ctx, job, job.interval_on(day))
    assert len(ctx.ledger.pending_batches("events")) == 2
    rs.standin.fail_connect = None
    load_tables(ctx, job.tables)
    load_tables(ctx, job.tables)
    assert ctx.ledger.pending_batches("events") == []
    assert rs.rows("SELECT count(*) FROM events") == [(50,)]
    assert rs.rows("SELECT count(*) FROM jankycron_loads") == [(2,)]


def test_schema_comes_from_the_first_search_path_schema_that_has_the_table(rs: RS) -> None:
    rs.rows("CREATE SCHEMA analytics")
    rs.rows("CREATE TABLE analytics.t (id int NOT NULL, v varchar(10))")
    rs.rows("CREATE TABLE public.t (id int NOT NULL)")  # shadowed: not what the loader reads
    settings = rs.ws.settings
    url = settings.warehouse_url + "?options=-csearch_path%3Danalytics,public"
    wh = RedshiftWarehouse(url, 60, rs.context().store, ROLE, connect=rs.standin)
    assert [c.name for c in wh.columns("T")] == ["id", "v"]
    assert [c.type_sql for c in wh.columns("t")] == ["integer", "character varying(10)"]


def test_dry_run_shows_the_copy_the_load_would_send(rs: RS) -> None:
    _events_table(rs)
    rs.ws.write_job("events", EVENTS.format(n=5, amount="None"))
    registry, _ = discover(rs.ws.jobs)
    job = registry.get("events")
    ctx = rs.context()
    run_job(ctx, job, job.interval_on(date(2026, 11, 20)), load=False)
    plan = ctx.loader.plan("events", job.tables["events"])
    text = "\n".join(plan["sql"])
    assert "COPY \"jc_stage\"\nFROM 's3://" in text and "NOLOAD" in text
    assert f"IAM_ROLE '{ROLE}'" in text and 'MAX("__jc_seq")' in text
    assert rs.standin.copies == []  # nothing was sent


def test_settings_for_redshift(rs: RS, tmp_path: Path) -> None:
    env = rs.ws.env
    assert Settings.from_env(env).load_interval == 600  # commit about every 10 minutes
    assert Settings.from_env({**env, "JANKYCRON_LOAD_INTERVAL": "0"}).load_interval == 0
    no_role = {k: v for k, v in env.items() if k != "JANKYCRON_REDSHIFT_IAM_ROLE"}
    with pytest.raises(ConfigError, match="JANKYCRON_REDSHIFT_IAM_ROLE"):
        open_warehouse(Settings.from_env(no_role))
    with pytest.raises(ConfigError, match="must be s3://"):
        open_warehouse(Settings.from_env({**env, "JANKYCRON_STORE_URL": tmp_path.as_uri()}))
    shown = repr(open_warehouse(Settings.from_env(
        {**env, "JANKYCRON_WAREHOUSE_URL": "redshift://loader:s3cret@example.com:5439/dw"})).shown)
    assert "s3cret" not in shown
