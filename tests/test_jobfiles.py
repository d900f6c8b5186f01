"""A broken job file is one broken job, whatever it does: an import that never finishes, a
schedule that never fires, two jobs merging one table by different keys, a job that exits the
process. Each is reported against its file or run, and every other job goes on: in the CLI,
a real Celery worker, and the status page."""

from __future__ import annotations

import signal
import textwrap
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery_helpers import Cluster, cluster_fixture, hooks_fixture, wait_until  # noqa: F401
from conftest import Workspace, create_table, gunicorn, warehouse_rows
from test_discovery import GOOD_JOB, GOOD_TABLE, good_rows

from jankycron.config import Settings
from jankycron.discovery import Registry, discover
from jankycron.errors import JobDefinitionError, TerminalError
from jankycron.housekeeping import check_missed
from jankycron.job import job
from jankycron.ledger import Ledger
from jankycron.runner import Context, run_job
from jankycron.schedule import Schedule, check_fires
from jankycron.status import StatusState, job_rows
from jankycron.web import create_app

DAY = "2026-11-24"

# name -> a job file whose import never finishes
HANGING = {
    # A Python loop that even swallows errors (except Exception) while it spins.
    "spins": '''
        from jankycron import job
        n = 0
        while True:
            try:
                n += 1
            except Exception:
                pass
    ''',
    # A network read that never returns (a peer that never answers).
    "waits": '''
        import socket
        a, b = socket.socketpair()
        with a, b:
            a.recv(1)
    ''',
}


@pytest.fixture
def good_ws(duck_ws: Workspace) -> Workspace:
    create_table(duck_ws, GOOD_TABLE)
    duck_ws.write_job("good_orders", GOOD_JOB)
    return duck_ws


def fails(proc: Any) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]


# ------------------------------------------------------------------ an import that hangs
@pytest.mark.parametrize("kind", sorted(HANGING))
def test_a_job_file_whose_import_never_finishes_is_reported_and_skipped(
        good_ws: Workspace, kind: str) -> None:
    """`check` names the file ("import did not finish within 1s") and exits 1 quickly; `jobs`
    and `run --local` of the other job work, each within a few seconds."""
    good_ws.write_job(f"{kind}_forever", HANGING[kind])
    env = {"JANKYCRON_IMPORT_TIMEOUT": "1s"}

    clock = time.monotonic()
    check = good_ws.cli("check", env=env, timeout=60)
    assert check.returncode == 1
    (fail,) = fails(check)
    assert f"{kind}_forever.py" in fail and "import did not finish within 1s" in fail, fail
    assert "1 job(s)" in check.stdout
    assert "Traceback" not in check.stdout + check.stderr

    jobs = good_ws.cli("jobs", "--json", env=env, timeout=60)
    assert jobs.returncode == 0 and '"good_orders"' in jobs.stdout

    run = good_ws.cli("run", "good_orders", "--date", DAY, "--local", env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    (warning,) = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert f"{kind}_forever.py: import did not finish within 1s" in warning
    assert good_rows(good_ws) == [(1, 10), (2, 20), (3, 30)]
    assert time.monotonic() - clock < 45  # three commands, each bounded by the 1s import


def test_the_import_timeout_defaults_to_10s() -> None:
    """JANKYCRON_IMPORT_TIMEOUT: 10 s unless set, in the usual duration form."""
    assert Settings.from_env({}).import_timeout == 10.0
    assert Settings.from_env({"JANKYCRON_IMPORT_TIMEOUT": "2m"}).import_timeout == 120.0


def _cpu_grows(seconds: float = 1.0) -> float:
    before = time.process_time()
    time.sleep(seconds)
    return time.process_time() - before


@pytest.mark.parametrize("in_thread", [False, True], ids=["main thread", "other thread"])
def test_discovery_leaves_nothing_spinning(tmp_path: Path, in_thread: bool) -> None:
    """In-process discovery (as the worker, beat and web processes run it) returns within the
    bound, from the main thread (SIGALRM) and from another thread (a threaded web server: the
    import's helper thread is stopped); afterwards no thread spins (the CPU time of this
    process stops growing) and no import thread is left."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "good_orders.py").write_text(GOOD_JOB)
    (folder / "spins_forever.py").write_text(
        "n = 0\nwhile True:\n    try:\n        n += 1\n    except Exception:\n        pass\n")
    before = set(threading.enumerate())
    out: dict[str, Any] = {}
    clock = time.monotonic()
    if in_thread:
        t = threading.Thread(target=lambda: out.update(found=discover(folder, 0.5)))
        t.start()
        t.join(10)
        assert not t.is_alive()
    else:
        out["found"] = discover(folder, 0.5)
    assert time.monotonic() - clock < 5
    registry, errors = out["found"]
    assert [j.name for j in registry] == ["good_orders"]
    (error,) = errors
    assert "spins_forever.py" in error.path
    assert error.message.startswith("import did not finish within 0.5s")
    wait_until(lambda: set(threading.enumerate()) <= before, "the import thread to stop", 10)
    assert _cpu_grows() < 0.3


SWALLOWING = {
    "bare_except_spin": "n = 0\nwhile True:\n    try:\n        n += 1\n    except:\n        pass\n",
    "retry_loop": ("import time\nwhile True:\n    try:\n        raise ConnectionError\n"
                   "    except:\n        time.sleep(1)\n"),
}


@pytest.mark.parametrize("kind", sorted(SWALLOWING))
def test_a_bare_except_loop_at_import_is_still_stopped(tmp_path: Path, kind: str) -> None:
    """A file whose loop swallows every error (bare `except:`), spinning or retrying with a
    sleep, is still stopped: the timeout is raised again until it lands outside the `try`."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / f"{kind}.py").write_text(SWALLOWING[kind])
    clock = time.monotonic()
    _, errors = discover(folder, 0.5)
    assert time.monotonic() - clock < 5
    assert [e.message.startswith("import did not finish") for e in errors] == [True]


def test_discovery_gives_back_a_callers_alarm(tmp_path: Path) -> None:
    """A process that set its own SIGALRM timer (the CLI's job timeout) keeps it, and its
    handler, across a discovery that used the alarm for a hanging file."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "spins_forever.py").write_text(textwrap.dedent(HANGING["spins"]))
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 3.0)
        _, errors = discover(folder, 0.5)
        assert len(errors) == 1 and fired == []
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 1.5 < remaining < 2.6
        wait_until(lambda: fired, "the caller's alarm", 5, every=0.05)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_rediscovery_does_not_wait_again_for_an_unchanged_hanging_file(tmp_path: Path) -> None:
    """A long-lived process (the status page rediscovers every 30 s) reports an unchanged file
    that timed out at once instead of waiting for it again; once the analyst fixes the file,
    the next discovery imports it."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    hanging = folder / "slow_orders.py"
    hanging.write_text(textwrap.dedent(HANGING["waits"]))
    _, errors = discover(folder, 1.0)
    assert [e.message.startswith("import did not finish within 1s") for e in errors] == [True]

    clock = time.monotonic()
    _, again = discover(folder, 1.0)
    assert time.monotonic() - clock < 0.5
    assert again == errors

    hanging.write_text(GOOD_JOB.replace("good_orders", "slow_orders"))
    registry, errors = discover(folder, 1.0)
    assert errors == [] and [j.name for j in registry] == ["slow_orders"]


def test_the_status_page_renders_with_a_hanging_job_file(tmp_path: Path) -> None:
    """The status grid (Flask's test client, discovery in the request) renders 200 within the
    bound and lists the file as broken."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "good_orders.py").write_text(GOOD_JOB)
    (folder / "waits_forever.py").write_text(textwrap.dedent(HANGING["waits"]))
    settings = Settings.from_env({"JANKYCRON_JOBS_PATH": str(folder),
                                  "JANKYCRON_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
                                  "JANKYCRON_IMPORT_TIMEOUT": "1s"})
    client = create_app(settings).test_client()
    clock = time.monotonic()
    page = client.get("/")
    assert page.status_code == 200
    assert time.monotonic() - clock < 10
    html = page.get_data(as_text=True)
    assert "waits_forever.py" in html and "good_orders" in html


def test_gunicorn_serves_the_status_page_despite_a_hanging_job_file(tmp_path: Path) -> None:
    """A real gunicorn (sync workers: discovery in the worker's main thread) answers the grid
    within the bound, naming the broken file; its log holds no traceback."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "good_orders.py").write_text(GOOD_JOB)
    (folder / "spins_forever.py").write_text(textwrap.dedent(HANGING["spins"]))
    env = {"JANKYCRON_JOBS_PATH": str(folder), "JANKYCRON_IMPORT_TIMEOUT": "1s",
           "JANKYCRON_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}"}
    with gunicorn(tmp_path, env, workers=1) as web:
        clock = time.monotonic()
        with urllib.request.urlopen(f"{web.url}/", timeout=30) as resp:
            html = resp.read().decode()
        assert resp.status == 200 and time.monotonic() - clock < 15
    assert "spins_forever.py" in html and "good_orders" in html


def test_a_worker_and_beat_start_and_run_jobs_despite_a_hanging_file(cluster: Cluster) -> None:
    """A real `celery worker` and beat discover at start: the hanging file is logged as
    skipped, both start, beat fires the other job and the worker runs it, and a CLI run
    through the workers lands."""
    cluster.rows("CREATE TABLE good_orders (id bigint NOT NULL, amount integer)")
    cluster.ws.write_job("good_orders", GOOD_JOB)
    cluster.ws.write_job("spins_forever", HANGING["spins"])
    cluster.ws.env["JANKYCRON_IMPORT_TIMEOUT"] = "1s"
    worker = cluster.worker()
    beat = cluster.beat()
    wait_until(lambda: "ready" in worker.text(), "the worker to be ready", 60)
    assert "spins_forever.py: import did not finish within 1s" in worker.text()
    wait_until(lambda: [r for r in cluster.runs("good_orders") if r["status"] == "success"],
               "beat to fire good_orders and the worker to run it")
    assert "spins_forever.py: import did not finish within 1s" in beat.text()

    proc = cluster.ws.cli("run", "good_orders", "--date", DAY, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert cluster.rows("SELECT id, amount FROM good_orders ORDER BY id") == [
        (1, 10), (2, 20), (3, 30)]


# ------------------------------------------------------------- a schedule that never fires
NEVER = ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"]


@pytest.mark.parametrize("cron", NEVER)
def test_a_schedule_that_never_fires_is_a_job_definition_error(good_ws: Workspace,
                                                                 cron: str) -> None:
    """croniter accepts `0 0 31 2 *`, but it never fires: `check` names the file, `jobs`
    lists the other job (no traceback)."""
    good_ws.write_job("feb31", f'''
        from jankycron import job

        @job(schedule="{cron}", table="t_feb", key="id")
        def feb31(run):
            yield {{"id": 1}}
    ''')
    check = good_ws.cli("check")
    assert check.returncode == 1
    (fail,) = fails(check)
    assert "feb31.py" in fail and "never fires" in fail and cron in fail, fail
    jobs = good_ws.cli("jobs")
    assert jobs.returncode == 0, jobs.stderr
    assert "good_orders" in jobs.stdout and "Traceback" not in jobs.stdout + jobs.stderr


def test_a_schedule_that_fires_every_four_years_is_fine() -> None:
    """Feb 29 fires within the 5-year horizon: allowed, and found quickly."""
    clock = time.monotonic()
    sched = Schedule("0 0 29 2 *")
    assert sched.next_fire(datetime(2026, 12, 1, tzinfo=UTC)) == datetime(2028, 2, 29,
                                                                           tzinfo=UTC)
    check_fires("0 0 29 2 *")
    assert time.monotonic() - clock < 1
    with pytest.raises(JobDefinitionError, match="never fires"):
        job(schedule="0 0 31 2 *", table="t", key="id")


class _Broken(Schedule):
    """A fake: a schedule that raises when evaluated. Validation refuses such expressions at
    `@job` time, so only a fake can get one into a registry, to prove the defence in depth."""

    def latest_complete(self, now: datetime) -> Any:
        raise RuntimeError("cannot evaluate")

    def intervals_starting(self, first: datetime, until: datetime) -> Any:
        raise RuntimeError("cannot evaluate")


class _Alerts:
    def __init__(self) -> None:
        self.missed: list[str] = []

    def run_missed(self, job: Any, last: Any, due: Any, interval: Any = None) -> None:
        self.missed.append(job.name)


def test_one_job_that_cannot_be_evaluated_does_not_stop_the_others(tmp_path: Path) -> None:
    """The missed-run check still alerts the other overdue job, and the status grid and the
    job's page still render (200, not a 500) listing every job."""
    good = job(schedule="0 3 * * *", table="a", key="id", name="good")(lambda run: iter(()))
    bad = job(schedule="0 4 * * *", table="b", key="id", name="bad")(lambda run: iter(()))
    object.__setattr__(bad, "schedule", _Broken("0 4 * * *"))
    registry = Registry({"good": good, "bad": bad})
    (tmp_path / "jobs").mkdir()
    settings = Settings.from_env({"JANKYCRON_STATE_URL": f"sqlite:///{tmp_path / 's.db'}",
                                  "JANKYCRON_JOBS_PATH": str(tmp_path / "jobs"),
                                  "JANKYCRON_HEARTBEAT": "1s"})
    ledger = Ledger.open(settings)
    now = datetime.now(UTC)
    for name in ("good", "bad"):  # watched since long ago, never ran
        ledger.schedule_state(name)
        ledger._exec("UPDATE jc_schedule SET since = ? WHERE job = ?",
                     ((now - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ"), name))
    yesterday = good.schedule.latest_complete(now - timedelta(days=1))
    ledger.finish_run(ledger.start_run("bad", yesterday), "failed", error="KeyError: 'id'")
    alerts = _Alerts()
    assert check_missed(ledger, registry, alerts, settings, now) == ["good"]
    assert alerts.missed == ["good"]
    rows = job_rows(registry, ledger, StatusState(settings), 3, now)
    assert [r.name for r in rows] == ["bad", "good"]
    ledger.close()

    app = create_app(settings)
    app.extensions["jankycron.status"]._registry = (time.monotonic(), registry, [])
    client = app.test_client()
    grid = client.get("/")
    assert grid.status_code == 200
    assert "bad" in grid.get_data(as_text=True) and "good" in grid.get_data(as_text=True)
    assert client.get("/jobs/bad").status_code == 200


# ------------------------------------------------------------------ one table, two keys
def test_check_refuses_two_jobs_merging_one_table_by_different_keys(good_ws: Workspace
                                                                    ) -> None:
    """Two jobs feed good_orders, one by id and one by (id, amount): they would delete each
    other's rows. `check` says so in one line naming both jobs and keys, and neither runs."""
    good_ws.write_job("more_orders", '''
        from jankycron import job

        @job(schedule="0 5 * * *", table="good_orders", key=("id", "amount"))
        def more_orders(run):
            yield {"id": 1, "amount": 99}
    ''')
    check = good_ws.cli("check")
    assert check.returncode == 1
    (fail,) = [line for line in fails(check) if "job file" in line]
    assert "FAIL  0 job(s)" in check.stdout  # both are skipped
    for words in ("good_orders", "job good_orders", "by (id)", "job more_orders",
                  "by (id, amount)", "one merge key"):
        assert words in fail, fail
    assert good_ws.cli_json("jobs") == []
    run = good_ws.cli("run", "more_orders", "--date", DAY, "--local")
    assert run.returncode == 1 and "merged by two keys" in run.stderr
    assert run.stderr.splitlines()[-1].startswith("error: unknown job 'more_orders'")
    assert good_rows(good_ws) == []


def test_the_loader_never_merges_a_table_by_another_key(duck_ws: Workspace) -> None:
    """A batch staged for key (id) is not merged by (amount), say by a process whose jobs
    folder differs: the load fails with one line, the batch stays pending, the table is
    untouched; merged by its own key, it loads."""
    create_table(duck_ws, GOOD_TABLE)
    duck_ws.write_job("good_orders", GOOD_JOB)
    registry, _ = discover(duck_ws.jobs)
    ctx = Context(duck_ws.settings)
    try:
        good = registry.get("good_orders")
        run_job(ctx, good, good.interval_on(datetime(2026, 11, 24).date()), load=False)
        with pytest.raises(TerminalError, match=r"not merged by \(amount\).*\(id\)"):
            ctx.loader.load_table("good_orders", ("amount",))
        assert len(ctx.ledger.pending_batches("good_orders")) == 1
        assert good_rows(duck_ws) == []
        ctx.loader.load_table("good_orders", ("id",))
        assert ctx.ledger.pending_batches("good_orders") == []
        assert good_rows(duck_ws) == [(1, 10), (2, 20), (3, 30)]

        # The analyst changes the key: a batch staged under the old one waits, with the
        # fix in its error; a rerun of its interval under the new key replaces it and loads.
        interval = good.interval_on(datetime(2026, 11, 25).date())
        run_job(ctx, good, interval, load=False)
        rekeyed = job(schedule="0 3 * * *", table="good_orders", key=("id", "amount"),
                      name="good_orders")(good.fn)
        with pytest.raises(TerminalError, match="rerun their intervals"):
            ctx.loader.load_table("good_orders", ("id", "amount"))
        run_job(ctx, rekeyed, interval)
        assert ctx.ledger.pending_batches("good_orders") == []
    finally:
        ctx.close()
    assert good_rows(duck_ws) == [(1, 10), (2, 20), (3, 30)]


# ------------------------------------------------------------------ a job that exits
EXITS = {
    "sys_exit": ("raise SystemExit(3)", "it raised SystemExit(3) (quitter.py line 7)"),
    "os_exit": ("import os; os._exit(0)", "it called os._exit(0) (quitter.py line 7)"),
}


@pytest.mark.parametrize("kind", sorted(EXITS))
def test_a_job_that_exits_the_process_fails_its_run(good_ws: Workspace, kind: str) -> None:
    """`run --local` of a job that calls sys.exit / os._exit: exit 1 with one `error:` line,
    and the run is failed in history (not `running` forever); the other job still runs."""
    code, words = EXITS[kind]
    good_ws.write_job("quitter", f'''
        from jankycron import job

        @job(schedule="0 3 * * *", table="good_orders", key="id")
        def quitter(run):
            yield {{"id": 7, "amount": 70}}
            {code}
    ''')
    proc = good_ws.cli("run", "quitter", "--date", DAY, "--local")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: job quitter failed: ") and words in last, proc.stderr
    assert "Traceback" not in proc.stderr
    (row,) = good_ws.cli_json("history", "quitter")
    assert row["status"] == "failed" and words in row["error"]
    assert warehouse_rows(good_ws, "SELECT count(*) FROM good_orders") == [(0,)]
    good_ws.cli("run", "good_orders", "--date", DAY, "--local", check=True)
    assert good_rows(good_ws) == [(1, 10), (2, 20), (3, 30)]


def test_a_job_that_exits_fails_its_run_on_a_worker_which_goes_on(cluster: Cluster) -> None:
    """On a real worker, sys.exit / os._exit in a job fail that run with one line (the pool
    child neither exits nor takes the run with it), and the worker runs the next job."""
    cluster.rows("CREATE TABLE good_orders (id bigint NOT NULL, amount integer)")
    cluster.ws.write_job("good_orders", GOOD_JOB)
    for kind, (code, _) in EXITS.items():
        cluster.ws.write_job(kind, f'''
            from jankycron import job

            @job(schedule="0 3 * * *", table="good_orders", key="id")
            def {kind}(run):
                yield {{"id": 7, "amount": 70}}
                {code}
        ''')
    worker = cluster.worker(concurrency=1)
    for kind, (_, words) in EXITS.items():
        proc = cluster.ws.cli("run", kind, "--date", DAY, timeout=120)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: job {kind} failed: it ") and \
            words.replace("quitter.py", f"{kind}.py") in last, proc.stderr
        (row,) = cluster.runs(kind)
        assert row["status"] == "failed"
    cluster.ws.cli("run", "good_orders", "--date", DAY, check=True, timeout=120)
    assert cluster.rows("SELECT id, amount FROM good_orders ORDER BY id") == [
        (1, 10), (2, 20), (3, 30)]
    assert worker.popen.poll() is None
    assert "WorkerLostError" not in worker.text()


def test_an_exit_a_signal_handler_asks_for_still_ends_the_process(duck_ws: Workspace) -> None:
    """The process's own shutdown is not the job's exit: a SystemExit raised by a signal
    handler while a job runs (billiard's pool child on SIGTERM, Celery's solo worker) is
    raised on, so the process still ends; the run is recorded failed, as before."""
    create_table(duck_ws, GOOD_TABLE)
    duck_ws.write_job("sleepy", '''
        import time
        from jankycron import job

        @job(schedule="0 3 * * *", table="good_orders", key="id")
        def sleepy(run):
            yield {"id": 1, "amount": 1}
            time.sleep(10)
    ''')
    registry, _ = discover(duck_ws.jobs)
    sleepy = registry.get("sleepy")

    def shutdown(signum: int, frame: Any) -> None:
        raise SystemExit(143)

    ctx = Context(duck_ws.settings)
    previous = signal.signal(signal.SIGALRM, shutdown)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(SystemExit) as exited:
            run_job(ctx, sleepy, sleepy.interval_on(datetime(2026, 11, 24).date()))
        assert exited.value.code == 143 and not isinstance(exited.value, TerminalError)
        (run,) = ctx.ledger.history("sleepy", limit=5)
        assert run["status"] == "failed"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        ctx.close()
