"""When something goes wrong the operator gets one clear line on stderr starting with
``error:``, a non-zero exit, no traceback and no secret; nothing staged is lost."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from conftest import S3, Workspace, create_table, free_port, pg_query, warehouse_rows

DAY = "2026-11-24"
PASSWORD = "S3cretPassw0rd"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"

TABLE = "CREATE TABLE orders (id bigint NOT NULL, amount integer)"
JOB = '''
from jankycron import job

@job(schedule="0 3 * * *", table="orders", key="id")
def orders(run):
    for i in range(1, 4):
        yield {"id": i, "amount": i * 10}
'''

BOOM = '''
from jankycron import job

@job(schedule="0 3 * * *", table="orders", key="id")
def boom(run):
    yield {"id": 1, "amount": 10}
    raise ValueError("upstream sent garbage")
'''
BOOM_LINE = 7  # the `raise` above, counting the leading blank line

SKIP = '''
from jankycron import SkipRun, job

@job(schedule="0 3 * * *", table="orders", key="id")
def quiet(run):
    raise SkipRun("the provider published nothing for this day")
    yield {"id": 1}
'''


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr without blank lines and the warnings about skipped job files."""
    return [line for line in proc.stderr.splitlines()
            if line.strip() and not line.startswith("warning: skipped ")]


def assert_clean_failure(proc: subprocess.CompletedProcess, *words: str,
                         secrets: tuple[str, ...] = ()) -> str:
    """Non-zero exit, the last stderr line is `error: ...` with the given words, no traceback,
    no secret anywhere. Returns the error line."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    for secret in secrets:
        assert secret not in output
    lines = error_lines(proc)
    assert lines, "nothing on stderr"
    last = lines[-1]
    assert last.startswith("error: "), output
    for word in words:
        assert word in last, f"{word!r} missing from {last!r}"
    return last


def assert_one_error_line(proc: subprocess.CompletedProcess, *words: str,
                          secrets: tuple[str, ...] = ()) -> str:
    """assert_clean_failure, and the error line is the only line on stderr."""
    line = assert_clean_failure(proc, *words, secrets=secrets)
    assert error_lines(proc) == [line], proc.stderr
    return line


def staged_keys(ws: Workspace) -> list[str]:
    """Every object under staging/ in the workspace's store (S3 emulator or local folder)."""
    url = ws.env["JANKYCRON_STORE_URL"]
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        client = boto3.client("s3", endpoint_url=ws.env["AWS_ENDPOINT_URL"],
                              region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/staging/")
        return sorted(o["Key"][len(prefix) + 1:] for p in pages for o in p.get("Contents", []))
    root = Path(url[len("file://"):])
    return sorted(str(p.relative_to(root)) for p in (root / "staging").rglob("*")
                  if p.is_file())


@pytest.fixture
def orders_ws(duck_ws: Workspace) -> Workspace:
    create_table(duck_ws, TABLE)
    duck_ws.write_job("orders", JOB)
    return duck_ws


# ------------------------------------------------------------------------------ unknown job


def test_unknown_job_is_one_line(orders_ws: Workspace) -> None:
    """`run nope` names the unknown job in one line and runs nothing."""
    proc = orders_ws.cli("run", "nope", "--local")
    assert_one_error_line(proc, "unknown job 'nope'", "jankycron jobs")
    assert orders_ws.cli_json("history") == []


def test_unknown_job_with_a_typo_suggests_the_job(orders_ws: Workspace) -> None:
    proc = orders_ws.cli("run", "ordres", "--date", DAY, "--local")
    assert_one_error_line(proc, "unknown job 'ordres'", "did you mean orders?")


# ------------------------------------------------------------------------------ bad config


@pytest.mark.parametrize(("variable", "value", "secret"), [
    ("JANKYCRON_WAREHOUSE_URL", f"mysql://root:{PASSWORD}@db.internal:3306/shop", PASSWORD),
    ("JANKYCRON_STORE_URL", f"ftp://loader:{PASSWORD}@files.internal/drop", PASSWORD),
    ("JANKYCRON_STATE_URL", f"redis://:{PASSWORD}@cache.internal:6379/0", PASSWORD),
    ("JANKYCRON_WAREHOUSE_URL", f"mysql://root@db.internal/shop?password={PASSWORD}", PASSWORD),
    ("JANKYCRON_STORE_URL", f"ftp://loader:p@{PASSWORD}@files.internal/drop", PASSWORD),
    ("JANKYCRON_STATEMENT_TIMEOUT", "soon", None),
    ("JANKYCRON_PART_SIZE", "12", None),
])
@pytest.mark.parametrize("command", [["jobs"], ["run", "orders", "--date", DAY, "--local"]])
def test_bad_config_names_the_variable(orders_ws: Workspace, variable: str, value: str,
                                       secret: str | None, command: list[str]) -> None:
    """A malformed setting is named in one line (its password masked), before anything runs."""
    proc = orders_ws.cli(*command, env={variable: value})
    line = assert_one_error_line(proc, variable, secrets=(secret,) if secret else ())
    if secret:
        assert "***" in line
    assert proc.stdout == ""
    assert orders_ws.cli_json("history") == []


# ------------------------------------------------------------------------------ warehouse down


def test_unreachable_warehouse_keeps_the_staged_data_until_load(ws: Workspace,
                                                                pg_url: str) -> None:
    """The warehouse is down during the run: one line without its password, the batch stays
    staged; once the warehouse is back, `load --local` lands the rows exactly once."""
    closed = free_port()
    down = {"JANKYCRON_WAREHOUSE_URL": f"postgresql://analyst:{PASSWORD}@127.0.0.1:{closed}/db"}
    ws.write_job("orders", JOB)

    proc = ws.cli("run", "orders", "--date", DAY, "--local", env=down)
    assert_one_error_line(proc, "warehouse", f"127.0.0.1:{closed}", secrets=(PASSWORD,))

    keys = staged_keys(ws)
    assert any(k.startswith("staging/orders/orders/") and k.endswith("/manifest.json")
               for k in keys), keys
    assert any(k.endswith(".ndjson.gz") for k in keys), keys
    hist = ws.cli("history", "--json", env=down)
    assert PASSWORD not in hist.stdout + hist.stderr
    (run,) = ws.cli_json("history")
    assert run["status"] == "staged"
    assert (run["rows_staged"], run["rows_loaded"]) == (3, 0)
    assert "warehouse" in run["error"] and PASSWORD not in run["error"]

    # The warehouse is back (a real PostgreSQL database with the table).
    up = {"JANKYCRON_WAREHOUSE_URL": pg_url}
    pg_query(pg_url, TABLE)
    load = ws.cli("load", "--local", env=up)
    assert load.returncode == 0, load.stdout + load.stderr
    assert "orders: 1 batch(es), 3 loaded, 0 dead-lettered" in load.stdout
    assert pg_query(pg_url, "SELECT id, amount FROM orders ORDER BY id") == [
        (1, 10), (2, 20), (3, 30)]

    (run,) = ws.cli_json("history")
    assert run["status"] == "success"
    assert (run["rows_staged"], run["rows_loaded"], run["rows_rejected"]) == (3, 3, 0)
    assert run["error"] is None

    again = ws.cli("load", "--local", env=up)
    assert again.returncode == 0 and "nothing pending" in again.stdout
    assert pg_query(pg_url, "SELECT count(*), count(DISTINCT id) FROM orders") == [(3, 3)]


def test_check_reports_an_unreachable_warehouse_without_its_password(
        orders_ws: Workspace) -> None:
    closed = free_port()
    url = f"postgresql://analyst:{PASSWORD}@127.0.0.1:{closed}/db"
    proc = orders_ws.cli("check", env={"JANKYCRON_WAREHOUSE_URL": url})
    assert PASSWORD not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("FAIL  warehouse")]
    assert f"postgresql://analyst:***@127.0.0.1:{closed}/db" in line


# ------------------------------------------------------------------------------ store down


def store_down_env() -> dict[str, str]:
    return {
        "JANKYCRON_STORE_URL": "s3://jankycron-staging/prod",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ENDPOINT_URL_S3": "",
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def test_unreachable_store_fails_clearly_without_the_aws_secret(orders_ws: Workspace) -> None:
    """The object store cannot be reached: the run fails naming the store, no traceback,
    the AWS secret key is not printed, nothing reaches the warehouse, the run is `failed`."""
    proc = orders_ws.cli("run", "orders", "--date", DAY, "--local", env=store_down_env())
    line = assert_clean_failure(proc, "object store", "s3://jankycron-staging/prod",
                                "unreachable", secrets=(AWS_SECRET,))
    assert "job orders failed" not in line  # not blamed on the job
    assert warehouse_rows(orders_ws, "SELECT count(*) FROM orders") == [(0,)]
    (run,) = orders_ws.cli_json("history")
    assert run["status"] == "failed" and "object store" in run["error"]


def test_unreachable_store_prints_exactly_one_line(orders_ws: Workspace) -> None:
    proc = orders_ws.cli("run", "orders", "--date", DAY, "--local", env=store_down_env())
    assert_one_error_line(proc, "object store", secrets=(AWS_SECRET,))


def test_missing_bucket_is_a_store_error_not_a_job_failure(orders_ws: Workspace,
                                                           s3: S3) -> None:
    """A store bucket that does not exist is reported as a store problem, not as a bug in
    the job, and without a traceback."""
    env = {**s3.env, "JANKYCRON_STORE_URL": "s3://no-such-bucket-for-jankycron/prod"}
    proc = orders_ws.cli("run", "orders", "--date", DAY, "--local", env=env)
    # The one-line rule itself is test_unreachable_store_prints_exactly_one_line's concern.
    line = assert_clean_failure(proc, "object store", "no-such-bucket-for-jankycron")
    assert "job orders failed" not in line
    (run,) = orders_ws.cli_json("history")
    assert run["status"] == "failed" and "object store" in run["error"]


# ------------------------------------------------------------------------------ job failures


def test_job_that_raises_fails_naming_the_line(orders_ws: Workspace) -> None:
    """A bug in the job: non-zero exit, the error line names the exception and the job file
    line, history shows the run `failed` with that error, and nothing is loaded."""
    orders_ws.write_job("boom", BOOM)
    proc = orders_ws.cli("run", "boom", "--date", DAY, "--local")
    assert proc.returncode != 0
    last = error_lines(proc)[-1]
    assert last == (f"error: job boom failed: ValueError: upstream sent garbage "
                    f"(boom.py line {BOOM_LINE})")
    (run,) = orders_ws.cli_json("history")
    assert run["job"] == "boom" and run["status"] == "failed"
    assert run["error"] == f"ValueError: upstream sent garbage (boom.py line {BOOM_LINE})"
    assert warehouse_rows(orders_ws, "SELECT count(*) FROM orders") == [(0,)]


def test_job_that_raises_prints_one_line_and_no_traceback(orders_ws: Workspace) -> None:
    orders_ws.write_job("boom", BOOM)
    proc = orders_ws.cli("run", "boom", "--date", DAY, "--local")
    assert_one_error_line(proc, "ValueError: upstream sent garbage", f"line {BOOM_LINE}")


def test_job_that_skips_exits_0_and_is_skipped(orders_ws: Workspace) -> None:
    """`raise SkipRun(...)` is not a failure: exit 0, history says `skipped` with the reason."""
    orders_ws.write_job("quiet", SKIP)
    proc = orders_ws.cli("run", "quiet", "--date", DAY, "--local")
    assert proc.returncode == 0, proc.stderr
    assert "error:" not in proc.stderr and "Traceback" not in proc.stderr
    assert "skipped" in proc.stdout
    (run,) = orders_ws.cli_json("history")
    assert run["job"] == "quiet" and run["status"] == "skipped"
    assert run["error"] == "the provider published nothing for this day"
    assert warehouse_rows(orders_ws, "SELECT count(*) FROM orders") == [(0,)]


# ------------------------------------------------------------------------------ no --local


def test_run_without_local_and_no_broker_says_so_in_one_line(orders_ws: Workspace) -> None:
    """`run` without --local enqueues to the workers; with the broker down it says so in one
    line, without the broker's password, and runs nothing."""
    proc = orders_ws.cli("run", "orders", "--date", DAY, env={
        "JANKYCRON_BROKER_URL": f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
        "JANKYCRON_LOCK_URL": "none"})
    assert_one_error_line(proc, "broker", "unreachable", secrets=(PASSWORD,))
    assert orders_ws.cli_json("history") == []
    assert warehouse_rows(orders_ws, "SELECT count(*) FROM orders") == [(0,)]


def test_warehouse_down_inside_the_maintenance_window_says_it_is_expected(
        duck_ws: Workspace) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    end = start + timedelta(minutes=30)
    window = f"{start.strftime('%a')} {start:%H:%M}-{end:%H:%M}"
    closed = free_port()
    duck_ws.write_job("orders", JOB)
    proc = duck_ws.cli("run", "orders", "--date", DAY, "--local", env={
        "JANKYCRON_WAREHOUSE_URL": f"postgresql://analyst:{PASSWORD}@127.0.0.1:{closed}/db",
        "JANKYCRON_MAINTENANCE_WINDOW": window})
    assert_one_error_line(proc, "inside the maintenance window", "stay pending",
                          secrets=(PASSWORD,))
    (run,) = duck_ws.cli_json("history")
    assert run["status"] == "staged" and "maintenance window" in run["error"]


def test_the_periodic_loader_backs_off_from_a_failing_table(duck_ws: Workspace) -> None:
    """`load --due` after a failed load waits (30 s, doubling, at most 15 min) instead of
    hammering a warehouse that is down; an operator's plain `load` tries at once."""
    down = {"JANKYCRON_WAREHOUSE_URL": f"postgresql://analyst:{PASSWORD}@127.0.0.1:"
                                       f"{free_port()}/db"}
    duck_ws.write_job("orders", JOB)
    create_table(duck_ws, TABLE)
    assert duck_ws.cli("run", "orders", "--date", DAY, "--local", env=down).returncode == 1

    again = duck_ws.cli("load", "--due", "--local", env=down)
    assert again.returncode == 0 and "nothing due" in again.stdout
    assert "orders: backing off after 1 failed load(s) until" in again.stderr
    assert PASSWORD not in again.stderr

    duck_ws.cli("load", "--local", check=True)  # the warehouse is back; no --due: at once
    assert warehouse_rows(duck_ws, "SELECT COUNT(*) FROM orders") == [(3,)]
    assert duck_ws.cli("load", "--due", "--local", check=True).stdout.strip() == \
        "nothing pending"
