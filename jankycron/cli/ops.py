"""Inspection and maintenance commands: jobs, check, load, history, deadletters, migrate."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import click

from .. import migrate as migrations
from ..config import redact
from ..errors import ConfigError, JankycronError, TerminalError
from ..runner import due_tables, load_tables, replay
from ..schedule import fmt
from . import App, _dump, _print_run, _table, cli, command

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- jobs
@command(cli, "jobs")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def jobs_cmd(app: App, as_json: bool) -> None:
    """Every job: schedule, tables, next run, last run's status."""
    now = datetime.now(UTC)
    last = app.ctx.ledger.last_runs()
    rows = []
    for j in app.registry:
        try:  # one job whose schedule cannot be evaluated must not hide the others
            next_run: str | None = fmt(j.schedule.next_fire(now))
        except Exception as e:
            next_run = None
            click.echo(f"warning: job {j.name}: schedule {j.schedule.expr!r}: "
                       f"{type(e).__name__}: {e}", err=True)
        rows.append(
            {"name": j.name, "schedule": j.schedule.expr, "tables": list(j.tables),
             "next_run": next_run,
             "last_status": last.get(j.name, {}).get("status"), "owner": j.owner,
             "file": os.path.relpath(j.source_file) if j.source_file else None,
             "catchup": j.catchup})
    if as_json:
        return _dump(rows)
    _table([[r["name"], r["schedule"], ",".join(r["tables"]), r["next_run"] or "-",
             r["last_status"] or "-"] for r in rows],
           ["JOB", "SCHEDULE", "TABLES", "NEXT RUN", "LAST STATUS"])


# ------------------------------------------------------------------------------------ check
@command(cli, "check")
def check_cmd(app: App) -> None:
    """Check job files, configuration and every connection; exit 1 on any problem."""
    problems = 0
    scrub = app.settings.scrubber()  # a driver's message may quote what libpq parsed

    def report(ok: bool, what: str, detail: str = "") -> None:
        nonlocal problems
        problems += not ok
        click.echo(scrub(f"{'ok  ' if ok else 'FAIL'}  {what}" + (f": {detail}" if detail
                                                                    else "")))

    registry, errors = app.discovered()
    for e in errors:
        report(False, f"job file {e.path}", e.message)
    report(bool(len(registry)), f"{len(registry)} job(s) in {app.settings.jobs_path}")
    s = app.settings
    from ..alerts import check_route

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
    if dry_run:  # tables with quarantined batches too: the plan says which and why
        shown = pending | {b["table"] for b in app.ctx.ledger.corrupt_batches()}
        todo = {t: k for t, k in tables.items() if t in shown}
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
    quarantined = []
    for r in load_tables(app.ctx, todo):
        replaced = (f", {r.rows_replaced:,} replaced by a later record with the same key"
                    if r.rows_replaced else "")
        click.echo(f"{r.table}: {r.batches} batch(es), {r.rows_loaded:,} loaded, "
                   f"{r.rows_rejected:,} dead-lettered{replaced}"
                   + (f", {len(r.quarantined)} quarantined" if r.quarantined else ""))
        quarantined += r.quarantined
    if quarantined:
        raise TerminalError(f"{len(quarantined)} batch(es) quarantined, not loaded: "
                            f"{quarantined[0]} (see `jankycron load --dry-run`)")


@command(cli, "orphans")
@click.option("--remove", is_flag=True, help="Delete them (under Celery the sweeper does).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def orphans_cmd(app: App, remove: bool, as_json: bool) -> None:
    """Staged objects no batch refers to (never loadable): those of runs that ended failed,
    lost or retried more than JANKYCRON_ORPHAN_GRACE ago without recording their batch. Lists
    them; --remove deletes them. Recorded batches and dead letters are never touched."""
    from .. import housekeeping

    args = (app.ctx.ledger, app.ctx.store, app.registry, app.settings, datetime.now(UTC))
    found = housekeeping.remove_orphans(*args) if remove else housekeeping.find_orphans(*args)[0]
    rows = [{"run_id": o.run_id, "job": o.job, "table": o.table, "status": o.status,
             "ended": o.ended, "objects": len(o.keys), "removed": remove} for o in found]
    if as_json:
        return _dump(rows)
    if not rows:
        click.echo("no orphaned staged objects")
        return
    _table([[r["job"], r["table"], r["run_id"], r["status"], r["ended"], str(r["objects"])]
            for r in rows], ["JOB", "TABLE", "RUN", "STATUS", "ENDED", "OBJECTS"])
    if remove:
        click.echo(f"removed {sum(r['objects'] for r in rows):,} object(s)")


def _print_plan(plan: dict[str, Any]) -> None:
    click.echo(f"{plan['table']} (key {', '.join(plan['key'])}): {len(plan['batches'])} "
               f"batch(es), {plan['rows']:,} rows in one transaction")
    for b in plan["batches"]:
        click.echo(f"  {b['id']}  {b['job']}  {b['start']}..{b['end']}  {b['rows']:,} rows, "
                   f"{b['parts']} part(s)  {b['manifest']}")
    for bid in plan["superseded"]:
        click.echo(f"  {bid}  superseded by a newer run of the same interval: not loaded")
    for b in plan["batches"]:
        if b["damaged"]:
            click.echo(f"  {b['id']}  will be quarantined: {b['damaged']}")
    for q in plan["quarantined"]:
        click.echo(f"  {q['id']}  {q['job']}  {q['start']}..{q['end']}  quarantined (corrupt), "
                   f"not loaded until a rerun of the interval: {q['error']}")
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
    scrub = app.settings.scrubber()  # stored scrubbed; this covers rows of older versions
    rows = [{**r, "error": scrub(r["error"]) if r["error"] else r["error"]} for r in rows]
    if as_json:
        return _dump(rows)
    if not rows:
        click.echo("no runs yet")
        return
    _table([[r["job"], r["start"], r["end"], r["status"], f"{r['rows_staged']:,}",
             f"{r['rows_loaded']:,}", f"{r['rows_rejected']:,}", f"{r['rows_replaced']:,}",
             r["started_at"], (r["error"] or "")[:70]] for r in rows],
           ["JOB", "START", "END", "STATUS", "STAGED", "LOADED", "REJECTED", "REPLACED",
            "STARTED", "ERROR"])


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


