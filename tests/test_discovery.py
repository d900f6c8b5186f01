"""Analysts drop one job file per job into the jobs folder; jankycron finds it, and a broken
file is named (by ``check``, and as a warning) without stopping the other jobs."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Workspace, create_table, warehouse_rows

from jankycron.discovery import Registry, discover
from jankycron.errors import JankycronError, UnknownJob

DAY = "2026-11-24"

GOOD_TABLE = "CREATE TABLE good_orders (id bigint NOT NULL, amount integer)"
GOOD_JOB = '''
from jankycron import job

@job(schedule="0 3 * * *", table="good_orders", key="id")
def good_orders(run):
    for i in range(1, 4):
        yield {"id": i, "amount": i * 10}
'''

# name -> (source of the broken file, words the reason must contain)
BROKEN = {
    "syntax_error": (
        '''
        from jankycron import job

        @job(schedule="0 3 * * *", table="t_syntax", key="id")
        def syntax_error(run:
            yield {"id": 1}
        ''',
        ["SyntaxError", "line 5"],
    ),
    "missing_import": (
        '''
        from jankycron import job
        import no_such_module_for_jankycron_tests

        @job(schedule="0 3 * * *", table="t_missing", key="id")
        def missing_import(run):
            yield {"id": 1}
        ''',
        ["ModuleNotFoundError", "no_such_module_for_jankycron_tests", "line 3"],
    ),
    "two_jobs": (
        '''
        from jankycron import job

        @job(schedule="0 3 * * *", table="t_first", key="id")
        def first_job(run):
            yield {"id": 1}

        @job(schedule="0 4 * * *", table="t_second", key="id")
        def second_job(run):
            yield {"id": 2}
        ''',
        ["2 jobs", "first_job", "second_job", "exactly one"],
    ),
    "no_job": (
        '''
        def just_a_function(run):
            yield {"id": 1}
        ''',
        ["no @job", "exactly one"],
    ),
    "bad_cron": (
        '''
        from jankycron import job

        @job(schedule="61 * * * *", table="t_cron", key="id")
        def bad_cron(run):
            yield {"id": 1}
        ''',
        ["schedule", "61 * * * *", "not a valid cron", "line 4"],
    ),
    "bad_table_name": (
        '''
        from jankycron import job

        @job(schedule="0 3 * * *", table="Bad-Table", key="id")
        def bad_table_name(run):
            yield {"id": 1}
        ''',
        ["table", "Bad-Table", "lower case"],
    ),
}


def good_rows(ws: Workspace) -> list[tuple]:
    return warehouse_rows(ws, "SELECT id, amount FROM good_orders ORDER BY id")


def stderr_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.fixture
def good_ws(duck_ws: Workspace) -> Workspace:
    """A workspace holding one good job whose table exists."""
    create_table(duck_ws, GOOD_TABLE)
    duck_ws.write_job("good_orders", GOOD_JOB)
    return duck_ws


@pytest.fixture
def no_leftover_modules(tmp_path: Path) -> Iterator[None]:
    """In-process discovery may import helper modules; forget those of this test afterwards."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if file.startswith(str(tmp_path)):
            del sys.modules[name]


# ----------------------------------------------------------------------- a new job file


def test_a_new_job_file_is_listed_and_runs(good_ws: Workspace) -> None:
    """An analyst drops a second job file next to the first: `jobs` lists both, and the new
    one runs for a day and lands its rows."""
    before = good_ws.cli_json("jobs")
    assert [j["name"] for j in before] == ["good_orders"]

    create_table(good_ws, "CREATE TABLE fresh_signups (id bigint NOT NULL, email varchar(100))")
    good_ws.write_job("fresh_signups", '''
        from jankycron import job

        @job(schedule="30 6 * * *", table="fresh_signups", key="id")
        def fresh_signups(run):
            yield {"id": 1, "email": "ada@example.com"}
            yield {"id": 2, "email": "grace@example.com"}
    ''')

    listed = {j["name"]: j for j in good_ws.cli_json("jobs")}
    assert set(listed) == {"good_orders", "fresh_signups"}
    new = listed["fresh_signups"]
    assert {"name", "schedule", "tables", "next_run", "last_status"} <= set(new)
    assert new["schedule"] == "30 6 * * *"
    assert new["tables"] == ["fresh_signups"]
    assert new["last_status"] is None  # never ran
    next_run = datetime.fromisoformat(new["next_run"].replace("Z", "+00:00"))
    now = datetime.now(UTC)
    assert now < next_run <= now + timedelta(days=1)
    assert (next_run.hour, next_run.minute, next_run.second) == (6, 30, 0)

    proc = good_ws.cli("run", "fresh_signups", "--date", DAY, "--local", check=True)
    assert "fresh_signups" in proc.stdout and "success" in proc.stdout
    assert warehouse_rows(good_ws, "SELECT id, email FROM fresh_signups ORDER BY id") == [
        (1, "ada@example.com"), (2, "grace@example.com")]

    after = {j["name"]: j for j in good_ws.cli_json("jobs")}
    assert after["fresh_signups"]["last_status"] == "success"
    assert after["good_orders"]["last_status"] is None


# ----------------------------------------------------------------------- broken job files


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_check_names_a_broken_job_file_and_why(good_ws: Workspace, kind: str) -> None:
    """`jankycron check` names the broken file and the reason; the good job is still fine."""
    source, reason_words = BROKEN[kind]
    good_ws.write_job(kind, source)

    proc = good_ws.cli("check")
    fails = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1, proc.stdout  # only the broken file, nothing else
    (fail,) = fails
    assert f"{kind}.py" in fail
    for word in reason_words:
        assert word in fail, f"{word!r} missing from {fail!r}"
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "1 job(s)" in proc.stdout  # the good job was found


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_job_file_does_not_stop_another_job(good_ws: Workspace, kind: str) -> None:
    """A colleague's broken file must not stop my job: it runs, lands its rows, and the
    broken file is only mentioned as a warning."""
    good_ws.write_job(kind, BROKEN[kind][0])

    proc = good_ws.cli("run", "good_orders", "--date", DAY, "--local")
    assert proc.returncode == 0, proc.stderr
    assert good_rows(good_ws) == [(1, 10), (2, 20), (3, 30)]
    warnings = [line for line in stderr_lines(proc) if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{kind}.py" in warnings[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr

    listed = [j["name"] for j in good_ws.cli_json("jobs")]
    assert listed == ["good_orders"]


def test_check_passes_when_every_job_file_is_good(good_ws: Workspace) -> None:
    """With only good job files and working connections, `check` reports no problem, exit 0."""
    proc = good_ws.cli("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    assert "ok    table good_orders" in proc.stdout


def test_check_exits_1_when_a_job_file_is_broken(good_ws: Workspace) -> None:
    """A CI step running `jankycron check` must fail when a job file is broken."""
    good_ws.write_job("syntax_error", BROKEN["syntax_error"][0])
    proc = good_ws.cli("check")
    assert "FAIL" in proc.stdout and "syntax_error.py" in proc.stdout
    assert proc.returncode == 1


def test_check_fails_on_an_alert_route_it_cannot_send_to(good_ws: Workspace) -> None:
    """A Slack route without the webhook setting would never alert: `check` says so."""
    good_ws.write_job("noisy", """
        from jankycron import job

        @job(schedule="0 4 * * *", table="good_orders", key="id", alert="slack:#data-eng")
        def noisy(run):
            yield {"id": 1}
    """)
    proc = good_ws.cli("check")
    assert proc.returncode == 1
    assert "FAIL  job noisy:" in proc.stdout and "JANKYCRON_SLACK_WEBHOOK_URL" in proc.stdout
    proc = good_ws.cli("check", env={"JANKYCRON_SLACK_WEBHOOK_URL":
                                     "https://hooks.slack.example/services/T0/B0/s3cret"})
    assert proc.returncode == 0, proc.stdout
    assert "s3cret" not in proc.stdout + proc.stderr


# ----------------------------------------------------------------------- helper files


def test_underscore_files_are_helpers_not_jobs(good_ws: Workspace) -> None:
    """`_money.py` holds shared code: it is not listed or checked as a job, but a job file can
    import it."""
    (good_ws.jobs / "_money.py").write_text(textwrap.dedent('''
        def cents(euros):
            return int(round(euros * 100))
    '''))
    create_table(good_ws, "CREATE TABLE payouts (id bigint NOT NULL, cents integer)")
    good_ws.write_job("payouts", '''
        from jankycron import job
        from _money import cents

        @job(schedule="0 5 * * *", table="payouts", key="id")
        def payouts(run):
            yield {"id": 1, "cents": cents(12.34)}
            yield {"id": 2, "cents": cents(0.5)}
    ''')

    assert sorted(j["name"] for j in good_ws.cli_json("jobs")) == ["good_orders", "payouts"]
    check = good_ws.cli("check")
    assert "_money" not in check.stdout and "FAIL" not in check.stdout, check.stdout

    good_ws.cli("run", "payouts", "--date", DAY, "--local", check=True)
    assert warehouse_rows(good_ws, "SELECT id, cents FROM payouts ORDER BY id") == [
        (1, 1234), (2, 50)]


# ----------------------------------------------------------------------- duplicate names

DUPLICATE = '''
from jankycron import job

@job(schedule="0 3 * * *", table="good_orders", key="id", name="good_orders")
def other_orders(run):
    yield {{"id": 99, "amount": {amount}}}
'''


def test_second_file_with_the_same_job_name_is_reported(good_ws: Workspace) -> None:
    """Two files claiming the job name `good_orders`: the second one (in file name order) is
    reported naming the first; the first keeps the name and is the one that runs."""
    good_ws.write_job("zz_copy_of_orders", DUPLICATE.format(amount=1))

    check = good_ws.cli("check")
    fails = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1, check.stdout
    assert "zz_copy_of_orders.py" in fails[0]
    assert "'good_orders'" in fails[0] and "good_orders.py" in fails[0]

    (listed,) = good_ws.cli_json("jobs")
    assert listed["name"] == "good_orders" and listed["file"].endswith("good_orders.py")
    assert not listed["file"].endswith("zz_copy_of_orders.py")

    proc = good_ws.cli("run", "good_orders", "--date", DAY, "--local", check=True)
    assert "zz_copy_of_orders.py" in proc.stderr  # the operator is told
    assert good_rows(good_ws) == [(1, 10), (2, 20), (3, 30)]  # the first file's code ran


# ----------------------------------------------------------------------- in-process API


def test_discover_returns_jobs_and_per_file_errors(tmp_path: Path,
                                                   no_leftover_modules: None) -> None:
    """discover(path) -> (registry, errors): good jobs by name, one error per broken file."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "good_orders.py").write_text(textwrap.dedent(GOOD_JOB))
    (folder / "two_jobs.py").write_text(textwrap.dedent(BROKEN["two_jobs"][0]))

    registry, errors = discover(folder)
    assert isinstance(registry, Registry)
    assert [j.name for j in registry] == ["good_orders"]
    assert "good_orders" in registry and len(registry) == 1
    job = registry.get("good_orders")
    assert job.schedule.expr == "0 3 * * *" and dict(job.tables) == {"good_orders": ("id",)}
    assert registry.tables() == {"good_orders": ("id",)}
    (error,) = errors
    assert error.path.endswith("two_jobs.py") and "2 jobs" in error.message
    assert "two_jobs.py" in str(error)


def test_discover_of_a_missing_folder_says_so(tmp_path: Path) -> None:
    registry, errors = discover(tmp_path / "nope")
    assert len(registry) == 0
    (error,) = errors
    assert "does not exist" in error.message and "nope" in str(error)


def test_each_discover_builds_a_fresh_registry(tmp_path: Path,
                                               no_leftover_modules: None) -> None:
    """A long-running process re-discovers: new files appear, removed files disappear, edits
    are picked up, and registries handed out earlier do not change under their holder."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "good_orders.py").write_text(textwrap.dedent(GOOD_JOB))
    first, _ = discover(folder)

    (folder / "second.py").write_text(textwrap.dedent('''
        from jankycron import job

        @job(schedule="0 1 * * *", table="second", key="id")
        def second(run):
            yield {"id": 1}
    '''))
    second, errors = discover(folder)
    assert errors == []
    assert first is not second
    assert [j.name for j in first] == ["good_orders"]
    assert [j.name for j in second] == ["good_orders", "second"]

    (folder / "good_orders.py").unlink()
    (folder / "second.py").write_text((folder / "second.py").read_text()
                                      .replace('"0 1 * * *"', '"15 7 * * *"'))
    third, _ = discover(folder)
    assert [j.name for j in third] == ["second"]
    assert third.get("second").schedule.expr == "15 7 * * *"
    assert second.get("second").schedule.expr == "0 1 * * *"
    assert [j.name for j in second] == ["good_orders", "second"]


def test_rediscovery_picks_up_an_edited_helper(tmp_path: Path,
                                               no_leftover_modules: None) -> None:
    """An analyst fixes a bug in `_rates.py`; the next discovery must run the fixed code."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "_rates_for_rediscovery.py").write_text("RATE = 1\n")
    (folder / "rated.py").write_text(textwrap.dedent('''
        from jankycron import job
        import _rates_for_rediscovery as rates

        @job(schedule="0 1 * * *", table="rated", key="id")
        def rated(run):
            yield {"id": 1, "rate": rates.RATE}
    '''))
    before, _ = discover(folder)
    assert list(before.get("rated")(None)) == [{"id": 1, "rate": 1}]

    (folder / "_rates_for_rediscovery.py").write_text("RATE = 2  # fixed\n")
    after, _ = discover(folder)
    assert list(after.get("rated")(None)) == [{"id": 1, "rate": 2}]


def test_unknown_job_name_suggests_the_near_one(tmp_path: Path,
                                                no_leftover_modules: None) -> None:
    """A typo in a job name says which job was meant; a name like nothing gives no guess."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "good_orders.py").write_text(textwrap.dedent(GOOD_JOB))
    registry, _ = discover(folder)

    with pytest.raises(UnknownJob) as typo:
        registry.get("good_ordres")
    assert "'good_ordres'" in str(typo.value)
    assert "did you mean good_orders?" in str(typo.value)
    assert isinstance(typo.value, JankycronError)

    with pytest.raises(UnknownJob) as far:
        registry.get("nope")
    assert "'nope'" in str(far.value) and "did you mean" not in str(far.value)
