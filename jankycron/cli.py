"""The operator's CLI (click). Expected failures print one line on stderr and exit 1."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cached_property, update_wrapper
from typing import Any

import click

from . import migrate as migrations
from .config import Settings, redact
from .discovery import Registry, discover
from .errors import ConfigError, JankycronError
from .job import Job
from .runner import Context, describe, due_tables, load_tables, replay, run_job
from .schedule import Interval, fmt, parse_day, parse_fmt

log = logging.getLogger(__name__)


class App:
    """What every command needs: settings, the discovered jobs, the connections."""

    def __init__(self, environ: dict[str, str]):
        self.settings = Settings.from_env(environ)
        self._registry: tuple[Registry, list] | None = None
        self.ctx = Context(self.settings, progress=lambda m: click.echo(m, err=True))

    def discovered(self) -> tuple[Registry, list]:
        if self._registry is None:
            self._registry = discover(self.settings.jobs_path)
        return self._registry

    @cached_property
    def celery(self) -> Any:
        """The Celery app, to enqueue to the workers (built on first use; the broker is
        checked so that an unreachable one is one clear line, not a hang)."""
        from .celery_app import check_broker, make_celery

        app = make_celery(self.settings, self.discovered()[0])
        check_broker(app, self.settings)
        return app

    @property
    def registry(self) -> Registry:
        registry, errors = self.discovered()
        for e in errors:  # a broken job file never stops the others; say so once
            click.echo(f"warning: skipped {e}", err=True)
        return registry


def command(group: click.Group, *args: Any, **kwargs: Any) -> Callable:
    """A group command that receives the App and closes its connections afterwards."""

    def decorate(fn: Callable) -> Callable:
        @click.pass_context
        def wrapper(cctx: click.Context, **params: Any) -> Any:
            app: App = cctx.obj
            try:
                return fn(app, **params)
            finally:
                app.ctx.close()

        return group.command(*args, **kwargs)(update_wrapper(wrapper, fn))

    return decorate


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress at INFO level.")
@click.pass_context
def cli(cctx: click.Context, verbose: bool) -> None:
    """jankycron: scheduled batch jobs, every record loaded exactly once."""
    # Without -v the CLI itself says what matters (progress, results, one error line); the
    # log (with tracebacks of job errors) is for -v and for the workers.
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cctx.obj = App(dict(os.environ))


def _dump(rows: list[dict[str, Any]]) -> None:
    click.echo(json.dumps(rows, indent=2, ensure_ascii=False))


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


# ------------------------------------------------------------------------------------- jobs
@command(cli, "jobs")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def jobs_cmd(app: App, as_json: bool) -> None:
    """Every job: schedule, tables, next run, last run's status."""
    now = datetime.now(UTC)
    last = app.ctx.ledger.last_runs()
    rows = [
        {"name": j.name, "schedule": j.schedule.expr, "tables": list(j.tables),
         "next_run": fmt(j.schedule.next_fire(now)),
         "last_status": last.get(j.name, {}).get("status"), "owner": j.owner,
         "file": os.path.relpath(j.source_file) if j.source_file else None,
         "catchup": j.catchup}
        for j in app.registry
    ]
    if as_json:
        return _dump(rows)
    _table([[r["name"], r["schedule"], ",".join(r["tables"]), r["next_run"],
             r["last_status"] or "-"] for r in rows],
           ["JOB", "SCHEDULE", "TABLES", "NEXT RUN", "LAST STATUS"])


# ------------------------------------------------------------------------------------ check
@command(cli, "check")
def check_cmd(app: App) -> None:
    """Check job files, configuration and every connection; exit 1 on any problem."""
    problems = 0

    def report(ok: bool, what: str, detail: str = "") -> None:
        nonlocal problems
        problems += not ok
        click.echo(f"{'ok  ' if ok else 'FAIL'}  {what}" + (f": {detail}" if detail else ""))

    registry, errors = app.discovered()
    for e in errors:
        report(False, f"job file {e.path}", e.message)
    report(bool(len(registry)), f"{len(registry)} job(s) in {app.settings.jobs_path}")
    s = app.settings
    from .alerts import check_route

    for job in registry:
        for route in job.alert:
            error = check_route(route, s)
            if error:
                report(False, f"job {job.name}", error)
    for what, url, probe in (
        ("ledger", s.state_url, lambda: app.ctx.ledger),
        ("object store", s.store_url, lambda: app.ctx.store.check()),
        ("warehouse", s.warehouse_url, lambda: app.ctx.warehouse.check()),
        *([("lock store", s.lock_url, lambda: app.ctx.loader.locks.ping())] if s.lock_url
          else []),
    ):
        try:
            warnings = probe()
            report(True, f"{what} {redact(url)}")
            for w in warnings if isinstance(warnings, list) else []:
                click.echo(f"warn  {what}: {w}")
        except JankycronError as e:
            report(False, f"{what} {redact(url)}", str(e))
    if "warehouse" in app.ctx.__dict__:
        for table, key in sorted(registry.tables().items()):
            try:
                names = {c.name for c in app.ctx.warehouse.columns(table)}
                missing = [k for k in key if k not in names]
                report(not missing, f"table {table}",
                       f"merge key column {', '.join(missing)} missing" if missing else "")
            except JankycronError as e:
                report(False, f"table {table}", str(e))
    if problems:
        raise click.exceptions.Exit(1)


# -------------------------------------------------------------------------------------- run
def _print_run(row: dict[str, Any]) -> None:
    line = (f"{row['job']} {row['start']}..{row['end']}: {row['status']}; "
            f"{row['rows_extracted']:,} extracted, {row['rows_loaded']:,} loaded, "
            f"{row['rows_rejected']:,} dead-lettered")
    click.echo(line)
    if row["dropped_keys"]:
        dropped = ", ".join(f"{k} ({n:,})" for k, n in sorted(row["dropped_keys"].items()))
        click.echo(f"  keys with no column, dropped: {dropped}")
    if row["rows_rejected"]:
        click.echo(f"  see: jankycron deadletters --run {row['run_id']}")


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


def _wait(app: App, tasks: list[tuple[str, Any]]) -> tuple[list[Any], list[str]]:
    """Wait for enqueued tasks, printing each one's progress on stderr as it changes. Returns
    the results of those that succeeded (in order) and one line per failure."""
    shown: dict[str, str] = {res.id: "queued" for _, res in tasks}
    secrets = app.settings.secrets()
    results: dict[str, Any] = {}
    errors: list[str] = []
    todo = list(tasks)
    try:
        while todo:
            for label, res in list(todo):
                done = res.ready()
                note = _progress(app, res)
                if shown.get(res.id) != note and not (done and note in ("done", "failed")):
                    shown[res.id] = note
                    for secret in secrets:  # a job's own error text may hold anything
                        note = note.replace(secret, "***")
                    click.echo(f"{label}: {note}", err=True)
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
              "complete interval.")
@click.option("--local", is_flag=True, help="Run in this process instead of on the workers.")
@click.option("--no-wait", is_flag=True, help="Return once enqueued, printing the task id.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def run_cmd(app: App, job_name: str, day: str | None, local: bool, no_wait: bool,
            as_json: bool) -> None:
    """Run JOB for one interval and load its data: on the workers (waiting for the outcome,
    with progress on stderr), or in this process with --local."""
    job = app.registry.get(job_name)
    interval = (job.interval_on(parse_day(day)) if day
                else job.schedule.latest_complete(datetime.now(UTC)))
    if local:
        try:
            row = run_job(app.ctx, job, interval)
        except JankycronError:
            raise
        except Exception as e:  # the job's own bug: recorded in the ledger, one line here
            raise JankycronError(f"job {job.name} failed: {describe(e, job)}") from None
    else:
        from .celery_app import Trigger, send_run

        task = (f"{job.name} {interval}", send_run(app.celery, job, interval, Trigger.CLI))
        if no_wait:
            return _enqueued(app, [task], as_json)
        click.echo(f"{task[0]}: queued (task {task[1].id})", err=True)
        results, errors = _wait(app, [task])
        if errors:
            raise JankycronError(errors[0])
        row = _runs_done(app, results)[0]
    if as_json:
        return _dump([row])
    _print_run(row)


@command(cli, "backfill")
@click.argument("job_name", metavar="JOB")
@click.option("--start", "start", required=True, help="First day (YYYY-MM-DD).")
@click.option("--end", "end", required=True, help="Last day, inclusive (YYYY-MM-DD).")
@click.option("--local", is_flag=True, help="Run in this process instead of on the workers.")
@click.option("--no-wait", is_flag=True, help="Return once enqueued, printing the task ids.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def backfill_cmd(app: App, job_name: str, start: str, end: str, local: bool, no_wait: bool,
                 as_json: bool) -> None:
    """Run JOB for every interval starting between --start and --end, oldest first.

    All intervals are extracted and staged first, then loaded in one merge per table.
    """
    job = app.registry.get(job_name)
    first, last = parse_day(start), parse_day(end)
    first_t = datetime(first.year, first.month, first.day, tzinfo=UTC)
    until = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    if until <= first_t:
        raise ConfigError(f"--end {end} is before --start {start}")
    intervals: list[Interval] = list(job.schedule.intervals_starting(first_t, until))
    if not intervals:
        raise ConfigError(f"no interval of {job.schedule.expr!r} starts in {start}..{end}")
    if local:
        rows, failed = _backfill_local(app, job, intervals)
    else:
        from .celery_app import Trigger, send_load, send_run

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


def _backfill_local(app: App, job: Job, intervals: list[Interval]
                    ) -> tuple[list[dict[str, Any]], int]:
    run_ids, failed = [], 0
    for i, interval in enumerate(intervals, 1):
        try:
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
    since_t = None
    if since:
        day = parse_day(since)
        since_t = day if isinstance(day, datetime) else \
            datetime(day.year, day.month, day.day, tzinfo=UTC)
    registry = app.registry
    runs = []
    for r in app.ctx.ledger.failed_runs(since_t):
        if r["job"] in registry:
            runs.append(r)
        else:
            click.echo(f"warning: {r['job']} {r['start']}..{r['end']} failed, but the job is "
                       "no longer in jobs/: not rerun", err=True)
    if not runs:
        click.echo("nothing to rerun")
        return
    from .celery_app import Trigger, send_run

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


# ------------------------------------------------------------------------------------- load
@command(cli, "load")
@click.argument("table", required=False)
@click.option("--local", is_flag=True, help="Load in this process (the only way for now).")
@click.option("--dry-run", is_flag=True, help="Print the plan (batches, manifests, SQL) only.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan as JSON.")
@click.option("--due", is_flag=True, help="Only tables whose load interval has passed since "
              "their last load (JANKYCRON_LOAD_INTERVAL[S]); for a periodic loader.")
def load_cmd(app: App, table: str | None, local: bool, dry_run: bool, as_json: bool,
             due: bool) -> None:
    """Load pending staged batches now (all tables, or TABLE).

    Every pending batch of a table is merged in one transaction. Run periodically with --due,
    a table is loaded at most once per its load interval, so that many small runs make few
    commits (Redshift's commit queue wants that).
    """
    tables = app.registry.tables()
    if table:
        if table not in tables:
            raise ConfigError(f"no job feeds table {table!r}")
        tables = {table: tables[table]}
    pending = {b.table for b in app.ctx.ledger.pending_batches()}
    todo = {t: k for t, k in tables.items() if t in pending}
    if due:
        todo, waiting = due_tables(app.ctx, todo)
        for line in waiting:
            click.echo(line, err=True)
    if dry_run:
        plans = [app.ctx.loader.plan(t, k) for t, k in todo.items()]
        if as_json:
            return _dump(plans)
        for p in plans:
            _print_plan(p)
    if not todo:
        click.echo("nothing due" if due and pending else "nothing pending")
        return
    if dry_run:
        return
    for r in load_tables(app.ctx, todo):
        click.echo(f"{r.table}: {r.batches} batch(es), {r.rows_loaded:,} loaded, "
                   f"{r.rows_rejected:,} dead-lettered")


def _print_plan(plan: dict[str, Any]) -> None:
    click.echo(f"{plan['table']} (key {', '.join(plan['key'])}): {len(plan['batches'])} "
               f"batch(es), {plan['rows']:,} rows in one transaction")
    for b in plan["batches"]:
        click.echo(f"  {b['id']}  {b['job']}  {b['start']}..{b['end']}  {b['rows']:,} rows, "
                   f"{b['parts']} part(s)  {b['manifest']}")
    for bid in plan["superseded"]:
        click.echo(f"  {bid}  superseded by a newer run of the same interval: not loaded")
    for stmt in plan["sql"]:
        click.echo(f"    {stmt};")


# ---------------------------------------------------------------------------------- history
@command(cli, "history")
@click.argument("job_name", metavar="[JOB]", required=False)
@click.option("--limit", default=50, show_default=True, help="How many runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history_cmd(app: App, job_name: str | None, limit: int, as_json: bool) -> None:
    """Runs: job, interval, status, rows staged / loaded / rejected, times, error."""
    rows = app.ctx.ledger.history(job_name, limit)
    if as_json:
        return _dump(rows)
    if not rows:
        click.echo("no runs yet")
        return
    _table([[r["job"], r["start"], r["end"], r["status"], f"{r['rows_staged']:,}",
             f"{r['rows_loaded']:,}", f"{r['rows_rejected']:,}", r["started_at"],
             (r["error"] or "")[:70]] for r in rows],
           ["JOB", "START", "END", "STATUS", "STAGED", "LOADED", "REJECTED", "STARTED", "ERROR"])


# ------------------------------------------------------------------------------ deadletters
@command(cli, "deadletters")
@click.argument("words", nargs=-1, metavar="[TABLE] | replay TABLE")
@click.option("--run", "run_id", help="Only this run's dead letters.")
@click.option("--limit", default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def deadletters_cmd(app: App, words: tuple[str, ...], run_id: str | None, limit: int,
                    as_json: bool) -> None:
    """Records that did not land, with the reason (all tables, or TABLE).

    `deadletters replay TABLE [--run RUN]` stages them again (after the table was widened,
    say) and loads them: each lands once, and leaves the list; one that still does not fit
    comes back with the new reason.
    """
    if words[:1] == ("replay",):
        if len(words) != 2:
            raise click.UsageError("usage: jankycron deadletters replay TABLE [--run RUN]")
        return _replay(app, words[1], run_id, as_json)
    if len(words) > 1:
        raise click.UsageError("give one TABLE, or: replay TABLE")
    rows = app.ctx.ledger.deadletters(words[0] if words else None, run_id, limit)
    if as_json:
        return _dump(rows)
    if not rows:
        click.echo("no dead letters")
        return
    _table([[r["table"], r["job"], r["run_id"], str(r["line"]), r["reason"][:80],
             r["record"][:60]] for r in rows],
           ["TABLE", "JOB", "RUN", "LINE", "REASON", "RECORD"])


def _replay(app: App, table: str, run_id: str | None, as_json: bool) -> None:
    tables = app.registry.tables()
    if table not in tables:
        raise ConfigError(f"no job feeds table {table!r}")
    runs, skipped = replay(app.ctx, table, tables[table], run_id)
    if skipped:
        click.echo(f"{skipped} dead letter(s) cannot be replayed: the job yielded values JSON "
                   "cannot hold exactly; fix the job and rerun their interval", err=True)
    if as_json:
        return _dump(runs)
    if not runs:
        click.echo("nothing to replay")
    for row in runs:
        _print_run(row)


# ---------------------------------------------------------------------------------- migrate
@command(cli, "migrate")
@click.option("--path", "path", default="warehouse", show_default=True,
              help="Folder of NNNN_name.sql files.")
@click.option("--allow-destructive", is_flag=True,
              help="Apply migrations with DROP, TRUNCATE, DELETE or ALTER ... DROP.")
@click.option("--dry-run", is_flag=True, help="Print the SQL this warehouse would run.")
def migrate_cmd(app: App, path: str, allow_destructive: bool, dry_run: bool) -> None:
    """Apply the warehouse DDL migrations that have not run yet, in order.

    Files are written for Redshift; PostgreSQL and DuckDB get their local form."""
    if dry_run:
        for name, sql in migrations.plan(app.ctx.warehouse, path):
            click.echo(f"-- {name}\n{sql.rstrip()}\n")
        return
    applied = migrations.apply(app.ctx.warehouse, path, allow_destructive)
    for name in applied:
        click.echo(f"applied {name}")
    if not applied:
        click.echo("warehouse is up to date")


# -------------------------------------------------------------------------------------- dev
@command(cli, "dev")
@click.option("--port", default=5000, show_default=True, help="The web app's port.")
def dev_cmd(app: App, port: int) -> None:
    """Web + worker + beat in one command, for one machine. Without JANKYCRON_BROKER_URL the
    broker is kombu's filesystem:// transport under ./var (no Redis needed) and beat keeps its
    schedule in ./var/celerybeat-schedule. Ctrl-C stops all of them."""
    from .celery_app import OPS_QUEUE, RUNS_QUEUE, make_celery

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


def main() -> None:
    """Entry point: expected errors are one line on stderr, exit 1; no secrets in output."""
    try:
        code = cli.main(standalone_mode=False)  # returns the code of a click Exit
    except JankycronError as e:
        message = str(e)
        try:
            for secret in Settings.from_env(os.environ).secrets():
                message = message.replace(secret, "***")
        except JankycronError:
            pass
        click.echo(f"error: {message}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)
