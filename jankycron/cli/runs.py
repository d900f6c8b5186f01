"""Commands that run jobs: run, backfill, rerun (through the workers or --local), dev."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click

from ..config import Settings, redact
from ..errors import ConfigError, JankycronError, JobExited, RunTimedOut
from ..job import Job
from ..runner import describe, load_tables, run_job
from ..schedule import (
    Interval,
    backfill_intervals,
    day_start,
    ensure_ended,
    parse_day,
    parse_fmt,
    run_interval,
)
from . import App, _dump, _print_run, cli, command

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ through the workers
def _enqueued(app: App, tasks: list[tuple[str, Any]], as_json: bool) -> None:
    """--no-wait: what was enqueued, with the task ids (stdout), and return."""
    if as_json:
        return _dump([{"task_id": res.id, "what": label} for label, res in tasks])
    for label, res in tasks:
        click.echo(f"{res.id}  {label}")


def _progress(app: App, res: Any) -> str:
    """One line on where a task is: from the ledger's runs of the task, else Celery's state."""
    runs = app.ctx.ledger.runs_of_task(res.id)
    state = res.state
    if runs:
        last = runs[-1]
        attempt = f" (attempt {last['attempt']})" if (last["attempt"] or 1) > 1 else ""
        if last["status"] in ("running", "staged") and state not in ("SUCCESS", "FAILURE"):
            lost = [r for r in runs[:-1] if r["status"] == "lost"]
            again = f" again after its worker died ({lost[-1]['error']})" if lost else ""
            return {"running": "running", "staged": "staged, loading"}[last["status"]] + \
                attempt + again
        if last["status"] == "retried" and state != "FAILURE":
            return f"retrying: {last['error']}"
        if last["status"] == "lost" and state not in ("SUCCESS", "FAILURE"):
            return f"{last['error']}; waiting for it"
        if last["status"] == "staged" and state == "RETRY":
            return f"load retrying: {last['error']}"
    if state == "PENDING":
        return "queued"
    if state == "RETRY":
        return "waiting for the running run of this interval"
    return {"STARTED": "started", "SUCCESS": "done", "FAILURE": "failed"}.get(state,
                                                                             state.lower())


BROKER_PATIENCE = 600.0  # seconds the CLI waits through a broker it cannot reach, then gives up


def _broker_errors() -> tuple[type[BaseException], ...]:
    """What reading a task's state raises while Redis is down or restarting."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (OperationalError, RedisConnectionError, RedisTimeoutError, ConnectionError)


def _finished_run(app: App, res: Any) -> dict[str, Any] | None:
    """The ledger (the source of truth) says the task's run is done (success or skipped):
    the outcome, even if Celery's result was lost or is not stored yet."""
    runs = app.ctx.ledger.runs_of_task(res.id)
    if runs and runs[-1]["status"] in ("success", "skipped"):
        return runs[-1]
    return None


def _wait(app: App, tasks: list[tuple[str, Any]]) -> tuple[list[Any], list[str]]:
    """Wait for enqueued tasks, printing each one's progress on stderr as it changes. Returns
    the results of those that succeeded (in order) and one line per failure. A broker that
    drops out (a Redis restart) is waited through, for up to BROKER_PATIENCE seconds; a run
    the ledger shows as done counts as done."""
    shown: dict[str, str] = {res.id: "queued" for _, res in tasks}
    scrub = app.settings.scrubber()
    results: dict[str, Any] = {}
    errors: list[str] = []
    todo = list(tasks)
    broker_errors = _broker_errors()
    unreachable_since: float | None = None
    try:
        while todo:
            for label, res in list(todo):
                finished = _finished_run(app, res)
                if finished is not None:
                    todo.remove((label, res))
                    results[res.id] = finished
                    continue
                try:
                    done = res.ready()
                    note = _progress(app, res)
                except broker_errors as e:
                    if unreachable_since is None:
                        unreachable_since = time.monotonic()
                        click.echo(f"{label}: lost the broker {redact(app.settings.broker_url)}"
                                   f" ({type(e).__name__}); waiting for it to come back",
                                   err=True)
                    elif time.monotonic() - unreachable_since > BROKER_PATIENCE:
                        raise JankycronError(
                            f"broker {redact(app.settings.broker_url)} unreachable for "
                            f"{BROKER_PATIENCE:.0f}s; what was enqueued goes on on the workers "
                            "(see jankycron history)") from None
                    break
                unreachable_since = None
                if shown.get(res.id) != note and not (done and note in ("done", "failed")):
                    shown[res.id] = note
                    # a job's own error text may hold anything
                    click.echo(f"{label}: {scrub(note)}", err=True)
                if not done:
                    continue
                todo.remove((label, res))
                outcome = res.result
                if not res.successful():
                    text = str(outcome) if isinstance(outcome, JankycronError) else \
                        f"{type(outcome).__name__}: {outcome}"
                    text = (text.strip().splitlines() or ["?"])[0]
                    errors.append(text if text.startswith("job ") else f"{label}: {text}")
                elif isinstance(outcome, dict) and outcome.get("status") == "dropped":
                    errors.append(f"{label}: {outcome['error']}")
                else:
                    results[res.id] = outcome
            if todo:  # a long backfill is polled less often
                time.sleep(min(5.0, 0.5 + len(todo) / 100))
    except KeyboardInterrupt:
        click.echo("stopped waiting; what was enqueued goes on on the workers "
                   "(see jankycron history)", err=True)
        raise click.exceptions.Exit(130) from None
    return [results[res.id] for _, res in tasks if res.id in results], errors


def _runs_done(app: App, results: list[Any]) -> list[dict[str, Any]]:
    return [app.ctx.ledger.run(r["run_id"]) for r in results
            if isinstance(r, dict) and r.get("run_id")]


# -------------------------------------------------------------------------------------- run
@command(cli, "run")
@click.argument("job_name", metavar="JOB")
@click.option("--date", "day", help="The interval that starts on this day (YYYY-MM-DD, or "
              "YYYY-MM-DDTHH:MM for jobs that run several times a day). Default: the latest "
              "complete interval. The interval must have ended.")
@click.option("--local", is_flag=True, help="Run in this process instead of on the workers.")
@click.option("--no-wait", is_flag=True, help="Return once enqueued, printing the task id.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def run_cmd(app: App, job_name: str, day: str | None, local: bool, no_wait: bool,
            as_json: bool) -> None:
    """Run JOB for one interval and load its data: on the workers (waiting for the outcome,
    with progress on stderr), or in this process with --local."""
    job = app.registry.get(job_name)
    # validated before anything is enqueued or run: one line for a bad or unfinished interval
    interval = run_interval(job.schedule, day, datetime.now(UTC))
    if local:
        try:
            with time_limit(job):
                row = run_job(app.ctx, job, interval)
        except JobExited as e:  # as the workers say it (celery_app: "job X failed: ...")
            raise JankycronError(f"job {job.name} failed: {e}") from None
        except JankycronError:
            raise
        except Exception as e:  # the job's own bug: recorded in the ledger, one line here
            raise JankycronError(f"job {job.name} failed: {describe(e, job)}") from None
    else:
        from ..celery_app import Trigger, send_run

        task = (f"{job.name} {interval}", send_run(app.celery, job, interval, Trigger.CLI))
        if no_wait:
            return _enqueued(app, [task], as_json)
        click.echo(f"{task[0]}: queued (task {task[1].id})", err=True)
        results, errors = _wait(app, [task])
        if errors:
            raise JankycronError(errors[0])
        row = _runs_done(app, results)[0]
    if as_json:
        _dump([row])
    else:
        _print_run(row)
    if row["status"] == "failed":  # loaded, but a batch of it was quarantined (its error)
        raise JankycronError(f"job {job.name} failed: {row['error']}")


@command(cli, "backfill")
@click.argument("job_name", metavar="JOB")
@click.option("--start", "start", required=True, help="First day (YYYY-MM-DD), or the first "
              "interval's start (YYYY-MM-DDTHH:MM).")
@click.option("--end", "end", required=True, help="Last day, inclusive (YYYY-MM-DD), or the last "
              "interval's start, inclusive (YYYY-MM-DDTHH:MM). Every interval must have ended.")
@click.option("--local", is_flag=True, help="Run in this process instead of on the workers.")
@click.option("--no-wait", is_flag=True, help="Return once enqueued, printing the task ids.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def backfill_cmd(app: App, job_name: str, start: str, end: str, local: bool, no_wait: bool,
                 as_json: bool) -> None:
    """Run JOB for every interval starting between --start and --end, oldest first.

    All intervals are extracted and staged first, then loaded in one merge per table.
    """
    job = app.registry.get(job_name)
    intervals = backfill_intervals(job.schedule, start, end, datetime.now(UTC))
    if local:
        rows, failed = _backfill_local(app, job, intervals)
    else:
        from ..celery_app import Trigger, send_load, send_run

        n = len(intervals)
        tasks = [(f"[{i}/{n}] {iv}", send_run(app.celery, job, iv, Trigger.BACKFILL, load=False))
                 for i, iv in enumerate(intervals, 1)]
        if no_wait:  # the staged batches load on the next loader tick
            return _enqueued(app, tasks, as_json)
        results, errors = _wait(app, tasks)
        for line in errors:
            click.echo(line, err=True)
        failed = len(errors)
        _, load_errors = _wait(app, [(f"load {t}", send_load(app.celery, t))
                                     for t in job.tables])
        rows = _runs_done(app, results)
        if load_errors:
            raise JankycronError(load_errors[0])
    if as_json:
        _dump(rows)
    else:
        for row in rows:
            _print_run(row)
    if failed:
        raise JankycronError(f"{failed} of {len(intervals)} interval(s) failed; "
                             f"see jankycron history {job.name}")


@contextlib.contextmanager
def time_limit(job: Job) -> Iterator[None]:
    """Enforce the job's ``timeout`` on a ``--local`` run, as the workers do: past it, the run
    fails "timed out" (a SIGALRM timer; this is the CLI's main thread)."""
    def expired(signum: int, frame: Any) -> None:
        raise RunTimedOut(f"timed out after {job.timeout:.0f}s (the job's timeout)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, job.timeout)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _backfill_local(app: App, job: Job, intervals: list[Interval]
                    ) -> tuple[list[dict[str, Any]], int]:
    run_ids, failed = [], 0
    for i, interval in enumerate(intervals, 1):
        try:
            with time_limit(job):
                row = run_job(app.ctx, job, interval, load=False)
            click.echo(f"[{i}/{len(intervals)}] {interval}: {row['status']}, "
                       f"{row['rows_staged']:,} staged", err=True)
        except Exception as e:  # one interval's failure (recorded) does not stop the others
            failed += 1
            click.echo(f"[{i}/{len(intervals)}] {interval}: failed: {describe(e, job)}", err=True)
            continue
        run_ids.append(row["run_id"])
    load_tables(app.ctx, job.tables)
    return [app.ctx.ledger.run(r) for r in run_ids], failed


@command(cli, "rerun")
@click.option("--failed", is_flag=True, help="Every interval whose newest run failed or was "
              "lost.")
@click.option("--since", help="Only runs started on or after this day (YYYY-MM-DD) or time.")
@click.option("--no-wait", is_flag=True, help="Return once enqueued, printing the task ids.")
@click.option("--json", "as_json", is_flag=True, help="Print the new runs as JSON.")
def rerun_cmd(app: App, failed: bool, since: str | None, no_wait: bool, as_json: bool) -> None:
    """Run again, on the workers, the intervals whose newest run failed (--failed)."""
    if not failed:
        raise click.UsageError("say what to rerun: jankycron rerun --failed [--since D]")
    since_t = None if since is None else day_start(parse_day(since, "--since"))
    registry = app.registry
    runs = []
    now = datetime.now(UTC)
    for r in app.ctx.ledger.failed_runs(since_t):
        try:  # a failed run of an interval that has not ended (an old ledger, the API)
            ensure_ended(Interval(parse_fmt(r["start"]), parse_fmt(r["end"])), now)
        except ConfigError as e:
            click.echo(f"warning: {r['job']}: {e}: not rerun", err=True)
            continue
        if r["job"] in registry:
            runs.append(r)
        else:
            click.echo(f"warning: {r['job']} {r['start']}..{r['end']} failed, but the job is "
                       "no longer in jobs/: not rerun", err=True)
    if not runs:
        click.echo("nothing to rerun")
        return
    from ..celery_app import Trigger, send_run

    tasks = [(f"{r['job']} {r['start']}..{r['end']}",
              send_run(app.celery, registry.get(r["job"]),
                       Interval(parse_fmt(r["start"]), parse_fmt(r["end"])), Trigger.RERUN))
             for r in runs]
    if no_wait:
        return _enqueued(app, tasks, as_json)
    click.echo(f"rerunning {len(tasks)} interval(s)", err=True)
    results, errors = _wait(app, tasks)
    for line in errors:
        click.echo(line, err=True)
    rows = _runs_done(app, results)
    if as_json:
        _dump(rows)
    else:
        for row in rows:
            _print_run(row)
    if errors:
        raise JankycronError(f"{len(errors)} of {len(tasks)} rerun(s) failed; "
                             "see jankycron history")


# -------------------------------------------------------------------------------------- dev
@command(cli, "dev")
@click.option("--port", default=5000, show_default=True, help="The web app's port.")
def dev_cmd(app: App, port: int) -> None:
    """Web + worker + beat in one command, for one machine. Without JANKYCRON_BROKER_URL the
    broker is kombu's filesystem:// transport under ./var (no Redis needed) and beat keeps its
    schedule in ./var/celerybeat-schedule. Ctrl-C stops all of them."""
    from ..celery_app import OPS_QUEUE, RUNS_QUEUE, make_celery

    env = dict(os.environ)
    if not env.get("JANKYCRON_BROKER_URL"):
        env["JANKYCRON_BROKER_URL"] = "filesystem://"
    make_celery(Settings.from_env(env), app.registry)  # a bad setting: one line, before starting
    python = sys.executable
    procs = {"worker+beat": [python, "-m", "celery", "-A", "jankycron.worker", "worker", "-B",
                             "--concurrency", "1", "--loglevel", "INFO",
                             "--queues", f"{RUNS_QUEUE},{OPS_QUEUE}"]}
    try:
        import jankycron.web  # noqa: F401
    except ImportError as e:
        click.echo(f"web: not started ({e})", err=True)
    else:
        procs["web"] = [python, "-m", "flask", "--app", "jankycron.web:create_app", "run",
                        "--port", str(port)]
    running = {name: subprocess.Popen(argv, env=env) for name, argv in procs.items()}
    click.echo(f"jankycron dev: {', '.join(running)} (broker {redact(env['JANKYCRON_BROKER_URL'])}"
               f"{f', web on http://127.0.0.1:{port}' if 'web' in running else ''}); "
               "Ctrl-C stops", err=True)
    code = 0
    try:
        while all(p.poll() is None for p in running.values()):
            time.sleep(0.5)
        name, proc = next((n, p) for n, p in running.items() if p.poll() is not None)
        code = proc.returncode or 1
        click.echo(f"{name} exited ({proc.returncode}); stopping the others", err=True)
    except KeyboardInterrupt:
        click.echo("stopping", err=True)
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in running.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    if code:
        raise click.exceptions.Exit(code)

