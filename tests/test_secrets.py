"""Secrets stay where they belong: a password in a URL's query string or with an unencoded
``@``, a token a job reads from its environment, never show up in ``check``, error lines, ``-v``
logs and tracebacks, the ledger (``history --json``), the status pages or a Celery worker's log.
Customer values a warehouse quotes in a dead-letter reason are masked on the status pages (the
CLI, which shows the records anyway, keeps them). And any text a job raises (a NUL, a lone
surrogate, a megabyte) is stored safely on both ledgers: the run ends ``failed`` with it."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from celery_helpers import Cluster, cluster_fixture, hooks_fixture, wait_until  # noqa: F401
from conftest import Workspace, create_table, free_port, pg_query

from jankycron.config import Settings, redact
from jankycron.scrub import mask_values, safe_text, secret_name
from jankycron.web import create_app

DAY = "2026-11-24"
QUERY_PASSWORD = "QueryPassw0rd"
AT_PASSWORD = "At@Passw0rd"  # libpq reads user "postgres", password "At", host "Passw0rd@..."
GITHUB_TOKEN = "ghp_LeakyToken1234567890"
MAILGUN_KEY = "key-LeakyMailgunKey99"
ACME_PASSWORD = "AcmeDbPassw0rd"  # inside a URL-valued variable whose name says nothing
CARD = "4111111111111111"

LEAKY = '''
import os
from jankycron import job

@job(schedule="0 3 * * *", table="orders", key="id")
def leaky(run):
    token = os.environ["GITHUB_TOKEN"]
    run.log.info("calling the API with token %s and key %s", token, os.environ["MAILGUN_API_KEY"])
    print(f"debug: token {token} db {os.environ['ACME_DB_URL']}")
    yield {"id": 1, "amount": 10}
    raise RuntimeError(f"401 for token={token} from " + os.environ["ACME_DB_URL"])
'''
LEAKY_ENV = {"GITHUB_TOKEN": GITHUB_TOKEN, "MAILGUN_API_KEY": MAILGUN_KEY,
             "ACME_DB_URL": f"postgresql://acme:{ACME_PASSWORD}@db.acme.internal/acme"}
LEAKED = (GITHUB_TOKEN, MAILGUN_KEY, ACME_PASSWORD)


def assert_no_secret(text: str, secrets: tuple[str, ...]) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked in:\n{text[:3000]}"


def page(ws: Workspace, url: str) -> str:
    """A status page of the workspace's ledger (Flask's test client)."""
    client = create_app(Settings.from_env({**ws.env, "JANKYCRON_LOCK_URL": "off"})).test_client()
    r = client.get(url)
    assert r.status_code == 200, r.get_data(as_text=True)[:2000]
    return r.get_data(as_text=True)


def stored_errors(ws: Workspace) -> list[str]:
    """The ledger's own text, read directly (not through jankycron, which scrubs on output)."""
    url = ws.env["JANKYCRON_STATE_URL"]
    sql = ("SELECT coalesce(error, '') FROM jc_runs UNION ALL "
           "SELECT coalesce(last_error, '') FROM jc_table_state")
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            return [r[0] for r in conn.execute(sql)]
        finally:
            conn.close()
    return [r[0] for r in pg_query(url, sql)]


# ------------------------------------------------------------------------------ URLs
@pytest.mark.parametrize(("url", "shown"), [
    (f"postgresql://u@db/x?password={QUERY_PASSWORD}", "postgresql://u@db/x?password=***"),
    (f"postgresql://u@db/x?sslmode=require&password={QUERY_PASSWORD}&application_name=jc",
     "postgresql://u@db/x?sslmode=require&password=***&application_name=jc"),
    (f"postgresql://u@db/x?sslpassword={QUERY_PASSWORD}", "postgresql://u@db/x?sslpassword=***"),
    (f"postgresql://u:{AT_PASSWORD}@db:5432/x", "postgresql://u:***@db:5432/x"),
    ("postgresql://u:p%40ss%2Fw0rd@db/x", "postgresql://u:***@db/x"),
    (f"https://api.example/v1?token={GITHUB_TOKEN}&page=2", "https://api.example/v1?token=***&page=2"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA1&X-Amz-Signature=abcdef0123",
     "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***"),
    ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
    ("duckdb:///./var/warehouse.duckdb", "duckdb:///./var/warehouse.duckdb"),
])
def test_a_url_is_shown_without_any_of_its_credentials(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_settings_know_the_secrets_of_urls_and_of_secret_named_variables() -> None:
    """The rule: a variable whose name ends in TOKEN, SECRET, PASSWORD, API_KEY, DSN, ...
    holds a secret, and so do the credentials of any URL-valued variable."""
    assert all(map(secret_name, ["GITHUB_TOKEN", "MAILGUN_API_KEY", "AWS_SECRET_ACCESS_KEY",
                                 "AWS_SESSION_TOKEN", "SENTRY_DSN", "PGPASSWORD",
                                 "JANKYCRON_SEGMENT_SECRET", "JANKYCRON_SLACK_WEBHOOK_URL"]))
    assert not any(map(secret_name, ["AWS_ACCESS_KEY_ID", "PWD", "GITHUB_ORGS", "HOME"]))
    s = Settings.from_env({
        **LEAKY_ENV, "PAYMENTS_DB_URL": "host=db user=svc password=KeywordPassw0rd",
        "JANKYCRON_WAREHOUSE_URL": f"postgresql://u@db/x?password={QUERY_PASSWORD}",
        "JANKYCRON_STATE_URL": f"postgresql://u:{AT_PASSWORD}@db/state",
    })
    text = s.scrubber()(
        f"{GITHUB_TOKEN} {MAILGUN_KEY} {ACME_PASSWORD} {QUERY_PASSWORD} {AT_PASSWORD} "
        "KeywordPassw0rd "
        'could not translate host name "Passw0rd@db" to address; encoded At%40Passw0rd')
    assert text == ('*** *** *** *** *** *** could not translate host name "***@db" to address; '
                    "encoded ***")
    assert_no_secret(repr(s), (QUERY_PASSWORD, AT_PASSWORD, GITHUB_TOKEN))


def test_check_run_history_and_status_page_never_show_a_query_or_at_sign_password(
        duck_ws: Workspace) -> None:
    """A warehouse URL with ``?password=`` or an unencoded ``@``: `check` and the error line
    of a run say what is wrong without the password; the ledger, `history --json` and the
    job's status page hold the error without it too."""
    closed = free_port()
    duck_ws.write_job("orders", '''
        from jankycron import job

        @job(schedule="0 3 * * *", table="orders", key="id")
        def orders(run):
            yield {"id": 1}
    ''')
    for url, secrets in (
            (f"postgresql://postgres@127.0.0.1:{closed}/test?password={QUERY_PASSWORD}",
             (QUERY_PASSWORD,)),
            (f"postgresql://postgres:{AT_PASSWORD}@127.0.0.1:{closed}/test",
             (AT_PASSWORD, "Passw0rd"))):
        duck_ws.env["JANKYCRON_WAREHOUSE_URL"] = url
        check = duck_ws.cli("check")
        assert check.returncode == 1
        assert "FAIL  warehouse postgresql://postgres" in check.stdout
        assert_no_secret(check.stdout + check.stderr, secrets)

        run = duck_ws.cli("run", "orders", "--date", DAY, "--local")
        assert run.returncode == 1 and run.stderr.splitlines()[-1].startswith("error: ")
        assert "warehouse" in run.stderr and "Traceback" not in run.stderr
        assert_no_secret(run.stdout + run.stderr, secrets)

        assert_no_secret("\n".join(stored_errors(duck_ws)), secrets)
        history = duck_ws.cli("history", "--json", check=True).stdout
        assert "warehouse postgresql://postgres" in json.loads(history)[0]["error"]
        assert_no_secret(history, secrets)
        assert_no_secret(page(duck_ws, "/jobs/orders"), secrets)


def test_a_job_s_secrets_never_reach_the_verbose_log_the_traceback_or_the_ledger(
        duck_ws: Workspace) -> None:
    """A job logs and raises with the token it read from its environment: `-v` shows the
    log lines and the traceback with `***` in its place, and so do the error line,
    `history --json` and the status page."""
    create_table(duck_ws, "CREATE TABLE orders (id bigint NOT NULL, amount integer)")
    duck_ws.write_job("leaky", LEAKY)
    proc = duck_ws.cli("-v", "run", "leaky", "--date", DAY, "--local", env=LEAKY_ENV)
    assert proc.returncode == 1
    # The job's own print() goes to the operator's terminal as written (under Celery it is
    # redirected to the log, and scrubbed: see the worker test).
    out = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                    if not line.startswith("debug: "))
    assert "calling the API with token *** and key ***" in out  # the log line is there
    assert "Traceback (most recent call last)" in out and "RuntimeError: 401 for token=***" in out
    assert "postgresql://acme:***@db.acme.internal/acme" in out
    assert_no_secret(out, LEAKED)

    assert_no_secret("\n".join(stored_errors(duck_ws)), LEAKED)
    (run,) = duck_ws.cli_json("history")
    assert run["status"] == "failed" and run["error"].startswith("RuntimeError: 401 for token=***")
    assert_no_secret(page(duck_ws, "/jobs/leaky"), LEAKED)


# ------------------------------------------------------------------------------ Celery
def test_a_worker_s_log_and_alerts_hold_no_secret_of_a_failing_job(cluster: Cluster) -> None:
    """Through a real worker: the job's log line, its print() (redirected to the log) and the
    traceback of its failure are in the worker's log, scrubbed; the alert and the run's
    error in the ledger hold no secret either."""
    cluster.rows("CREATE TABLE orders (id bigint NOT NULL, amount integer)")
    cluster.ws.env.update(LEAKY_ENV)
    cluster.ws.write_job("leaky", LEAKY.replace(
        '@job(schedule="0 3 * * *", table="orders", key="id")',
        f'@job(schedule="0 3 * * *", table="orders", key="id", alert="{cluster.hooks.url}")'))
    worker = cluster.worker()
    proc = cluster.ws.cli("run", "leaky", "--date", DAY)
    assert proc.returncode == 1, proc.stderr
    assert "RuntimeError: 401 for token=***" in proc.stderr.splitlines()[-1]
    assert_no_secret(proc.stdout + proc.stderr, LEAKED)

    wait_until(lambda: cluster.hooks.events("run_failed", "leaky"), "the failure alert")
    wait_until(lambda: "Traceback" in worker.text(), "the traceback in the worker's log")
    log = worker.text()
    assert "calling the API with token *** and key ***" in log
    assert "debug: token *** db postgresql://acme:***@db.acme.internal/acme" in log
    assert "RuntimeError: 401 for token=***" in log
    assert_no_secret(log, LEAKED)
    assert_no_secret(json.dumps(cluster.hooks.bodies), LEAKED)
    assert_no_secret("\n".join(stored_errors(cluster.ws)), LEAKED)
    assert_no_secret(cluster.ws.cli("history", "--json", check=True).stdout, LEAKED)


# ------------------------------------------------------------------------------ pages
def test_the_loader_page_masks_the_values_a_warehouse_quotes_the_cli_shows_them(
        ws: Workspace) -> None:
    """A card number in an integer column is a dead letter whose reason quotes it: `/loader`
    counts the reason with the value masked, so two cards refused for the same reason are one
    row counted twice; `deadletters` (which shows the record anyway) keeps the warehouse's
    full reason."""
    other = "5500000000000004"
    create_table(ws, "CREATE TABLE cards (id bigint NOT NULL, card integer)")
    ws.write_job("cards", f'''
        from jankycron import job

        @job(schedule="0 3 * * *", table="cards", key="id")
        def cards(run):
            yield {{"id": 1, "card": "{CARD}"}}
            yield {{"id": 2, "card": 42}}
            yield {{"id": 3, "card": "{other}"}}
    ''')
    proc = ws.cli("run", "cards", "--date", DAY, "--local", check=True)
    assert "1 loaded, 2 dead-lettered" in proc.stdout
    letters = ws.cli_json("deadletters")
    assert sorted(CARD in d["reason"] or other in d["reason"] for d in letters) == [True, True]
    assert all(CARD in d["record"] or other in d["record"] for d in letters)

    html = page(ws, "/loader")
    assert "Dead letters by reason" in html and "column card" in html
    assert CARD not in html and other not in html
    assert "…" in html
    (row,) = re.findall(r'<tr class="reason">.*?</tr>', html, re.S)
    assert '<td class="num">2</td>' in row


@pytest.mark.parametrize(("message", "shown"), [
    ('invalid input syntax for type integer: "4111111111111111"',
     'invalid input syntax for type integer: "…"'),
    ('value "4111111111111111" is out of range for type integer',
     'value "…" is out of range for type integer'),
    ('duplicate key value violates unique constraint "cards_pkey"\n'
     "DETAIL:  Key (id)=(42) already exists.",
     'duplicate key value violates unique constraint "cards_pkey"\nDETAIL: …'),
    ("conflicting key Key (id, email)=(42, ann@bank.example) already exists",
     "conflicting key Key (id, email)=(…) already exists"),
    ('null value in column "card" of relation "cards" violates not-null constraint',
     'null value in column "card" of relation "cards" violates not-null constraint'),
    ("Conversion Error: Could not convert string '4111111111111111' to INT32",
     "Conversion Error: Could not convert string '…' to INT32"),
    ("column amount: is not a decimal with at most 2 places: 178.675",
     "column amount: is not a decimal with at most 2 places: …"),
    ("column card: Invalid digit, Value 'x', Pos 0, Type: Integer (Redshift load error 1207)",
     "column card: Invalid digit, Value '…', Pos 0, Type: Integer (Redshift load error 1207)"),
])
def test_values_quoted_in_warehouse_messages_are_masked_identifiers_stay(message: str,
                                                                         shown: str) -> None:
    assert mask_values(message) == shown


# ------------------------------------------------------------------------------ stored text
@pytest.mark.parametrize(("raised", "stored"), [
    (r'"bad\x00thing"', r"bad\x00thing"),
    (r'"bad\udc80thing"', r"bad\udc80thing"),
])
def test_a_nul_or_a_lone_surrogate_in_a_job_s_error_is_stored_and_shown_escaped(
        ws: Workspace, raised: str, stored: str) -> None:
    """Before, a PostgreSQL ledger refused the NUL (and both refused the surrogate): the run
    stayed `running` and the CLI showed the driver's error instead of the job's."""
    ws.write_job("boom", f'''
        from jankycron import job

        @job(schedule="0 3 * * *", table="orders", key="id")
        def boom(run):
            raise ValueError({raised})
            yield {{"id": 1}}
    ''')
    proc = ws.cli("run", "boom", "--date", DAY, "--local")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        f"error: job boom failed: ValueError: {stored} (boom.py line 6)")
    (run,) = ws.cli_json("history")
    assert run["status"] == "failed"
    assert run["error"] == f"ValueError: {stored} (boom.py line 6)"
    assert stored in page(ws, "/jobs/boom")


def test_a_huge_error_is_stored_bounded_with_a_visible_marker(ws: Workspace) -> None:
    ws.write_job("boom", '''
        from jankycron import job

        @job(schedule="0 3 * * *", table="orders", key="id")
        def boom(run):
            raise ValueError("x" * 3_000_000)
            yield {"id": 1}
    ''')
    proc = ws.cli("run", "boom", "--date", DAY, "--local")
    assert proc.returncode == 1
    line = proc.stderr.splitlines()[-1]
    assert line.startswith("error: job boom failed: ValueError: xxx") and len(line) < 2100
    assert line.endswith("more characters]")
    (run,) = ws.cli_json("history")
    assert run["status"] == "failed" and len(run["error"]) <= 20_000
    assert run["error"].startswith("ValueError: xxxx")
    assert run["error"].endswith("more characters]")


def test_safe_text_escapes_and_bounds_visibly() -> None:
    assert safe_text("a\x00b\ud800c") == "a\\x00b\\ud800c"
    cut = safe_text("y" * 100, limit=60)
    assert len(cut) <= 60 and cut == "y" * 20 + "… [80 more characters]"
