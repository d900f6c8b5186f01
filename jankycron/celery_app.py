"""Celery at the edge: ``make_celery(settings, registry)`` builds the app, its tasks and beat's
schedule. Nothing is built at import; ``jankycron.worker`` is the one module that builds an
app, for ``celery -A jankycron.worker worker`` and ``... beat``.

The tasks are thin adapters; the work is in ``runner`` and ``housekeeping``:

- ``jankycron.run``: one run of a job for one interval (queue ``jankycron.runs``). A
  ``TransientError`` is retried with exponential backoff and jitter up to the job's
  ``retries``, each attempt a run in the ledger; any other error fails the run at once. One
  alert per failed run, after its last attempt. Runs of the same job and interval never
  overlap (a Redis lock per interval).
- on queue ``jankycron.ops``, from beat every ``JANKYCRON_HEARTBEAT``: ``jankycron.fire`` per
  job (enqueue its due intervals by its catch-up policy), ``jankycron.load`` per table (load
  pending batches when due), ``jankycron.sweep`` (lost runs) and ``jankycron.missed``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from celery.result import AsyncResult
from kombu import Exchange, Queue

from . import housekeeping
from .config import Settings, redact
from .discovery import Registry
from .errors import (
    ConfigError,
    JankycronError,
    LedgerUnavailable,
    TerminalError,
    TransientError,
    UnknownJob,
    WarehouseError,
)
from .job import Job
from .ledger import RunStatus
from .load.lock import LockBusy, TableLock
from .runner import Context, describe, due_tables, load_tables, run_job
from .schedule import Interval, fmt, parse_fmt

log = logging.getLogger(__name__)

RUN, FIRE, LOAD, SWEEP, MISSED = ("jankycron.run", "jankycron.fire", "jankycron.load",
                                  "jankycron.sweep", "jankycron.missed")
RUNS_QUEUE, OPS_QUEUE = "jankycron.runs", "jankycron.ops"
HARD_LIMIT_GRACE = housekeeping.HARD_KILL_AFTER  # between a job's soft time limit and the hard kill
MAX_DELIVERIES = 3  # a task whose worker died this often mid-run is not run again (poison)


class Trigger:
    """Who asked for a run. A scheduled trigger that finds its interval running is dropped
    (the running one covers it); the others wait for it, then run."""

    SCHEDULE = "schedule"
    CLI = "cli"
    BACKFILL = "backfill"
    RERUN = "rerun"
    RECOVER = "recover"  # the sweeper, after a lost run


class RunFailed(TerminalError):
    """A run failed for good (the task's outcome; its text is the run's one-line error)."""


def transient(e: BaseException) -> bool:
    """Worth retrying: a TransientError, or what a job that calls ``requests`` itself gets for
    a network error, a 5xx or a 429 (jankycron.sources.http raises TransientError for those)."""
    if isinstance(e, TransientError):
        return True
    import requests

    if isinstance(e, requests.ConnectionError | requests.Timeout):
        return True
    status = getattr(getattr(e, "response", None), "status_code", None)
    return isinstance(e, requests.HTTPError) and status is not None and (
        status >= 500 or status == 429)


def make_alerts(settings: Settings) -> Any:
    """The alert sender (the seam tests use to record alerts)."""
    from .alerts import Alerts

    return Alerts(settings)


def _bind_sentry(job: Job, run: dict[str, Any]) -> None:
    from .alerts import bind_sentry

    bind_sentry(job, run)


# ------------------------------------------------------------------------------ the app
def _tuning(name: str) -> dict[str, Any]:
    """Celery's settings: the package's own (``jankycron.celery_defaults``: late acks, reject
    on worker lost, prefetch 1, the visibility timeout), then what a ``celeryconfig`` module
    overrides, if there is one: importable (``PYTHONPATH``, or the current folder where Python
    puts it there), else ``./celeryconfig.py`` (a console script does not have the current
    folder on ``sys.path``). A dict setting (``broker_transport_options``) is merged key by
    key; ``visibility_timeout`` alone sets both transport options' timeouts."""
    from . import celery_defaults

    conf = _settings_of(celery_defaults)
    module = _override(name)
    if module is None:
        return conf
    override = _settings_of(module)
    if "visibility_timeout" in override:
        for key in ("broker_transport_options", "result_backend_transport_options"):
            conf[key] = {**conf[key], "visibility_timeout": override["visibility_timeout"]}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(conf.get(key), dict):
            value = {**conf[key], **value}
        conf[key] = value
    log.info("celery settings: jankycron's, overridden by %s (%s)",
             getattr(module, "__file__", name), ", ".join(sorted(override)) or "nothing")
    return conf


def _settings_of(module: ModuleType) -> dict[str, Any]:
    """A config module's settings: its public names, less what it imported."""
    return {k: v for k, v in vars(module).items()
            if not k.startswith("_") and not isinstance(v, ModuleType) and not callable(v)}


def _override(name: str) -> ModuleType | None:
    """The ``name`` module that overrides Celery settings, or None; a broken one is a
    ``ConfigError`` (one line)."""
    try:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
        path = Path.cwd() / f"{name}.py"
        if not path.is_file():
            return None
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{name}.py cannot be read: {type(e).__name__}: {e}") from None


def _transport(settings: Settings) -> dict[str, Any]:
    """Broker-dependent settings: Redis (production; RedBeat and its lock), or kombu's
    ``filesystem://`` transport (``jankycron dev``: one host, no server)."""
    scheme = urlsplit(settings.broker_url).scheme
    if scheme in ("redis", "rediss"):
        return {
            "result_backend": settings.broker_url,
            "beat_scheduler": "jankycron.beat.Beat",  # RedBeat, surviving a Redis restart
            "redbeat_redis_url": settings.broker_url,
            "redbeat_redis_options": {},
            "redbeat_key_prefix": "jankycron:beat:",
            "redbeat_lock_key": "jankycron:beat:lock",
            # The active beat renews the lock every tick. A standby tries it every heartbeat
            # (RedBeat polls at beat_max_loop_interval): it fires at most 4 + 1 = 5 heartbeats
            # after the active one died (tests/test_longdays.py measures it).
            "redbeat_lock_timeout": max(1, int(4 * settings.heartbeat)),
        }
    if scheme == "filesystem":
        var = Path(urlsplit(settings.broker_url).path or "var/broker").resolve()
        queue, results = var / "queue", var.parent / "results"
        for folder in (queue, results):
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "broker_transport_options": {"data_folder_in": str(queue),
                                         "data_folder_out": str(queue)},
            "result_backend": results.as_uri(),
            "beat_schedule_filename": str(var.parent / "celerybeat-schedule"),
        }
    raise ConfigError(f"JANKYCRON_BROKER_URL={redact(settings.broker_url)}: expected redis://, "
                      "rediss:// or filesystem:// (jankycron dev)")


def make_celery(settings: Settings, registry: Registry, config: str = "celeryconfig") -> Celery:
    """The Celery app for these settings and jobs: tuning (the package's, overridden by a
    ``celeryconfig.py``), the tasks, and beat's schedule (every job and table, the sweeper and
    the missed-run check)."""
    app = Celery("jankycron", set_as_current=False)
    app.config_from_object(_tuning(config))
    app.conf.update(
        broker_url=settings.broker_url,
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q)
                     for q in (RUNS_QUEUE, OPS_QUEUE)],
        task_default_queue=RUNS_QUEUE,
        task_routes={RUN: {"queue": RUNS_QUEUE}, "jankycron.*": {"queue": OPS_QUEUE}},
        beat_max_loop_interval=settings.heartbeat,
        beat_schedule=beat_schedule(settings, registry),
        **_transport(settings),
    )
    visibility = app.conf.broker_transport_options.get("visibility_timeout")
    longest = max((j.timeout for j in registry), default=0) + HARD_LIMIT_GRACE
    if visibility and longest >= visibility:
        log.warning("a job may run %.0fs, longer than the broker's visibility timeout (%ss): "
                    "raise visibility_timeout in celeryconfig.py, or Redis redelivers the task "
                    "mid-run",
                    longest, visibility)
    ops = Ops(app, settings, registry)
    quiet_ticks()

    @app.task(bind=True, name=RUN, shared=False, max_retries=None, throws=(RunFailed,))
    def run(task: Any, **kwargs: Any) -> dict[str, Any]:
        return ops.run(task, **kwargs)

    @app.task(name=FIRE, shared=False, ignore_result=True)
    def fire(job: str) -> None:
        ops.fire(job)

    # Beat's ticks store no result (nobody reads one: ~46k keys a day otherwise); send_load
    # (the CLI waits for a forced load) asks for its result.
    @app.task(name=LOAD, shared=False, ignore_result=True, throws=(RunFailed,))
    def load(table: str, force: bool = False) -> dict[str, Any]:
        return ops.load(table, force)

    @app.task(name=SWEEP, shared=False, ignore_result=True)
    def sweep() -> None:
        ops.sweep()

    @app.task(name=MISSED, shared=False, ignore_result=True)
    def missed() -> None:
        ops.missed()

    return app


TICKS = (FIRE, LOAD, SWEEP, MISSED)  # beat sends each of them every heartbeat


class QuietTicks(logging.Filter):
    """Celery's per-task INFO lines (beat's "Sending due task", a worker's "received" and
    "succeeded") for beat's tick tasks are DEBUG: ~150 lines a minute of nothing on an idle
    fleet otherwise. Their warnings and errors, and what a tick does, are logged as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        args = record.args
        name = args.get("name") if isinstance(args, dict) else (
            args[1] if isinstance(args, tuple) and len(args) == 2 else None)
        if name not in TICKS:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def quiet_ticks() -> None:
    """Install QuietTicks on the loggers of Celery's per-task lines (once per process)."""
    for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietTicks) for f in logger.filters):
            logger.addFilter(QuietTicks())


def beat_schedule(settings: Settings, registry: Registry) -> dict[str, dict[str, Any]]:
    """Every entry ticks each heartbeat; the tasks decide what is due (cron via croniter, the
    same rules as ``jankycron jobs``). Ticks expire rather than pile up while workers are down.
    A job or table gone from jobs/ is gone from RedBeat at the next beat start."""
    every = settings.heartbeat
    opts = {"queue": OPS_QUEUE, "expires": 2 * every, "ignore_result": True}
    entries = {f"job:{j.name}": {"task": FIRE, "schedule": every, "args": [j.name],
                                 "options": opts} for j in registry}
    entries.update({f"load:{t}": {"task": LOAD, "schedule": every, "args": [t],
                                  "options": opts} for t in registry.tables()})
    entries["sweep"] = {"task": SWEEP, "schedule": every, "options": opts}
    entries["missed"] = {"task": MISSED, "schedule": every, "options": opts}
    return entries


def send_run(app: Celery, job: Job, interval: Interval, trigger: str, *, load: bool = True,
             task_id: str | None = None) -> AsyncResult:
    """Enqueue one run; the job's timeout becomes the task's soft time limit. ``task_id``: run
    again under a lost run's task id, so whoever waits for that task (the CLI) gets the outcome.
    """
    kwargs = {"job": job.name, "start": fmt(interval.start), "end": fmt(interval.end),
              "trigger": trigger, "load": load}
    # Nobody waits for a scheduled run (its outcome is in the ledger): no result stored. A
    # recovery keeps it: it reuses a task id a CLI may be waiting on.
    return app.send_task(RUN, task_id=task_id, kwargs=kwargs, queue=RUNS_QUEUE,
                         ignore_result=trigger == Trigger.SCHEDULE,
                         soft_time_limit=job.timeout, time_limit=job.timeout + HARD_LIMIT_GRACE)


def send_load(app: Celery, table: str) -> AsyncResult:
    """Enqueue a load of ``table`` now, due or not (after a backfill)."""
    return app.send_task(LOAD, args=[table], kwargs={"force": True}, queue=OPS_QUEUE,
                         ignore_result=False)


def check_broker(app: Celery, settings: Settings, timeout: float = 5.0) -> None:
    """Raise a one-line TransientError unless the broker answers."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as e:
        raise TransientError(f"broker {redact(settings.broker_url)} is unreachable "
                             f"({type(e).__name__}); is Redis running?") from None


class RunLock(TableLock):
    """The lock of one job interval: the load lock's owner token, TTL and renewal, its own key."""

    def __init__(self, client: Any, job: Job, interval: Interval, ttl: float):
        super().__init__(client, f"{job.name} {interval}", ttl)
        self.key = f"jankycron:run-lock:{job.name}:{fmt(interval.start)}"


# ---------------------------------------------------------------------------- the tasks
def _finished(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run that finished a task (its runs, oldest first), if its latest did: success or
    skipped. A lost latest run (the sweeper re-enqueues it under the same task id) or a retried
    one is not finished; neither is a failed one (``rerun`` makes new tasks anyway)."""
    if runs and runs[-1]["status"] in (RunStatus.SUCCESS, RunStatus.SKIPPED):
        return runs[-1]
    return None


class Ops:
    """The tasks' bodies, bound to one app, its settings and jobs."""

    def __init__(self, app: Celery, settings: Settings, registry: Registry):
        self.app, self.settings, self.registry = app, settings, registry
        self._redis = None  # made in the worker process, after the fork

    def _run_lock(self, job: Job, interval: Interval) -> RunLock | None:
        if not self.settings.lock_url:
            return None  # no Redis (jankycron dev): one worker process, nothing to overlap
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self.settings.lock_url, socket_connect_timeout=5,
                                               socket_timeout=10)
        # The TTL outlives two missed renewals and expires before the sweeper declares the
        # run lost (3 heartbeats), so a recovery run is not locked out by a dead owner.
        return RunLock(self._redis, job, interval, ttl=2 * self.settings.heartbeat)

    def run(self, task: Any, job: str, start: str, end: str, trigger: str = Trigger.CLI,
            load: bool = True, attempt: int = 1, run_id: str | None = None,
            check_in: str | None = None, waiting_since: float | None = None) -> dict[str, Any]:
        kwargs = {"job": job, "start": start, "end": end, "trigger": trigger, "load": load,
                  "attempt": attempt, "run_id": run_id, "check_in": check_in,
                  "waiting_since": waiting_since}
        try:
            the_job = self.registry.get(job)
        except UnknownJob as e:
            log.error("%s (not in this worker's jobs/: deploy it, then restart)", e)
            raise RunFailed(str(e)) from None
        interval = Interval(parse_fmt(start), parse_fmt(end))
        _bind_sentry(the_job, {"run_id": run_id, "start": start, "end": end})
        lock = self._run_lock(the_job, interval)
        if lock is not None:
            try:
                lock.acquire(wait=0)
            except LockBusy:
                return self._busy(task, the_job, interval, lock, kwargs)
        try:
            return self._run(task, the_job, interval, kwargs, locked=lock is not None)
        finally:
            if lock is not None:
                lock.release()

    def _busy(self, task: Any, job: Job, interval: Interval, lock: RunLock,
              kwargs: dict[str, Any]) -> dict[str, Any]:
        holder = lock.holder() or "just released"
        ctx = Context(self.settings)
        try:
            runs = ctx.ledger.runs_of_task(task.request.id)
        finally:
            ctx.close()
        done = _finished(runs)
        if done is not None:
            return self._drop_delivered_again(task, job, interval, done)
        if runs and runs[-1]["status"] in (RunStatus.RUNNING, RunStatus.STAGED):
            # This very task, delivered again while its first delivery still runs (its ack was
            # lost with the broker connection): wait for it, whatever the trigger, then drop.
            log.info("[%s %s] task %s delivered again while its run %s is in progress: "
                     "waiting for it", job.name, interval, task.request.id, runs[-1]["run_id"])
            raise task.retry(kwargs={**kwargs, "waiting_since": kwargs["waiting_since"] or
                                     time.time()}, countdown=self.settings.heartbeat)
        if kwargs["trigger"] == Trigger.SCHEDULE:
            log.warning("[%s %s] already running (%s): this scheduled trigger is dropped",
                        job.name, interval, holder)
            return {"status": "dropped", "job": job.name, "start": kwargs["start"],
                    "end": kwargs["end"], "error": f"already running ({holder})"}
        since = kwargs["waiting_since"] or time.time()
        if time.time() - since > job.timeout + housekeeping.lost_after(self.settings):
            raise RunFailed(f"job {job.name} {interval} is still running elsewhere ({holder}) "
                            f"after {time.time() - since:.0f}s of waiting")
        log.info("[%s %s] already running (%s): waiting for it to finish", job.name, interval,
                 holder)
        raise task.retry(kwargs={**kwargs, "waiting_since": since},
                         countdown=self.settings.heartbeat)

    def _run(self, task: Any, job: Job, interval: Interval, kwargs: dict[str, Any],
             locked: bool) -> dict[str, Any]:
        attempt, run_id, trigger = kwargs["attempt"], kwargs["run_id"], kwargs["trigger"]
        alerts = make_alerts(self.settings)
        ctx = Context(self.settings, jobs=self._job, alerts=lambda: make_alerts(self.settings))
        try:
            done = _finished(ctx.ledger.runs_of_task(task.request.id))
            if done is not None:
                return self._drop_delivered_again(task, job, interval, done)
            if locked:
                self._poison_check(ctx, job, task.request.id, alerts)
            check_in = kwargs["check_in"]
            if trigger == Trigger.SCHEDULE and attempt == 1:
                check_in = alerts.checkin(job, "in_progress")
            try:
                if run_id is None:
                    row = run_job(ctx, job, interval, load=kwargs["load"], attempt=attempt,
                                  task_id=task.request.id)
                else:  # the run is staged: only its load is tried again
                    ctx.ledger.note_attempt(run_id, attempt)
                    load_tables(ctx, job.tables, run_id=run_id)
                    row = ctx.ledger.run(run_id)
            except Exception as e:
                row = ctx.ledger.run(run_id) if run_id else self._latest(ctx, task.request.id)
                error = describe(e, job)
                if isinstance(e, SoftTimeLimitExceeded):
                    error = f"timed out after {job.timeout:.0f}s (the job's timeout)"
                    if row is not None:
                        ctx.ledger.finish_run(row["run_id"], RunStatus.FAILED, error=error)
                staged = row is not None and row["status"] == RunStatus.STAGED
                if transient(e) and attempt <= job.retries:
                    delay = housekeeping.backoff(self.settings.retry_backoff, attempt)
                    note = (f"{error} (attempt {attempt} of {job.retries + 1}; retrying in "
                            f"{delay:.1f}s)")
                    if staged:
                        ctx.ledger.note_attempt(row["run_id"], attempt, note)
                    elif row is not None:
                        ctx.ledger.finish_run(row["run_id"], RunStatus.RETRIED, error=note)
                    log.warning("[%s %s] %s", job.name, interval, note)
                    raise task.retry(kwargs={**kwargs, "attempt": attempt + 1,
                                             "run_id": row["run_id"] if staged else None,
                                             "check_in": check_in}, countdown=delay) from None
                warehouse = isinstance(e, WarehouseError) or (staged and transient(e))
                alerts.run_failed(job, row or {"start": kwargs["start"], "end": kwargs["end"]},
                                  error, warehouse=warehouse)
                if trigger == Trigger.SCHEDULE:
                    alerts.checkin(job, "error", check_in)
                # The ledger lost is not the job's failure: say what failed.
                raise RunFailed(error if isinstance(e, LedgerUnavailable) else
                                f"job {job.name} failed: {error}") from None
            if trigger == Trigger.SCHEDULE and row["status"] in (RunStatus.SUCCESS,
                                                                 RunStatus.SKIPPED):
                alerts.checkin(job, "ok", check_in)  # only now: the data is loaded
            elif trigger == Trigger.SCHEDULE and row["status"] == RunStatus.FAILED:
                alerts.checkin(job, "error", check_in)  # a batch quarantined (alerted)
            return row
        finally:
            ctx.close()

    @staticmethod
    def _drop_delivered_again(task: Any, job: Job, interval: Interval,
                              done: dict[str, Any]) -> dict[str, Any]:
        """This task's run already finished: the broker delivered it again (its ack was lost
        to a killed worker or a Redis restart, and the visibility timeout or a reconnect
        brought it back). Not run again: acked, with the finished run as its result."""
        log.warning("[%s %s] task %s delivered again after its run %s finished (%s): dropped, "
                    "not run again", job.name, interval, task.request.id, done["run_id"],
                    done["status"])
        return done

    @staticmethod
    def _latest(ctx: Context, task_id: str) -> dict[str, Any] | None:
        runs = ctx.ledger.runs_of_task(task_id)
        return runs[-1] if runs else None

    def _poison_check(self, ctx: Context, job: Job, task_id: str, alerts: Any) -> None:
        """Runs of this very task still ``running`` while we hold the interval's lock are
        deliveries whose worker died (``task_reject_on_worker_lost`` requeued the task):
        mark them lost, and stop a task that keeps killing its worker (out of memory, say)."""
        runs = ctx.ledger.runs_of_task(task_id)
        for r in runs:
            if r["status"] == RunStatus.RUNNING:
                ctx.ledger.mark_lost(r["run_id"], "lost: its worker died mid-run; the task "
                                     "was delivered again")
        deaths = sum(r["status"] in (RunStatus.RUNNING, RunStatus.LOST) for r in runs)
        if deaths >= MAX_DELIVERIES:
            error = (f"its worker died {deaths} times while running it (out of memory?); not "
                     "run again: fix the job, then `jankycron rerun --failed`")
            row = ctx.ledger.run(runs[-1]["run_id"])
            ctx.ledger.finish_run(row["run_id"], RunStatus.FAILED, error=error)
            alerts.run_failed(job, row, error)
            raise RunFailed(f"job {job.name} failed: {error}")

    def _job(self, name: str) -> Job | None:
        """The registered job of that name, or None (for the loader's quarantine alerts)."""
        return self.registry.get(name) if name in self.registry else None

    def fire(self, job: str) -> None:
        if job not in self.registry:
            log.warning("beat fired unknown job %s; restart beat after changing jobs/", job)
            return
        ctx = Context(self.settings)
        try:
            housekeeping.fire(ctx.ledger, self.registry.get(job), datetime.now(UTC),
                              lambda j, i: send_run(self.app, j, i, Trigger.SCHEDULE))
        finally:
            ctx.close()

    def load(self, table: str, force: bool = False) -> dict[str, Any]:
        """Load ``table``'s pending batches: when due (beat), or now (``force``)."""
        tables = self.registry.tables()
        if table not in tables:
            raise RunFailed(f"no job feeds table {table!r}")
        ctx = Context(self.settings, jobs=self._job, alerts=lambda: make_alerts(self.settings))
        try:
            todo = {table: tables[table]}
            if not ctx.ledger.pending_batches(table):
                return {"table": table, "batches": 0, "rows_loaded": 0, "rows_rejected": 0,
                        "rows_replaced": 0}
            if not force:
                todo, waiting = due_tables(ctx, todo)
                for line in waiting:
                    log.info("%s", line)
                locks = ctx.loader.locks
                if todo and locks and TableLock(locks.client, table).holder():
                    log.info("%s: being loaded by another loader; next tick", table)
                    todo = {}
            try:
                results = load_tables(ctx, todo) if todo else []
            except TransientError as e:
                if force:
                    raise RunFailed(f"load of {table} failed: {e}") from None
                log.warning("%s: load failed, the batches stay pending: %s", table, e)
                return {"table": table, "error": str(e)}
            return {"table": table, "batches": sum(r.batches for r in results),
                    "rows_loaded": sum(r.rows_loaded for r in results),
                    "rows_rejected": sum(r.rows_rejected for r in results),
                    "rows_replaced": sum(r.rows_replaced for r in results)}
        finally:
            ctx.close()

    def sweep(self) -> None:
        ctx = Context(self.settings)
        try:
            housekeeping.sweep(ctx.ledger, self.registry, make_alerts(self.settings),
                               self.settings, datetime.now(UTC),
                               lambda j, i, run: send_run(self.app, j, i, Trigger.RECOVER,
                                                          task_id=run["task_id"]))
            try:
                housekeeping.remove_orphans(ctx.ledger, ctx.store, self.registry,
                                            self.settings, datetime.now(UTC))
            except JankycronError as e:  # e.g. a store that refuses deletes: tried next tick
                log.warning("orphaned staged objects not removed: %s", e)
        finally:
            ctx.close()

    def missed(self) -> None:
        ctx = Context(self.settings)
        try:
            overdue = housekeeping.check_missed(ctx.ledger, self.registry,
                                                make_alerts(self.settings), self.settings,
                                                datetime.now(UTC))
            log.log(logging.INFO if overdue else logging.DEBUG,
                    "missed-run check: %d job(s) overdue%s", len(overdue),
                    f" ({', '.join(overdue)})" if overdue else "")
        finally:
            ctx.close()
