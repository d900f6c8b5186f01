"""Service-database tables (jankycron/sources/servicedb.py): a real second PostgreSQL database
plays the service; the job runs through the real CLI into DuckDB or PostgreSQL."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
from conftest import PG_ADMIN, ROOT, Workspace, create_table, free_port, pg_query, warehouse_rows

from jankycron.ledger import Ledger
from jankycron.schedule import Schedule
from jankycron.sources.servicedb import STATE_KEY

EXAMPLE_JOB = ROOT / "jobs" / "service_payments_transactions.py"
EXAMPLE_DDL = ROOT / "warehouse" / "0005_service_example.sql"

SERVICE_DDL = """
CREATE TABLE public.transactions (
    id          bigint PRIMARY KEY,
    account_id  bigint NOT NULL,
    amount      numeric(18,2) NOT NULL,
    currency    char(3) NOT NULL,
    status      text NOT NULL,
    metadata    jsonb,
    card_token  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON public.transactions (updated_at);
"""
# The warehouse side of the test jobs (not the bundled example's table): plain DDL.
TARGET_DDL = """CREATE TABLE {name} (
    source varchar(16), id bigint NOT NULL, account_id bigint, amount numeric(18,2),
    currency char(3), status varchar(32), created_at timestamptz, updated_at timestamptz)"""


@pytest.fixture
def make_db() -> Iterator[Callable[[], str]]:
    """Fresh databases on the real server, each a service's database, dropped afterwards."""
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    names: list[str] = []

    def make() -> str:
        name = f"jc_svc_{uuid.uuid4().hex[:10]}"
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        names.append(name)
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
        pg_query(url, SERVICE_DDL)
        return url

    try:
        yield make
    finally:
        with admin.cursor() as cur:
            for name in names:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def insert(url: str, *rows: tuple, updated_at: str = "now()") -> None:
    for id_, amount, status in rows:
        pg_query(url, "INSERT INTO transactions (id, account_id, amount, currency, status, "
                      f"metadata, updated_at) VALUES (%s, %s, %s, 'EUR', %s, %s, {updated_at})",
                 (id_, 100 + id_, Decimal(amount), status, json.dumps({"n": id_})))


COLUMNS = ("id", "account_id", "amount", "currency", "status", "created_at", "updated_at")


def service_job(ws: Workspace, name: str, dsn_env: str, target: str, **kw) -> None:
    """A job file on public.transactions and, when it is new, its warehouse table."""
    args = "".join(f", {k}={v!r}" for k, v in {"columns": COLUMNS, **kw}.items())
    ws.write_job(name, f"""
        from jankycron.sources.servicedb import postgres_table

        job = postgres_table(name={name!r}, dsn_env={dsn_env!r}, table="public.transactions",
                             target={target!r}, key="id", cursor="updated_at"{args})
        """)
    create_table(ws, TARGET_DDL.format(name=f"IF NOT EXISTS {target}"))


def run(ws: Workspace, job: str, env: dict[str, str], *args: str) -> dict:
    (row,) = json.loads(ws.cli("run", job, "--local", "--json", *args, env=env,
                               check=True).stdout)
    return row


def high_water_mark(ws: Workspace, job: str) -> datetime:
    ledger = Ledger.open(ws.settings)
    try:
        return datetime.fromisoformat(ledger.get_state(job)[STATE_KEY])
    finally:
        ledger.close()


def by_id(ws: Workspace, table: str, cols: str = "amount, status") -> dict[int, tuple]:
    rows = warehouse_rows(ws, f"SELECT id, {cols} FROM {table} ORDER BY id")
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate keys in {table}: {ids}"
    return {r[0]: tuple(r[1:]) for r in rows}


# ---------------------------------------------------------------------------------- tests
def test_example_job_lands_inserts_and_updates_once_with_their_latest_values(
        ws: Workspace, make_db, tmp_path: Path) -> None:
    """The bundled example job and its Redshift-form table, on DuckDB and PostgreSQL."""
    svc = make_db()
    env = {"PAYMENTS_DB_URL": svc}
    shutil.copy(EXAMPLE_JOB, ws.jobs)
    (tmp_path / "wh").mkdir()
    shutil.copy(EXAMPLE_DDL, tmp_path / "wh")
    ws.cli("migrate", "--path", str(tmp_path / "wh"), check=True)

    insert(svc, (1, "10.00", "pending"), (2, "20.50", "pending"), (3, "0.01", "paid"))
    first = run(ws, "payments_transactions", env)
    assert (first["status"], first["rows_loaded"]) == ("success", 3)
    assert not first["dropped_keys"]  # columns= leaves card_token behind

    pg_query(svc, "UPDATE transactions SET status = 'paid', amount = 20.55, "
                  "updated_at = now() WHERE id = 2")
    insert(svc, (4, "99999999.99", "pending"))
    # A row an app server dated a few seconds into the future: not pulled until its time.
    insert(svc, (5, "5.00", "pending"), updated_at="now() + interval '8 seconds'")
    run(ws, "payments_transactions", env)
    assert by_id(ws, "payments_transactions") == {
        1: (Decimal("10.00"), "pending"), 2: (Decimal("20.55"), "paid"),
        3: (Decimal("0.01"), "paid"), 4: (Decimal("99999999.99"), "pending")}
    (due,) = pg_query(svc, "SELECT updated_at FROM transactions WHERE id = 5")[0]
    assert high_water_mark(ws, "payments_transactions") < due

    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.5)
    third = run(ws, "payments_transactions", env)
    assert third["status"] == "success"
    landed = by_id(ws, "payments_transactions", "amount, status, currency, metadata")
    assert sorted(landed) == [1, 2, 3, 4, 5]
    assert landed[2][:3] == (Decimal("20.55"), "paid", "EUR")
    doc = landed[5][3]  # jsonb comes back parsed from PostgreSQL, as text from DuckDB
    assert (json.loads(doc) if isinstance(doc, str) else doc) == {"n": 5}


def test_a_late_commit_inside_the_look_back_lands_exactly_once(duck_ws: Workspace,
                                                                make_db) -> None:
    svc = make_db()
    env = {"SVC_URL": svc}
    service_job(duck_ws, "svc_late", "SVC_URL", "svc_late_rows", chunk_size=2)
    insert(svc, (1, "1.00", "pending"), (2, "2.00", "pending"), (3, "3.00", "pending"))

    # Transactions that began (and stamped updated_at = now()) before the run, and commit
    # after it: invisible to the run's snapshot, dated before its high-water mark.
    late = psycopg2.connect(svc)
    try:
        with late.cursor() as cur:
            cur.execute("INSERT INTO transactions (id, account_id, amount, currency, status) "
                        "VALUES (10, 1, 10.00, 'EUR', 'late')")
            cur.execute("UPDATE transactions SET status = 'refunded', updated_at = now() "
                        "WHERE id = 1")
            cur.execute("SELECT now()")
            (stamped,) = cur.fetchone()
        first = run(duck_ws, "svc_late", env)
        assert first["rows_loaded"] == 3
        assert by_id(duck_ws, "svc_late_rows") == {
            1: (Decimal("1.00"), "pending"), 2: (Decimal("2.00"), "pending"),
            3: (Decimal("3.00"), "pending")}
        assert stamped < high_water_mark(duck_ws, "svc_late")
        late.commit()
    finally:
        late.close()

    run(duck_ws, "svc_late", env)
    run(duck_ws, "svc_late", env)  # the look-back reads them again: merged, not added
    assert by_id(duck_ws, "svc_late_rows") == {
        1: (Decimal("1.00"), "refunded"), 2: (Decimal("2.00"), "pending"),
        3: (Decimal("3.00"), "pending"), 10: (Decimal("10.00"), "late")}


def test_a_late_commit_older_than_the_look_back_is_missed_until_its_interval_is_rerun(
        duck_ws: Workspace, make_db) -> None:
    """The documented limit, and its repair: a rerun of an older interval re-pulls it."""
    svc = make_db()
    env = {"SVC_URL": svc}
    service_job(duck_ws, "svc_gap", "SVC_URL", "svc_gap_rows", lookback="10m")
    insert(svc, (1, "1.00", "pending"))
    run(duck_ws, "svc_gap", env)
    hwm = high_water_mark(duck_ws, "svc_gap")

    # Committed after that run, dated an hour before it: 50 minutes outside the look-back.
    old = hwm - timedelta(hours=1)
    insert(svc, (7, "7.00", "late"), updated_at=f"'{old.isoformat()}'::timestamptz")
    second = run(duck_ws, "svc_gap", env)
    assert second["status"] == "success"
    assert sorted(by_id(duck_ws, "svc_gap_rows")) == [1]
    hwm = high_water_mark(duck_ws, "svc_gap")

    interval = Schedule("*/15 * * * *").interval_ending(old + timedelta(minutes=15))
    assert interval.start <= old < interval.end
    repair = run(duck_ws, "svc_gap", env, "--date", interval.start.strftime("%Y-%m-%dT%H:%M"))
    assert (repair["status"], repair["rows_loaded"]) == ("success", 1)
    assert by_id(duck_ws, "svc_gap_rows") == {1: (Decimal("1.00"), "pending"),
                                              7: (Decimal("7.00"), "late")}
    assert high_water_mark(duck_ws, "svc_gap") == hwm  # a re-pull leaves the mark alone


def test_a_failed_run_leaves_the_high_water_mark_where_it_was(duck_ws: Workspace,
                                                               make_db) -> None:
    """With no look-back at all, a failed run that moved the mark would lose row 9."""
    svc = make_db()
    env = {"SVC_URL": svc}
    service_job(duck_ws, "svc_fail", "SVC_URL", "svc_fail_rows", lookback="0s")
    insert(svc, (1, "1.00", "pending"))
    run(duck_ws, "svc_fail", env)
    hwm = high_water_mark(duck_ws, "svc_fail")

    insert(svc, (9, "9.00", "pending"))
    pg_query(svc, "ALTER TABLE transactions RENAME COLUMN status TO state")  # a bad deploy
    proc = duck_ws.cli("run", "svc_fail", "--local", env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: svc_fail: table public.transactions has no column status"]
    assert high_water_mark(duck_ws, "svc_fail") == hwm

    pg_query(svc, "ALTER TABLE transactions RENAME COLUMN state TO status")
    run(duck_ws, "svc_fail", env)
    assert by_id(duck_ws, "svc_fail_rows") == {1: (Decimal("1.00"), "pending"),
                                               9: (Decimal("9.00"), "pending")}


def test_two_service_databases_with_the_same_table_share_one_warehouse_table(
        duck_ws: Workspace, make_db) -> None:
    eu, us = make_db(), make_db()
    env = {"EU_DB_URL": eu, "US_DB_URL": us}
    service_job(duck_ws, "payments_eu", "EU_DB_URL", "all_transactions", source="eu")
    service_job(duck_ws, "payments_us", "US_DB_URL", "all_transactions", source="us")
    insert(eu, (1, "1.00", "eu-one"), (2, "2.00", "eu-two"))
    insert(us, (1, "100.00", "us-one"), (3, "300.00", "us-three"))

    for _ in range(2):  # the second round re-reads the look-back: nothing is added
        run(duck_ws, "payments_eu", env)
        run(duck_ws, "payments_us", env)
    pg_query(us, "UPDATE transactions SET status = 'us-one-v2', updated_at = now() "
                 "WHERE id = 1")
    run(duck_ws, "payments_us", env)

    rows = warehouse_rows(duck_ws, "SELECT source, id, amount, status FROM all_transactions "
                                   "ORDER BY source, id")
    assert rows == [("eu", 1, Decimal("1.00"), "eu-one"), ("eu", 2, Decimal("2.00"), "eu-two"),
                    ("us", 1, Decimal("100.00"), "us-one-v2"),
                    ("us", 3, Decimal("300.00"), "us-three")]


@pytest.mark.parametrize("dsn", [
    "postgresql://payments_ro:s3cr3t-Pa55@127.0.0.1:{port}/payments",
    "host=127.0.0.1 port={port} user=payments_ro password=s3cr3t-Pa55 dbname=payments",
    "postgresql://payments_ro:s3cr3t-Pa55@127.0.0.1:notaport/payments",
])
def test_a_connection_error_is_one_line_without_the_password(duck_ws: Workspace,
                                                             dsn: str) -> None:
    service_job(duck_ws, "svc_down", "SVC_URL", "svc_down_rows")
    env = {"SVC_URL": dsn.format(port=free_port())}
    proc = duck_ws.cli("run", "svc_down", "--local", env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: svc_down: "), proc.stderr
    assert "SVC_URL" in lines[0]
    history = duck_ws.cli("history", "svc_down", "--json", env=env, check=True).stdout
    (row,) = json.loads(history)
    assert row["status"] == "failed" and row["error"]
    for text in (proc.stderr, proc.stdout, history):
        assert "s3cr3t" not in text
    if "notaport" not in dsn:
        assert "127.0.0.1" in lines[0]  # the operator still sees which server


def test_an_unknown_table_or_column_and_a_missing_dsn_are_one_line_errors(
        duck_ws: Workspace, make_db) -> None:
    svc = make_db()
    service_job(duck_ws, "svc_nope", "SVC_URL", "svc_nope_rows")
    (duck_ws.jobs / "svc_nope.py").write_text(
        (duck_ws.jobs / "svc_nope.py").read_text().replace("public.transactions",
                                                            "public.transactons"))
    service_job(duck_ws, "svc_col", "SVC_URL", "svc_col_rows", columns=("id", "amout"))

    proc = duck_ws.cli("run", "svc_nope", "--local", env={"SVC_URL": svc})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: svc_nope: table public.transactons not found in service database "
        f"127.0.0.1:5432/{svc.rsplit('/', 1)[1]} ($SVC_URL)"]

    proc = duck_ws.cli("run", "svc_col", "--local", env={"SVC_URL": svc})
    assert proc.stderr.strip().splitlines() == [
        "error: svc_col: table public.transactions has no column amout"]

    # No DSN: the job files still import (jobs, check), and a run names the variable.
    assert {j["name"] for j in duck_ws.cli_json("jobs")} == {"svc_nope", "svc_col"}
    proc = duck_ws.cli("run", "svc_col", "--local")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: svc_col: SVC_URL is not set: the service database's DSN "
        "(postgresql://user:***@host:5432/db) is required"]  # error lines show no URL password


def test_values_arrive_as_documented(duck_ws: Workspace, make_db) -> None:
    """bytea as base64, interval as PostgreSQL's text, naive timestamps as UTC, arrays and
    jsonb as JSON, numeric exact; the first run starts at ``since``."""
    svc = make_db()
    pg_query(svc, "CREATE TABLE public.kinds (id int PRIMARY KEY, blob bytea, wait interval, "
                  "local_ts timestamp, tags text[], doc jsonb, price numeric(20,8), "
                  "changed timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'))")
    pg_query(svc, "INSERT INTO kinds VALUES (1, '\\x00ff10'::bytea, '1 day 02:00', "
                  "'2026-01-02 03:04:05', ARRAY['a','b'], '{\"k\": [1, \"x\"]}', "
                  "12345678.12345678)")
    pg_query(svc, "INSERT INTO kinds (id, changed) VALUES (2, '2020-06-01 00:00')")
    duck_ws.write_job("svc_kinds", """
        from jankycron.sources.servicedb import postgres_table

        job = postgres_table(name="svc_kinds", dsn_env="SVC_URL", table="kinds",
                             target="svc_kinds", key="id", cursor="changed",
                             since="2020-01-01")
        """)
    create_table(duck_ws, "CREATE TABLE svc_kinds (id int NOT NULL, blob varchar(100), "
                          "wait varchar(100), local_ts timestamptz, tags varchar(100), "
                          "doc varchar(100), price numeric(20,8), changed timestamp)")
    row = run(duck_ws, "svc_kinds", {"SVC_URL": svc})
    assert (row["status"], row["rows_loaded"]) == ("success", 2)
    (got, old) = warehouse_rows(duck_ws, "SELECT blob, wait, local_ts, tags, doc, price, "
                                         "changed FROM svc_kinds ORDER BY id")
    assert old[-1] == datetime(2020, 6, 1)
    assert got[:2] == ("AP8Q", "1 day 02:00:00")
    assert got[2] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert json.loads(got[3]) == ["a", "b"] and json.loads(got[4]) == {"k": [1, "x"]}
    assert got[5] == Decimal("12345678.12345678")
