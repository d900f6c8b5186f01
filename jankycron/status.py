"""The status page: a read-only view of the ledger for operators (server-rendered HTML).

- ``GET /``: jobs (rows, grouped by owner) x the last 14 days (columns, ``?days=N``), each cell
  coloured by the status of the intervals that start that day, with rows loaded / rejected and
  a sparkline of rows loaded per job; ``?q=`` filters by job, owner or table.
- ``GET /jobs/<name>``: schedule, next run, tables, alert routes (kind and channel; a webhook
  shows only its scheme and host), the last runs with durations and errors, and the exact
  ``jankycron run JOB --date D`` command to rerun an interval (``?date=D`` picks the day).
- ``GET /loader``: per table, pending batches, last load, failed loads, the load-lock holder
  (when a lock store is configured), and the reasons of open dead letters (never records).

No write actions: reruns stay in the CLI. Access (``JANKYCRON_STATUS_USER`` / ``_PASSWORD``
for HTTP basic auth, ``JANKYCRON_STATUS_AUTH_HEADER`` for a trusted proxy's header) guards
these routes only; ``/healthz``, ``/metrics`` and the webhooks have their own rules.

Cell statuses: an interval's newest run decides (success, success with dead letters, failed
or lost, running / staged / retrying). An interval with no run is *missed* once it ended more
than the job's grace ago (``housekeeping.grace``: every attempt at its timeout plus backoffs),
*not yet due* before that, and not expected at all if it ended before beat first saw the job.
"""

from __future__ import annotations

import base64
import difflib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, render_template, request
from flask.blueprints import BlueprintSetupState

from . import ledger_views
from .alerts import parse_route
from .config import Settings, redact
from .discovery import JobFileError, Registry, discover
from .errors import ConfigError
from .housekeeping import grace, landed
from .job import Job
from .ledger import Ledger
from .schedule import EARLIEST, LATEST, Interval, fmt, parse_fmt
from .scrub import mask_values

log = logging.getLogger(__name__)

DAYS, MAX_DAYS = 14, 62
PER_DAY_CAP = 288  # intervals listed per job and day in the grid (a 5-minute schedule); a job
# that fires more often gets a tally per day instead (every slot counted, see day_tally)
REGISTRY_TTL = 30.0  # seconds between two discoveries of the jobs folder
REDIS_TIMEOUT = 1.0  # the loader page must not hang on a Redis that is down

# Worst first: a day's cell shows the worst status of the intervals starting on it.
STATUSES = {
    "failed": "failed",
    "missed": "missed",
    "running": "running",
    "deadletters": "success with dead letters",
    "success": "success",
    "notdue": "not yet due",
    "none": "no interval",
}
_BY_RUN = {"success": "success", "skipped": "success", "superseded": "success",
           "failed": "failed", "lost": "failed",
           "running": "running", "staged": "running", "retried": "running"}
_RUN_LABELS = {"staged": "staged, load pending", "retried": "retrying",
               "lost": "lost (worker died)", "skipped": "skipped (nothing to do)"}

bp = Blueprint("status", __name__, template_folder="templates", static_folder="static",
               static_url_path="/status/static")


# ------------------------------------------------------------------------------- state
@dataclass
class StatusState:
    settings: Settings
    now: Callable[[], datetime] = lambda: datetime.now(UTC)  # tests may pin the clock
    _registry: tuple[float, Registry, list[JobFileError]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _redis: Any = None

    def registry(self) -> tuple[Registry, list[JobFileError]]:
        """The jobs folder, discovered again at most every REGISTRY_TTL seconds."""
        with self._lock:
            if self._registry is None or time.monotonic() - self._registry[0] > REGISTRY_TTL:
                registry, errors = discover(self.settings.jobs_path,
                                            self.settings.import_timeout)
                self._registry = (time.monotonic(), registry, errors)
            return self._registry[1], self._registry[2]

    def lock_holders(self, tables: Iterable[str]) -> tuple[dict[str, str | None], str | None]:
        """{table: "host:pid" of the loader holding its lock, or None}, and a one-line problem
        (no lock store, or it is unreachable) instead when they cannot be known."""
        tables = list(tables)
        if not self.settings.lock_url:
            return {}, "no lock store configured (JANKYCRON_LOCK_URL)"
        if not tables:
            return {}, None
        from .load.lock import TableLock  # noqa: PLC0415 - needs redis; only this page does

        try:
            if self._redis is None:
                import redis  # noqa: PLC0415

                self._redis = redis.Redis.from_url(
                    self.settings.lock_url, socket_connect_timeout=REDIS_TIMEOUT,
                    socket_timeout=REDIS_TIMEOUT)
            values = self._redis.mget([TableLock(None, t).key for t in tables])
        except Exception as e:  # Redis down: the page still shows everything else
            return {}, f"lock store {redact(self.settings.lock_url)} is unreachable " \
                       f"({type(e).__name__})"
        out = {}
        for table, value in zip(tables, values, strict=True):
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            # The token is host:pid:random; the random part proves ownership: keep it private.
            out[table] = text.rsplit(":", 1)[0] if text and text.count(":") >= 2 else text
        return out, None


def _setup(state: BlueprintSetupState) -> None:
    settings: Settings = state.app.extensions["jankycron"].settings
    if bool(settings.status_user) != bool(settings.status_password):
        raise ConfigError("JANKYCRON_STATUS_USER and JANKYCRON_STATUS_PASSWORD go together: "
                          "set both for HTTP basic auth on the status page, or neither")
    state.app.extensions["jankycron.status"] = StatusState(settings)


bp.record_once(_setup)


def status_state() -> StatusState:
    return current_app.extensions["jankycron.status"]


# ------------------------------------------------------------------------------- access
@bp.before_request
def check_access() -> Response | None:
    settings = status_state().settings
    if settings.status_auth_header and not request.headers.get(settings.status_auth_header,
                                                                 "").strip():
        return Response(f"401 Unauthorized: sign in through the proxy that sets "
                        f"{settings.status_auth_header}\n", 401, mimetype="text/plain")
    if settings.status_user and not _basic_ok(settings):
        return Response("401 Unauthorized\n", 401, mimetype="text/plain",
                        headers={"WWW-Authenticate": 'Basic realm="jankycron status"'})
    return None


def _basic_ok(settings: Settings) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(value.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    ok_user = hmac.compare_digest(user.encode(), (settings.status_user or "").encode())
    ok_password = hmac.compare_digest(password.encode(),
                                      (settings.status_password or "").encode())
    return ok_user and ok_password


@bp.after_request
def harden(resp: Response) -> Response:
    # Every value is escaped by Jinja; the policy is a second line: no inline script runs.
    resp.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.endpoint != "status.static":
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def _viewer() -> str | None:
    settings = status_state().settings
    if settings.status_auth_header:
        return request.headers.get(settings.status_auth_header)
    return settings.status_user


# ------------------------------------------------------------------------------- model
@dataclass
class IntervalView:
    interval: Interval
    status: str  # a key of STATUSES
    label: str  # what the operator reads: the run's own status, or missed / not yet due
    run: dict[str, Any] | None = None
    command: str | None = None


@dataclass
class Cell:
    day: date
    intervals: list[IntervalView]
    status: str = "none"
    loaded: int = 0
    rejected: int = 0
    replaced: int = 0
    tally: dict[str, int] | None = None  # a frequent job's day: counts, not a list (day_tally)

    @property
    def title(self) -> str:
        head = f"{self.day.isoformat()}: {STATUSES[self.status]}"
        if self.tally is not None:
            t = self.tally
            head += f" ({t['expected']:,} expected, {t['done']:,} done, {t['missed']:,} missed"
            head += "".join(f", {t[k]:,} {label}" for k, label in _TALLY_MORE if t[k]) + ")"
            if any(iv.run for iv in self.intervals):
                head += f"; {self.loaded:,} rows loaded, {self.rejected:,} rejected"
            return head
        counts: dict[str, int] = {}
        for iv in self.intervals:
            counts[iv.label] = counts.get(iv.label, 0) + 1
        if len(self.intervals) > 1:
            head += " (" + ", ".join(f"{n} {label}" for label, n in counts.items()) + ")"
        elif self.intervals and self.intervals[0].label != STATUSES[self.status]:
            head += f" ({self.intervals[0].label})"
        if any(iv.run for iv in self.intervals):
            head += f"; {self.loaded:,} rows loaded, {self.rejected:,} rejected"
            if self.replaced:
                head += f", {self.replaced:,} replaced by a later record with the same key"
        return head

    @property
    def text(self) -> str:
        """What the cell itself says (colour is not the only signal)."""
        if self.status in ("success", "deadletters"):
            return _short(self.loaded) + ("!" if self.rejected else "")
        return {"failed": "✗", "missed": "?", "running": "…", "notdue": "", "none": ""}[
            self.status]


_TALLY_MORE = (("failed", "failed"), ("running", "running"), ("notdue", "not yet due"),
               ("before", "before the job was scheduled"))


def day_tally(job: Job, day_start: datetime, found: dict[Interval, IntervalView],
              now: datetime, wait: timedelta, watched_from: str | None
              ) -> tuple[dict[str, int], set[str]]:
    """A frequent job's day without listing its slots (1,440 for ``* * * * *``): the slots are
    counted arithmetically (``Schedule.count_starting``), the ones without a run split by
    ``interval_view``'s rules (ends get later with the start: each rule cuts a prefix), and
    ``found`` (the views of the day's runs) counted by status. Returns the counts and the
    statuses present."""
    sched = job.schedule
    day_end = day_start + timedelta(days=1)

    def ended_by(t: datetime) -> int:  # slots of the day whose interval ends at or before t
        return sched.count_starting(day_start, min(day_end, sched.prev_fire(t)))

    total = sched.count_starting(day_start, day_end)
    due = ended_by(now - wait)
    before = ended_by(parse_fmt(watched_from)) if watched_from else 0
    norun = {"before": min(before, due), "missed": max(0, due - before), "notdue": total - due}
    offsets = set(sched.day_offsets()[0]) if total else set()
    counts = {k: 0 for k in ("done", "missed", "failed", "running")}
    extra = 0
    for interval, view in found.items():
        if (interval.start - day_start).total_seconds() in offsets:  # one of the slots
            region = ("notdue" if interval.end + wait > now else "before" if watched_from
                      and fmt(interval.end) <= watched_from else "missed")
            norun[region] -= 1
        else:
            extra += 1
        key = "done" if view.status in ("success", "deadletters") else view.status
        if key in counts:
            counts[key] += 1
    tally = {**counts, "missed": counts["missed"] + norun["missed"], "notdue": norun["notdue"],
             "before": norun["before"], "expected": total + extra - norun["before"]}
    present = {v.status for v in found.values()} | {
        status for status, key in (("missed", "missed"), ("notdue", "notdue"), ("none", "before"))
        if norun[key] > 0}
    return tally, present


@dataclass
class JobRow:
    name: str
    job: Job | None  # None: runs in the ledger, but the job file is gone
    cells: list[Cell]

    @property
    def owner(self) -> str:
        return (self.job.owner if self.job else None) or "no owner"

    @property
    def sparkline(self) -> dict[str, Any]:
        values = [c.loaded for c in self.cells]
        top = max(values) or 1
        width, height, step = 84, 20, 84 / max(1, len(values) - 1)
        points = " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}"
                          for i, v in enumerate(values))
        return {"points": points, "width": width, "height": height, "total": sum(values),
                "last": values[-1] if values else 0, "max": max(values)}


def _short(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + unit
    return str(n)


def rerun_command(job: Job, interval: Interval, now: datetime | None = None) -> str | None:
    """The CLI command that reruns ``interval`` (``--date`` names the day it starts on; with
    several intervals starting that day, the time too, as ``Schedule.interval_on`` wants).
    None for one the CLI would refuse: not ended at ``now``, or outside the dates it takes
    (a far-off run from an old ledger or the API)."""
    if (now is not None and interval.end > now) or not \
            EARLIEST <= interval.start < LATEST:
        return None
    day = interval.start.date()
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        same_day = job.schedule.count_starting(start, start + timedelta(days=1))
    except Exception:  # a schedule that cannot be evaluated (logged by job_rows): the time form
        same_day = 0
    when = day.isoformat() if same_day == 1 else fmt(interval.start)[:16]
    return f"jankycron run {job.name} --date {when}"


def interval_view(job: Job | None, interval: Interval, run: dict[str, Any] | None,
                  now: datetime, wait: timedelta, watched_from: str | None) -> IntervalView:
    if run is not None:
        status = _BY_RUN.get(run["status"], "running")
        label = _RUN_LABELS.get(run["status"], run["status"])
        if status == "success" and run["rows_rejected"]:
            status, label = "deadletters", STATUSES["deadletters"]
        if run["status"] in ("success", "skipped") and not landed(run, interval) and \
                interval.end + wait <= now:  # as the missed-run check sees it
            status, label = "missed", f"{label}, but it started before the interval ended"
    elif interval.end + wait > now:
        status = "notdue"
        label = "not yet due" if interval.end > now else \
            f"not yet due (ended; within the grace of {_duration(wait.total_seconds())})"
    elif watched_from is not None and fmt(interval.end) <= watched_from:
        status, label = "none", "before the job was scheduled"
    else:
        status, label = "missed", "no run"
    return IntervalView(interval, status, label, run,
                        rerun_command(job, interval, now) if job is not None else None)


def job_rows(registry: Registry, ledger: Ledger, state: StatusState, days: int,
             now: datetime) -> list[JobRow]:
    """One row per job (the jobs folder's, plus jobs that have runs but no file any more)."""
    today = now.date()
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    until = start + timedelta(days=days)
    runs: dict[str, dict[Interval, dict[str, Any]]] = {}
    for r in ledger_views.interval_runs(ledger, fmt(start), fmt(until)):
        runs.setdefault(r["job"], {})[Interval(parse_fmt(r["start"]), parse_fmt(r["end"]))] = r
    watched = ledger_views.watched_since(ledger)
    names = {j.name for j in registry} | set(runs) | set(ledger.last_runs())
    rows = []
    for name in sorted(names):
        job = registry.get(name) if name in registry else None
        wait = grace(job, state.settings) if job else timedelta(0)
        by_day: dict[date, dict[Interval, IntervalView]] = {
            first + timedelta(days=i): {} for i in range(days)}
        for interval, run in runs.get(name, {}).items():
            by_day[interval.start.date()][interval] = interval_view(
                job, interval, run, now, wait, watched.get(name))
        tallies: dict[date, tuple[dict[str, int], set[str]]] = {}
        if job is not None:
            try:  # one job whose schedule cannot be evaluated shows its runs, not a 500
                for day, found in by_day.items():
                    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
                    if job.schedule.count_starting(day_start, day_start + timedelta(days=1)) \
                            > PER_DAY_CAP:
                        tallies[day] = day_tally(job, day_start, found, now, wait,
                                                 watched.get(name))
                        continue
                    for interval in job.schedule.intervals_starting(
                            day_start, day_start + timedelta(days=1)):
                        if interval not in found:
                            found[interval] = interval_view(job, interval, None, now, wait,
                                                            watched.get(name))
            except Exception as e:
                log.error("[%s] status grid: schedule %r: %s: %s", name, job.schedule.expr,
                          type(e).__name__, e)
        cells = []
        for day, found in by_day.items():
            views = [found[k] for k in sorted(found)]
            tally, present = tallies.get(day, (None, {v.status for v in views}))
            cell = Cell(day, views, tally=tally)
            if present:
                cell.status = min(present, key=list(STATUSES).index)
                cell.loaded = sum(v.run["rows_loaded"] for v in views if v.run)
                cell.rejected = sum(v.run["rows_rejected"] for v in views if v.run)
                cell.replaced = sum(v.run["rows_replaced"] for v in views if v.run)
            cells.append(cell)
        rows.append(JobRow(name, job, cells))
    return rows


def _matches(row: JobRow, q: str) -> bool:
    q = q.lower()
    haystack = [row.name, row.owner] + (list(row.job.tables) if row.job else [])
    return any(q in h.lower() for h in haystack)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m" if hours < 48 else f"{hours // 24}d {hours % 24}h"


def run_duration(run: dict[str, Any], now: datetime) -> str:
    started = parse_fmt(run["started_at"])
    end = parse_fmt(run["finished_at"]) if run.get("finished_at") else None
    if end is None:
        return f"{_duration((now - started).total_seconds())} so far"
    return _duration((end - started).total_seconds())


def route_view(raw: str) -> dict[str, str]:
    """An alert route as the page shows it: its kind and channel, never a webhook's path or
    query (an incoming webhook's URL is its secret)."""
    try:
        route = parse_route(raw)
    except ValueError:
        return {"kind": "invalid", "target": "not a valid route (see jankycron check)"}
    if route.kind == "webhook":
        u = urlsplit(route.target)
        return {"kind": "webhook", "target": f"{u.scheme}://{u.hostname or '?'}"}
    return {"kind": route.kind, "target": route.target}


def _days_arg() -> int:
    try:
        return max(1, min(MAX_DAYS, int(request.args.get("days", DAYS))))
    except ValueError:
        return DAYS


def _page(template: str, code: int = 200, **context: Any) -> tuple[str, int]:
    state = status_state()
    scrubber = state.settings.scrubber()
    # Every error and dead-letter reason a page shows goes through ``scrub`` in the templates:
    # secrets out, and the values a warehouse message quotes masked (records are never shown).
    html = render_template(template, statuses=STATUSES, viewer=_viewer(), now=state.now(),
                           fmt=fmt, scrub=lambda text: mask_values(scrubber(text or "")),
                           **context)
    return html, code


# ------------------------------------------------------------------------------- routes
@bp.get("/")
def grid() -> tuple[str, int]:
    state = status_state()
    now, days = state.now(), _days_arg()
    q = request.args.get("q", "").strip()
    registry, errors = state.registry()
    with current_app.extensions["jankycron"].source.ledger() as ledger:
        rows = job_rows(registry, ledger, state, days, now)
    shown = [r for r in rows if not q or _matches(r, q)]
    groups: dict[str, list[JobRow]] = {}
    for row in sorted(shown, key=lambda r: (r.owner == "no owner", r.owner, r.name)):
        groups.setdefault(row.owner, []).append(row)
    day_list = rows[0].cells if rows else []
    return _page("status/grid.html", groups=groups, q=q, days=days,
                 day_list=[c.day for c in day_list], total=len(rows), shown=len(shown),
                 file_errors=[e.path for e in errors])


@bp.get("/jobs/<name>")
def job_page(name: str) -> tuple[str, int]:
    state = status_state()
    now = state.now()
    registry, _ = state.registry()
    job = registry.get(name) if name in registry else None
    with current_app.extensions["jankycron"].source.ledger() as ledger:
        history = ledger.history(name, limit=50)
        if job is None and not history:
            known = [j.name for j in registry] + list(ledger.last_runs())
            return _page("status/404.html", 404, name=name,
                         close=difflib.get_close_matches(name, known, n=3))
        rows = job_rows(Registry({name: job}) if job else Registry(), ledger, state, DAYS, now)
    row = next(r for r in rows if r.name == name)
    day_arg = request.args.get("date", "")
    try:
        day = date.fromisoformat(day_arg[:10]) if day_arg else None
    except ValueError:
        day = None
    if day is not None and not EARLIEST.date() <= day < LATEST.date():
        day = None  # a day the CLI does not take either (year 1, 9999): shown as invalid
    if day is None:  # the newest day with a failed or missed interval, else the latest one
        bad = [c for c in row.cells if c.status in ("failed", "missed")]
        candidates = bad or [c for c in row.cells if c.status not in ("none", "notdue")]
        day = candidates[-1].day if candidates else now.date()
    selected = next((c for c in row.cells if c.day == day), None)
    if (selected is None or selected.tally is not None) and job is not None:
        # a day outside the grid, or a frequent job's tallied day: every interval, listed
        selected = _day_cell(job, day, state, now)
    for run in history:
        run["duration"] = run_duration(run, now)
        interval = Interval(parse_fmt(run["start"]), parse_fmt(run["end"]))
        run["command"] = rerun_command(job, interval, now) if job else None
    return _page("status/job.html", name=name, job=job, row=row, history=history,
                 selected=selected, day=day, day_invalid=bool(day_arg) and
                 day.isoformat() != day_arg[:10],
                 routes=[route_view(r) for r in (job.alert if job else ())],
                 next_fire=_next_fire(job, now),
                 wait=grace(job, state.settings) if job else None, duration=_duration)


def _next_fire(job: Job | None, now: datetime) -> datetime | None:
    try:
        return job.schedule.next_fire(now) if job else None
    except Exception as e:  # as in job_rows: the page still renders
        log.error("[%s] status page: schedule %r: %s: %s", job and job.name,
                  job and job.schedule.expr, type(e).__name__, e)
        return None


def _day_cell(job: Job, day: date, state: StatusState, now: datetime) -> Cell:
    """The intervals of ``job`` starting on ``day`` (a day outside the grid's period)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with current_app.extensions["jankycron"].source.ledger() as ledger:
        day_runs = ledger_views.interval_runs(ledger, fmt(start), fmt(start + timedelta(days=1)))
        runs = {Interval(parse_fmt(r["start"]), parse_fmt(r["end"])): r
                for r in day_runs if r["job"] == job.name}
        watched = ledger_views.watched_since(ledger).get(job.name)
    wait = grace(job, state.settings)
    # every slot of the day: at most 1,440 (a 5-field cron fires at most once a minute)
    intervals = set(runs) | set(job.schedule.intervals_starting(start, start + timedelta(days=1)))
    return Cell(day, [interval_view(job, i, runs.get(i), now, wait, watched)
                      for i in sorted(intervals)])


def _masked_reasons(reasons: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dead-letter reasons counted as the page shows them: with the quoted values masked, the
    reasons that differ only in a customer's value (every card number a column refused) are
    one row, the most frequent first."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in reasons:
        shown = mask_values(r["reason"] or "")
        row = rows.setdefault((r["job"], shown), {**r, "reason": shown, "n": 0})
        row["n"] += int(r["n"])
        row["last_at"] = max(row["last_at"] or "", r["last_at"] or "") or None
    return sorted(rows.values(), key=lambda r: (-r["n"], r["reason"]))


@bp.get("/loader")
def loader_page() -> tuple[str, int]:
    state = status_state()
    registry, _ = state.registry()
    with current_app.extensions["jankycron"].source.ledger() as ledger:
        queues = ledger_views.table_queues(ledger)
        batches = ledger_views.pending_batch_list(ledger)
        corrupt = ledger_views.corrupt_batch_list(ledger)
        reasons = ledger_views.deadletter_reasons(ledger)
    tables = sorted(set(registry.tables()) | set(queues) | {r["table_name"] for r in reasons})
    holders, lock_problem = state.lock_holders(tables)
    empty = {"pending": 0, "pending_rows": 0, "oldest_pending": None, "last_load": None,
             "failures": 0, "last_failure_at": None, "last_error": None, "corrupt": 0}
    views = []
    for table in tables:
        letters = _masked_reasons(r for r in reasons if r["table_name"] == table)
        views.append({"name": table, **{**empty, **queues.get(table, {})},
                      "holder": holders.get(table), "batches": [
                          b for b in batches if b["table_name"] == table],
                      "quarantined": [b for b in corrupt if b["table_name"] == table],
                      "reasons": letters, "deadletters": sum(int(r["n"]) for r in letters)})
    return _page("status/loader.html", tables=views, lock_problem=lock_problem)
