"""The operator's CLI (click). Expected failures print one line on stderr and exit 1."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import update_wrapper
from typing import Any

import click

from . import migrate as migrations
from .config import Settings, redact
from .discovery import Registry, discover
from .errors import ConfigError, JankycronError
from .runner import Context, describe, load_tables, replay, run_job
from .schedule import Interval, fmt, parse_day

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
         "file": os.path.relpath(j.source_file) if j.source_file else None}
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


def _require_local(local: bool) -> None:
    if not local:
        raise ConfigError("running through the Celery workers is not built yet; "
                          "add --local to run in this process")


@command(cli, "run")
@click.argument("job_name", metavar="JOB")
@click.option("--date", "day", help="The interval that starts on this day (YYYY-MM-DD, or "
              "YYYY-MM-DDTHH:MM for jobs that run several times a day). Default: the latest "
              "complete interval.")
@click.option("--local", is_flag=True, help="Run in this process instead of on the workers.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def run_cmd(app: App, job_name: str, day: str | None, local: bool, as_json: bool) -> None:
    """Run JOB for one interval and load its data."""
    job = app.registry.get(job_name)
    _require_local(local)
    interval = (job.interval_on(parse_day(day)) if day
                else job.schedule.latest_complete(datetime.now(UTC)))
    try:
        row = run_job(app.ctx, job, interval)
    except JankycronError:
        raise
    except Exception as e:  # the job's own bug: recorded in the ledger, one line here
        raise JankycronError(f"job {job.name} failed: {describe(e, job)}") from None
    if as_json:
        return _dump([row])
    _print_run(row)


@command(cli, "backfill")
@click.argument("job_name", metavar="JOB")
@click.option("--start", "start", required=True, help="First day (YYYY-MM-DD).")
@click.option("--end", "end", required=True, help="Last day, inclusive (YYYY-MM-DD).")
@click.option("--local", is_flag=True, help="Run in this process instead of on the workers.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def backfill_cmd(app: App, job_name: str, start: str, end: str, local: bool,
                 as_json: bool) -> None:
    """Run JOB for every interval starting between --start and --end, oldest first.

    All intervals are extracted and staged first, then loaded in one merge per table.
    """
    job = app.registry.get(job_name)
    _require_local(local)
    first, last = parse_day(start), parse_day(end)
    first_t = datetime(first.year, first.month, first.day, tzinfo=UTC)
    until = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    if until <= first_t:
        raise ConfigError(f"--end {end} is before --start {start}")
    intervals: list[Interval] = list(job.schedule.intervals_starting(first_t, until))
    if not intervals:
        raise ConfigError(f"no interval of {job.schedule.expr!r} starts in {start}..{end}")
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
    rows = [app.ctx.ledger.run(r) for r in run_ids]
    if as_json:
        _dump(rows)
    else:
        for row in rows:
            _print_run(row)
    if failed:
        raise JankycronError(f"{failed} of {len(intervals)} interval(s) failed; "
                             f"see jankycron history {job.name}")


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
        now = datetime.now(UTC)
        for t in list(todo):
            last = app.ctx.ledger.last_load(t)
            wait = timedelta(seconds=app.settings.load_interval_of(t))
            retry = app.ctx.ledger.retry_at(t)
            if retry and now < retry[0]:
                click.echo(f"{t}: backing off after {retry[1]} failed load(s) until "
                           f"{fmt(retry[0])}; last error: {retry[2]}", err=True)
                del todo[t]
            elif last and now - last < wait:
                click.echo(f"{t}: not due; last load {fmt(last)}, next after "
                           f"{fmt(last + wait)}", err=True)
                del todo[t]
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
def migrate_cmd(app: App, path: str) -> None:
    """Apply the warehouse DDL migrations that have not run yet, in order."""
    applied = migrations.apply(app.ctx.warehouse, path)
    for name in applied:
        click.echo(f"applied {name}")
    if not applied:
        click.echo("warehouse is up to date")


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
