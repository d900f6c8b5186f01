"""The status page an operator opens: which job failed on which day, what to type to rerun it,
what the loader is waiting on. Through Flask's test client over a real ledger, with the clock
pinned so every cell's status is known."""

from __future__ import annotations

import base64
import html
import os
import re
import textwrap
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
import redis

from jankycron.config import Settings
from jankycron.discovery import discover
from jankycron.errors import ConfigError
from jankycron.ledger import BatchStatus, DeadLetter, Ledger, RunStatus
from jankycron.load.lock import TableLock
from jankycron.schedule import Interval, fmt, parse_day
from jankycron.web import create_app

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
REDIS_URL = os.environ.get("JANKYCRON_TEST_REDIS", "redis://127.0.0.1:6379/15")
HOOK = "https://hooks.example.com/services/T000/B000/SECRETTOKEN123?sig=QUERYSECRET"
SCRIPT = "<script>alert(1)</script>"


def day(n: int) -> date:
    """``day(-4)``: four days before the pinned today."""
    return TODAY + timedelta(days=n)


def daily(n: int) -> Interval:
    """The 04:00 UTC daily interval that starts ``n`` days from today."""
    d = day(n)
    start = datetime(d.year, d.month, d.day, 4, tzinfo=UTC)
    return Interval(start, start + timedelta(days=1))


JOBS = {
    "orders": f'''
        @job(schedule="0 4 * * *", table="orders", key="id", timeout="30m", owner="data-eng",
             alert=["slack:#data-eng", "{HOOK}", "mailto:ops@bank.example"])
        def orders(run):
            yield from ()
    ''',
    "invoices": '''
        @job(schedule="0 4 * * *", table={"invoices": "id", "invoice_lines": ("id", "line")},
             owner="finance")
        def invoices(run):
            yield from ()
    ''',
    "never_run": '''
        @job(schedule="0 4 * * *", table="never_run_items", key="id", owner="finance")
        def never_run(run):
            yield from ()
    ''',
    # fired at 11:50, ten minutes before NOW: its last interval ended but is within its grace
    "just_ended": '''
        @job(schedule="50 11 * * *", table="ticks", key="id", timeout="1h")
        def just_ended(run):
            yield from ()
    ''',
    "every_six_hours": '''
        @job(schedule="0 */6 * * *", table="sixes", key="id", owner="data-eng")
        def every_six_hours(run):
            yield from ()
    ''',
}


def write_jobs(folder: Path, names: list[str]) -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        body = "from jankycron import job\n" + textwrap.dedent(JOBS[name])
        (folder / f"{name}.py").write_text(body)


def loaded_run(ledger: Ledger, job: str, table: str, interval: Interval, loaded: int,
               rejected: int = 0) -> str:
    """A run as the runner records it: staged, then its batch merged by the loader."""
    run_id = ledger.start_run(job, interval)
    batch = ledger.add_batch(run_id, job, interval, table, f"staging/{table}/{run_id}",
                             loaded + rejected, {"id": loaded + rejected})
    ledger.finish_run(run_id, RunStatus.STAGED, rows_extracted=loaded + rejected,
                      rows_staged=loaded + rejected)
    if rejected:
        ledger.add_deadletters(
            DeadLetter(batch, "load", i, table, job, run_id,
                       "value too long for type character varying(8) <img src=x onerror=alert(2)>",
                       '{"id": 7, "card": "4111-RECORD-CONTENTS"}', f"dead/{run_id}")
            for i in range(rejected))
    ledger.batches_done({batch: (BatchStatus.LOADED, loaded, rejected, {})})
    return run_id


def failed_run(ledger: Ledger, job: str, interval: Interval, error: str) -> str:
    run_id = ledger.start_run(job, interval)
    ledger.finish_run(run_id, RunStatus.FAILED, error=error)
    ledger._exec("UPDATE jc_runs SET started_at = ?, finished_at = ? WHERE id = ?",
                 ("2026-11-23T04:00:05Z", "2026-11-23T04:01:35Z", run_id))  # ran 90 s
    return run_id


def fill(ledger: Ledger) -> None:
    """orders, by day: -6 success, -5 success with 3 dead letters, -4 failed, -3 running,
    -2 no run (missed), -1 success, 0 not yet due. invoices: -1 staged, batch pending."""
    loaded_run(ledger, "orders", "orders", daily(-6), 100)
    loaded_run(ledger, "orders", "orders", daily(-5), 90, rejected=3)
    failed_run(ledger, "orders", daily(-4),
               f"ValueError: bad payload {SCRIPT}\nTraceback (most recent call last):\n"
               "  File \"jobs/orders.py\", line 9, in orders\nValueError: second line")
    ledger.start_run("orders", daily(-3), heartbeat=True)
    loaded_run(ledger, "orders", "orders", daily(-1), 120)
    staged = ledger.start_run("invoices", daily(-1))
    ledger.add_batch(staged, "invoices", daily(-1), "invoices", "staging/invoices/x", 7,
                     {"id": 7})
    ledger.finish_run(staged, RunStatus.STAGED, rows_extracted=7, rows_staged=7)


class Page(HTMLParser):
    """The bits of a status page a test looks at: grid cells by (job, day), and text."""

    def __init__(self, text: str):
        super().__init__()
        self.cells: dict[tuple[str, str], dict[str, str]] = {}
        self.owners: list[str] = []
        self.job_order: list[str] = []
        self.commands: list[str] = []
        self._job: str | None = None
        self._in_cmd = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tbody" and "data-owner" in a:
            self.owners.append(a["data-owner"])
        if tag == "tr" and "data-job" in a:
            self._job = a["data-job"]
            self.job_order.append(self._job)
        if tag == "td" and "cell" in a.get("class", "").split() and self._job:
            self.cells[(self._job, a["data-day"])] = a
        if tag == "code" and "cmd" in a.get("class", "").split():
            self._in_cmd = True
            self.commands.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "code":
            self._in_cmd = False

    def handle_data(self, data: str) -> None:
        if self._in_cmd:
            self.commands[-1] += data

    def status(self, job: str, n: int) -> str:
        return self.cells[(job, day(n).isoformat())]["data-status"]

    def title(self, job: str, n: int) -> str:
        return self.cells[(job, day(n).isoformat())]["title"]


def make_client(tmp_path: Path, jobs: list[str], env: dict[str, str] | None = None,
                state_url: str | None = None):
    write_jobs(tmp_path / "jobs", jobs)
    settings = Settings.from_env({
        "JANKYCRON_STATE_URL": state_url or f"sqlite:///{tmp_path / 'state.db'}",
        "JANKYCRON_JOBS_PATH": str(tmp_path / "jobs"), "JANKYCRON_LOCK_URL": "off",
        **(env or {})})
    app = create_app(settings)
    app.extensions["jankycron.status"].now = lambda: NOW
    return app.test_client()


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    yield ledger
    ledger.close()


@pytest.fixture
def client(tmp_path: Path, ledger: Ledger):
    fill(ledger)
    return make_client(tmp_path, list(JOBS))


def get(client, url: str, code: int = 200) -> str:
    r = client.get(url)
    assert r.status_code == code, r.get_data(as_text=True)[:2000]
    return r.get_data(as_text=True)


# ------------------------------------------------------------------------------- the grid
def test_an_empty_ledger_without_jobs_says_so_on_every_page(tmp_path: Path) -> None:
    client = make_client(tmp_path, [])
    assert "No jobs yet" in get(client, "/")
    assert "No tables yet" in get(client, "/loader")
    assert "Unknown job" in get(client, "/jobs/orders", 404)


def test_each_day_is_coloured_by_what_happened_to_its_interval(client) -> None:
    page = Page(get(client, "/"))
    expected = {-6: "success", -5: "deadletters", -4: "failed", -3: "running", -2: "missed",
                -1: "success", 0: "notdue"}
    assert {n: page.status("orders", n) for n in expected} == expected
    assert [f"st-{s}" in page.cells[("orders", day(n).isoformat())]["class"]
            for n, s in expected.items()] == [True] * len(expected)
    # the days before the job's first run were not expected of it (beat had not seen it)
    assert page.status("orders", -13) == "none"
    # rows loaded / rejected are on hover
    assert page.title("orders", -5) == f"{day(-5)}: success with dead letters; 90 rows " \
                                       "loaded, 3 rejected"
    assert page.title("orders", -2) == f"{day(-2)}: missed (no run)"
    assert "staged, load pending" in page.title("invoices", -1)
    assert page.status("invoices", -1) == "running"


def test_an_interval_that_just_ended_is_not_yet_due_within_its_grace(client) -> None:
    page = Page(get(client, "/"))
    # 11:50 yesterday .. 11:50 today ended ten minutes ago; a 1 h timeout means not missed yet
    assert page.status("just_ended", -1) == "notdue"
    assert "within the grace of" in page.title("just_ended", -1)
    # and with the clock two hours later it is missed
    client.application.extensions["jankycron.status"].now = lambda: NOW + timedelta(hours=2)
    assert Page(get(client, "/")).status("just_ended", -1) == "missed"


def test_a_job_that_has_never_run(client) -> None:
    page = Page(get(client, "/"))
    # beat never saw it and it never ran: every past interval is missed, today's is not due
    assert {page.status("never_run", n) for n in range(-13, 0)} == {"missed"}
    assert page.status("never_run", 0) == "notdue"
    text = get(client, "/jobs/never_run")
    assert "This job has never run." in text
    assert "<code>never_run_items</code>" in text


def test_days_before_beat_first_saw_a_job_are_not_missed(client, ledger: Ledger) -> None:
    first_seen = datetime.combine(day(-3), datetime.min.time(), UTC)
    ledger._exec("INSERT INTO jc_schedule (job, since) VALUES (?, ?)",
                 ("never_run", first_seen.strftime("%Y-%m-%dT%H:%M:%SZ")))
    page = Page(get(client, "/"))
    assert page.status("never_run", -5) == "none"  # ended before beat first saw it
    assert page.status("never_run", -3) == "missed"  # ends after: beat should have run it


def test_a_day_with_several_intervals_shows_the_worst_and_counts_them(client,
                                                                      ledger: Ledger) -> None:
    six = Interval(datetime.combine(day(-2), datetime.min.time(), UTC) + timedelta(hours=6),
                   datetime.combine(day(-2), datetime.min.time(), UTC) + timedelta(hours=12))
    loaded_run(ledger, "every_six_hours", "sixes", six.__class__(six.start - timedelta(hours=6),
                                                                  six.start), 5)
    failed_run(ledger, "every_six_hours", six, "boom")
    page = Page(get(client, "/"))
    assert page.status("every_six_hours", -2) == "failed"
    title = page.title("every_six_hours", -2)
    assert "1 success" in title and "1 failed" in title and "2 no run" in title


def test_jobs_are_grouped_by_owner(client) -> None:
    page = Page(get(client, "/"))
    assert page.owners == ["data-eng", "finance", "no owner"]
    assert page.job_order == ["every_six_hours", "orders", "invoices", "never_run",
                              "just_ended"]


@pytest.mark.parametrize("q, shown", [
    ("invoice", ["invoices"]),  # job name
    ("FINANCE", ["invoices", "never_run"]),  # owner, any case
    ("invoice_lines", ["invoices"]),  # a table of the job
])
def test_the_filter_box_works_without_javascript(client, q: str, shown: list[str]) -> None:
    text = get(client, f"/?q={q}")
    assert Page(text).job_order == shown
    assert f'name="q" type="search" value="{q}"' in text
    assert f"{len(shown)} of 5 jobs match" in text


def test_a_filter_that_matches_nothing_is_echoed_escaped(client) -> None:
    text = get(client, "/?q=%3Cb%3Enope")
    assert "No job matches “&lt;b&gt;nope”" in text and "<b>nope" not in text


def test_the_sparkline_shows_rows_loaded_per_day(client) -> None:
    text = get(client, "/?q=orders")
    svg = re.search(r'<svg class="spark".*?</svg>', text, re.S).group(0)
    assert "310 in the period" in svg and "peak 120" in svg
    points = [float(p.split(",")[1]) for p in
              re.search(r'points="([^"]+)"', svg).group(1).split()]
    assert len(points) == 14
    # y grows downwards: the 120-row day is the top, the failed and missed days sit at the floor
    by_day = dict(zip(range(-13, 1), points, strict=True))
    assert by_day[-1] < by_day[-6] < by_day[-5] < by_day[-4] == by_day[-2] == by_day[-13]


# ------------------------------------------------------------------------------- job page
def test_the_job_page_shows_schedule_tables_routes_and_runs(client) -> None:
    text = get(client, "/jobs/orders")
    assert "<code>0 4 * * *</code>" in text
    assert '<time datetime="2026-11-27T04:00:00Z"' in text  # next run
    assert "<code>orders</code>" in text and "merge key id" in text
    assert '<span class="kind">slack</span> #data-eng' in text
    assert '<span class="kind">webhook</span> https://hooks.example.com<' in text
    assert '<span class="kind">email</span> ops@bank.example' in text
    for secret in ("SECRETTOKEN123", "QUERYSECRET", "/services/"):
        assert secret not in text
    # last runs: newest first, with durations and the error's first line, the rest folded
    assert text.count('<tr class="run"') == 5
    assert "1m 30s" in text
    first = re.search(r'<span class="err">(.*?)</span>', text).group(1)
    assert first == "ValueError: bad payload &lt;script&gt;alert(1)&lt;/script&gt;"
    assert re.search(r"<details><summary>full error</summary><pre>[^<]*second line</pre>",
                     text)
    assert "so far" in text  # the running run's duration


def test_a_job_error_with_html_renders_as_text(client) -> None:
    text = get(client, f"/jobs/orders?date={day(-4)}")
    assert SCRIPT not in text
    assert html.escape(SCRIPT, quote=False) in text
    assert "<script" not in text.replace('<script src="/status/static/status.js" defer>', "")


def test_customer_values_in_run_and_load_errors_are_masked_on_every_page(client,
                                                                       ledger: Ledger) -> None:
    """A merge that failed on a duplicate key or a CHECK: PostgreSQL's message names the
    constraint and quotes the row; the job page and /loader keep the names, mask the values."""
    failed_run(ledger, "orders", daily(-6),
               'load of orders pending: duplicate key value violates unique constraint '
               '"orders_pkey"\nDETAIL:  Key (card)=(4111111111111111) already exists.')
    ledger.table_failed("orders", 'new row for relation "orders" violates check constraint '
                        '"amount_positive" Failing row contains (4111111111111111, -5).')
    job = get(client, f"/jobs/orders?date={day(-6)}")
    assert 'unique constraint &#34;orders_pkey&#34;' in job and "DETAIL: …" in job
    loader = get(client, "/loader")
    assert "check constraint &#34;amount_positive&#34;" in loader
    assert "Failing row contains (…)" in loader
    for text in (job, loader):
        assert "4111111111111111" not in text


def test_the_web_process_log_is_scrubbed_of_secrets(tmp_path: Path, ledger: Ledger) -> None:
    """create_app() puts the scrubber on the process's log handlers: a line that quotes the
    status password or a URL's password is written without them."""
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    try:
        make_client(tmp_path, [], env={"JANKYCRON_STATUS_USER": "ops",
                                       "JANKYCRON_STATUS_PASSWORD": "StatusPassw0rd"})
        logging.getLogger("jankycron.web").warning(
            "odd request with %s from postgresql://u:DbPassw0rd@db/x", "StatusPassw0rd")
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue() == "odd request with *** from postgresql://u:***@db/x\n"


def test_the_rerun_command_of_a_failed_day_is_exact(client, tmp_path: Path) -> None:
    text = get(client, f"/jobs/orders?date={day(-4)}")
    page = Page(text)
    assert page.commands[0] == f"jankycron run orders --date {day(-4)}"
    # what the CLI does with it: the very interval shown
    job = discover(tmp_path / "jobs")[0].get("orders")
    assert job.interval_on(parse_day(page.commands[0].split()[-1])) == daily(-4)
    assert 'data-copy="jankycron run orders --date ' in text and " hidden>Copy</button>" in text
    # without ?date= the page offers the newest failed or missed day
    assert Page(get(client, "/jobs/orders")).commands[0] == f"jankycron run orders --date " \
                                                             f"{day(-2)}"


def test_a_job_that_runs_several_times_a_day_is_rerun_by_time(client, tmp_path: Path) -> None:
    commands = Page(get(client, f"/jobs/every_six_hours?date={day(-2)}")).commands
    starts = [f"{day(-2)}T{h:02d}:00" for h in (0, 6, 12, 18)]
    assert commands[:4] == [f"jankycron run every_six_hours --date {s}" for s in starts]
    job = discover(tmp_path / "jobs")[0].get("every_six_hours")
    assert job.interval_on(parse_day(starts[1])).start.hour == 6


def test_an_unknown_job_is_a_404_page_with_a_suggestion(client) -> None:
    text = get(client, "/jobs/ordres", 404)
    assert "There is no job called <code>ordres</code>" in text
    assert '<a href="/jobs/orders">orders</a>' in text


def test_a_job_whose_file_is_gone_still_shows_its_history(client, ledger: Ledger) -> None:
    loaded_run(ledger, "retired", "old_table", daily(-3), 4)
    page = Page(get(client, "/"))
    assert page.status("retired", -3) == "success" and page.status("retired", -2) == "none"
    text = get(client, "/jobs/retired")
    assert "no job file" in text and "cannot be rerun" in text
    assert Page(text).commands == []


# ------------------------------------------------------------------------------- loader page
def test_the_loader_page_shows_queues_loads_and_dead_letter_reasons(client) -> None:
    text = get(client, "/loader")
    rows = dict(re.findall(r'<tr class="table" data-table="(\w+)">(.*?)</tr>', text, re.S))
    assert set(rows) >= {"orders", "invoices", "invoice_lines", "never_run_items"}
    assert '<td class="num">1 (7)</td>' in rows["invoices"]  # one batch of 7 rows waiting
    assert '<td class="num">0 (0)</td>' in rows["orders"]
    assert "<time datetime=" in rows["orders"].split("</td>")[2]  # last load time
    assert '<td class="num">3</td>' in rows["orders"]  # open dead letters
    assert "no lock store configured" in text
    # the reason, counted and escaped; never the record
    assert "value too long for type character varying(8) &lt;img src=x onerror=alert(2)&gt;" \
        in text
    assert "<img" not in text and "4111-RECORD-CONTENTS" not in text
    assert re.search(r'<tr class="reason"><td class="num">3</td>', text)


def test_a_failing_load_shows_its_failures_and_first_error_line(client,
                                                                ledger: Ledger) -> None:
    ledger.table_failed("invoices", "connection refused\nsecond line of the error")
    text = get(client, "/loader")
    row = re.search(r'data-table="invoices">(.*?)</tr>', text, re.S).group(1)
    assert "1 failed load(s)" in row and '<span class="err">connection refused</span>' in row


def test_the_loader_page_shows_the_lock_holder_without_its_token(tmp_path: Path,
                                                                 ledger: Ledger) -> None:
    fill(ledger)
    rds = redis.Redis.from_url(REDIS_URL)
    lock = TableLock(rds, "invoices", ttl=30)
    lock.acquire(wait=0)
    try:
        client = make_client(tmp_path, ["invoices"], {"JANKYCRON_LOCK_URL": REDIS_URL})
        text = get(client, "/loader")
    finally:
        lock.release()
        rds.close()
    host_pid = lock.token.rsplit(":", 1)[0]
    row = re.search(r'data-table="invoices">(.*?)</tr>', text, re.S).group(1)
    assert f"<code>{host_pid}</code>" in row
    assert lock.token not in text
    row = re.search(r'data-table="invoice_lines">(.*?)</tr>', text, re.S).group(1)
    assert "<td>free</td>" in row


def test_the_loader_page_still_answers_when_redis_is_down(tmp_path: Path,
                                                          ledger: Ledger) -> None:
    fill(ledger)
    client = make_client(tmp_path, ["invoices"],
                         {"JANKYCRON_LOCK_URL": "redis://:lockpass@127.0.0.1:1/0"})
    text = get(client, "/loader")
    assert "Lock holders unknown: lock store redis://:***@127.0.0.1:1/0 is unreachable" in text
    assert "lockpass" not in text
    assert '<td class="num">1 (7)</td>' in text  # the ledger's part is still there


# ------------------------------------------------------------------------------- access
def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_basic_auth_guards_the_status_pages_only(tmp_path: Path, ledger: Ledger) -> None:
    fill(ledger)
    client = make_client(tmp_path, ["orders"], {"JANKYCRON_STATUS_USER": "ops",
                                                "JANKYCRON_STATUS_PASSWORD": "s3cret-pw"})
    for url in ("/", "/jobs/orders", "/loader", "/jobs/nope", "/status/static/status.css"):
        r = client.get(url)
        assert r.status_code == 401, url
        assert r.headers["WWW-Authenticate"] == 'Basic realm="jankycron status"'
        assert client.get(url, headers=basic("ops", "wrong")).status_code == 401
        assert client.get(url, headers=basic("other", "s3cret-pw")).status_code == 401
    r = client.get("/jobs/orders", headers=basic("ops", "s3cret-pw"))
    assert r.status_code == 200 and "s3cret-pw" not in r.get_data(as_text=True)
    # health checks and scrapes stay open; the webhook keeps its own signature check
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    hook = client.post("/webhooks/segment", data=b"{}")
    assert "WWW-Authenticate" not in hook.headers


def test_the_status_password_is_a_secret(tmp_path: Path) -> None:
    s = Settings.from_env({"JANKYCRON_STATUS_USER": "ops",
                           "JANKYCRON_STATUS_PASSWORD": "s3cret-pw"})
    assert "s3cret-pw" not in repr(s) and "s3cret-pw" in s.secrets()
    with pytest.raises(ConfigError, match="JANKYCRON_STATUS_PASSWORD"):
        create_app(Settings.from_env({"JANKYCRON_STATUS_USER": "ops"}))


def test_a_trusted_proxy_header_guards_the_status_pages(tmp_path: Path, ledger: Ledger) -> None:
    client = make_client(tmp_path, ["orders"],
                         {"JANKYCRON_STATUS_AUTH_HEADER": "X-Forwarded-User"})
    r = client.get("/")
    assert r.status_code == 401 and "X-Forwarded-User" in r.get_data(as_text=True)
    assert client.get("/", headers={"X-Forwarded-User": "  "}).status_code == 401
    text = get_with(client, "/", {"X-Forwarded-User": "ana<b>"})
    assert '<span class="viewer">ana&lt;b&gt;</span>' in text
    assert client.get("/healthz").status_code == 200


def get_with(client, url: str, headers: dict[str, str]) -> str:
    r = client.get(url, headers=headers)
    assert r.status_code == 200
    return r.get_data(as_text=True)


def test_pages_forbid_inline_scripts_and_caching(client) -> None:
    r = client.get("/")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_the_grid_reads_a_postgresql_ledger_too(tmp_path: Path, pg_url: str) -> None:
    ledger = Ledger(pg_url)
    fill(ledger)
    client = make_client(tmp_path, ["orders", "invoices"], state_url=pg_url)
    page = Page(get(client, "/"))
    assert [page.status("orders", n) for n in (-6, -5, -4, -3, -2)] == \
        ["success", "deadletters", "failed", "running", "missed"]
    assert '<td class="num">1 (7)</td>' in get(client, "/loader")
    ledger.close()


# ---------------------------------------------------------------------- a frequent job
MINUTELY = '''
from jankycron import job

@job(schedule="* * * * *", table="ticks", key="id", timeout="5m")
def minutely(run):
    yield from ()
'''


def test_a_minutely_jobs_missed_slots_show_all_day(tmp_path: Path, ledger: Ledger) -> None:
    """A `* * * * *` job has 1,440 slots a day; the grid listed 288 of them, so a slot after
    04:48 UTC never showed as missed and a day before beat saw the job read "288 before the job
    was scheduled". Now each day is tallied: every slot counted, every missed one shown, and
    the job page lists that day's missed slots with their rerun commands."""
    ledger._exec("INSERT INTO jc_schedule (job, since) VALUES (?, ?)",
                 ("minutely", f"{day(-3).isoformat()}T00:00:00Z"))
    midnight = datetime.combine(day(-2), datetime.min.time(), UTC)
    gaps = {midnight + timedelta(hours=2), midnight + timedelta(hours=20, minutes=7)}
    for i in range(1440):
        start = midnight + timedelta(minutes=i)
        if start not in gaps:
            ledger.finish_run(ledger.start_run("minutely", Interval(
                start, start + timedelta(minutes=1))), RunStatus.SUCCESS)
    write_jobs(tmp_path / "jobs", [])
    (tmp_path / "jobs" / "minutely.py").write_text(MINUTELY)
    client = make_client(tmp_path, [])
    page = Page(get(client, "/"))

    assert page.status("minutely", -2) == "missed"
    assert "(1,440 expected, 1,438 done, 2 missed)" in page.title("minutely", -2)
    assert page.status("minutely", -1) == "missed"  # no run all day: every slot missed
    assert "(1,440 expected, 0 done, 1,440 missed)" in page.title("minutely", -1)
    assert page.status("minutely", -5) == "none"  # before beat first saw the job
    assert page.title("minutely", -5) == (f"{day(-5)}: no interval (0 expected, 0 done, "
                                          "0 missed, 1,440 before the job was scheduled)")
    # today at 12:00: slots that ended more than the grace (5 min + 2 heartbeats) ago are
    # missed, the rest not yet due
    assert "(1,440 expected, 0 done, 714 missed, 726 not yet due)" in page.title("minutely", 0)

    text = get(client, f"/jobs/minutely?date={day(-2).isoformat()}")
    assert text.count('<tr class="interval" data-status="missed"') == 2
    assert text.count('<tr class="interval" data-status="success"') == 1438
    cmds = set(Page(text).commands)
    assert {f"jankycron run minutely --date {fmt(t)[:16]}" for t in gaps} <= cmds
