"""Alerts: Sentry (events grouped per job, Crons check-ins) and each job's own routes.

A job names its routes with ``alert=``; they are sent on top of Sentry:

- ``slack:#channel`` (or ``slack:@user``): Slack incoming webhook ``JANKYCRON_SLACK_WEBHOOK_URL``,
  posted with ``"channel"`` set. A webhook made by a Slack app is bound to one channel and
  ignores that field; a legacy webhook honours it.
- ``https://...`` (or ``http://``): a generic JSON POST (see ``Alert.payload``).
- ``mailto:ops@bank.example`` or ``email:ops@bank.example`` (several: comma-separated): e-mail
  through ``JANKYCRON_SMTP_URL`` (``smtp://`` uses STARTTLS when offered, ``smtps://`` is TLS
  from the start; credentials are only sent over TLS), from ``JANKYCRON_ALERT_FROM``.

Sending never raises and never retries: a Slack outage must not fail or re-run a job. A route
that fails logs one line (without the URL's secret parts) and the others are still tried.
Warehouse failures inside ``JANKYCRON_MAINTENANCE_WINDOW`` are held back (logged, not sent):
the job retries through the window and alerts only if it still fails after it.

Every Sentry event is tagged ``job``, ``run_id``, ``interval_start``/``interval_end`` and
fingerprinted ``["jankycron-job", job]``, so each job has one Sentry issue of its own.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import sentry_sdk
from sentry_sdk.crons import capture_checkin

from .config import Settings
from .runner import ALERTED_BY_CALLER
from .schedule import fmt
from .scrub import Scrubber, scrub

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 5.0  # seconds per webhook POST: an alert must not hold a worker up
SMTP_TIMEOUT = 10.0
CHECKIN_STATUSES = ("in_progress", "ok", "error")
_SLACK_TARGET = re.compile(r"^[#@][a-z0-9][a-z0-9._-]{0,79}$")
_ADDRESS = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+$")
ROUTE_FORMS = "slack:#channel, an https:// webhook URL, or mailto:address"


# ------------------------------------------------------------------------------- routes
@dataclass(frozen=True)
class Route:
    kind: str  # "slack" | "webhook" | "email"
    target: str  # channel, URL, or comma-separated addresses

    def __str__(self) -> str:
        """Safe to log: a webhook URL shows only its scheme and host (its path may be a token)."""
        if self.kind == "webhook":
            u = urlsplit(self.target)
            return f"{u.scheme}://{u.hostname}{f':{u.port}' if u.port else ''}/..."
        return f"{self.kind}:{self.target}"


def parse_route(route: Any) -> Route:
    """``"slack:#data-eng"`` -> Route("slack", "#data-eng"); ValueError with one line if bad."""
    if not isinstance(route, str) or not route.strip():
        raise ValueError(f"alert route {route!r}: expected {ROUTE_FORMS}")
    route = route.strip()
    scheme, _, rest = route.partition(":")
    scheme = scheme.lower()
    if scheme == "slack":
        if not _SLACK_TARGET.match(rest):
            raise ValueError(f"alert route {route!r}: expected slack:#channel or slack:@user "
                             "(lower case letters, digits, . _ -)")
        return Route("slack", rest)
    if scheme in ("http", "https"):
        u = urlsplit(route)
        if not u.hostname or not rest.startswith("//"):
            raise ValueError(f"alert route {scheme}://...: not a URL with a host")
        return Route("webhook", route)
    if scheme in ("mailto", "email"):
        addresses = [a.strip() for a in unquote(rest.split("?", 1)[0]).split(",") if a.strip()]
        bad = [a for a in addresses if not _ADDRESS.match(a)]
        if not addresses or bad:
            raise ValueError(f"alert route {route!r}: expected mailto:name@domain "
                             "(several separated by commas)")
        return Route("email", ",".join(addresses))
    shown = f"{scheme}:..." if rest else repr(route)
    raise ValueError(f"alert route {shown}: expected {ROUTE_FORMS}")


def check_route(route: Any, settings: Settings | None = None) -> str | None:
    """One line saying what is wrong with an alert route, or None when it is fine.

    With ``settings``, also says when the setting the route needs is missing. For
    ``jankycron check``: ``for r in job.alert: if (e := check_route(r, settings)): ...``.
    """
    try:
        parsed = parse_route(route)
    except ValueError as e:
        return str(e)
    if settings is not None:
        if parsed.kind == "slack" and not settings.slack_webhook_url:
            return f"alert route {parsed}: needs JANKYCRON_SLACK_WEBHOOK_URL"
        if parsed.kind == "email" and not settings.smtp_url:
            return f"alert route {parsed}: needs JANKYCRON_SMTP_URL"
    return None


# ------------------------------------------------------------------------------- Sentry
def init_sentry(settings: Settings, *, celery: bool = False, transport: Any = None) -> None:
    """Start the Sentry SDK when ``SENTRY_DSN`` is set (a no-op otherwise).

    ``celery=True`` adds the Celery integration; call it in the worker (``celeryd_init``) and
    in beat (``beat_init``). Its beat monitors stay off: jankycron checks in per job itself
    (``Alerts.checkin``), "ok" only once the data is loaded. ``transport`` is the SDK's own hook
    for where envelopes go (tests capture them). Every event is scrubbed of the configured
    secrets, and an event tagged with a job but without a fingerprint gets the job's one.
    """
    if not settings.sentry_dsn:
        return
    integrations = []
    if celery:
        from sentry_sdk.integrations.celery import CeleryIntegration

        integrations.append(CeleryIntegration(monitor_beat_tasks=False))
    options: dict[str, Any] = {}
    if transport is not None:
        options["transport"] = transport
    sentry_sdk.init(dsn=settings.sentry_dsn, integrations=integrations,
                    before_send=_before_send(settings.scrubber()), **options)


def _before_send(secrets: Scrubber) -> Callable[[dict, dict], dict | None]:

    def before_send(event: dict, hint: dict) -> dict | None:
        if getattr((hint or {}).get("log_record"), ALERTED_BY_CALLER, False):
            return None  # the runner's "failed:" line: run_failed sends the run's one event
        try:
            event = _scrub_deep(event, secrets)
            job = (event.get("tags") or {}).get("job")
            if job and not event.get("fingerprint"):
                event["fingerprint"] = fingerprint(job)
            return event
        except Exception:  # never let an unscrubbed event out
            log.warning("a Sentry event was dropped: it could not be scrubbed of secrets")
            return None

    return before_send


def _scrub_deep(value: Any, secrets: Scrubber) -> Any:
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {k: _scrub_deep(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_deep(v, secrets) for v in value]
    return value


def fingerprint(job_name: str) -> list[str]:
    """One Sentry issue per job, whatever the error text."""
    return ["jankycron-job", job_name]


def monitor_slug(job) -> str:
    """The job's Sentry Crons monitor: ``jankycron-<name>`` (``_`` -> ``-``, at most 50 chars)."""
    slug = "jankycron-" + re.sub(r"[^a-z0-9-]", "-", job.name.lower())
    if len(slug) > 50:  # Sentry's limit; keep names apart with a short hash
        slug = slug[:41] + "-" + hashlib.sha1(job.name.encode()).hexdigest()[:8]
    return slug


def monitor_config(job) -> dict[str, Any]:
    """Sentry upserts the monitor from this, so no set-up in Sentry's UI is needed."""
    # A run may take its timeout once per attempt, plus up to a 15-minute retry countdown.
    runtime = math.ceil((job.timeout + 900) * (job.retries + 1) / 60)
    return {
        "schedule": {"type": "crontab", "value": job.schedule.expr},
        "timezone": "UTC",
        "checkin_margin": 10,  # minutes late before Sentry calls the run missed
        "max_runtime": runtime,
        "failure_issue_threshold": 1,
        "recovery_threshold": 1,
    }


def sentry_tags(job, run: dict | None = None) -> dict[str, str]:
    tags = {"job": job.name}
    if job.owner:
        tags["owner"] = job.owner
    if run:
        rid, start, end = _run_fields(run)
        tags.update({"run_id": rid, "interval_start": start, "interval_end": end,
                     "interval": f"{start}..{end}"})
    return tags


def bind_sentry(job, run: dict | None = None) -> None:
    """Tag and fingerprint the current scope for a job's run (call at the start of a task), so
    events the Celery integration captures land in the job's Sentry issue too."""
    scope = sentry_sdk.get_isolation_scope()
    scope.set_tags(sentry_tags(job, run))
    scope.fingerprint = fingerprint(job.name)


def _run_fields(run: dict) -> tuple[str, str, str]:
    def text(v: Any) -> str:
        return fmt(v) if isinstance(v, datetime) else str(v or "?")

    return (text(run.get("run_id") or run.get("id")), text(run.get("start")),
            text(run.get("end")))


# ------------------------------------------------------------------------------- alerts
@dataclass(frozen=True)
class Alert:
    """One thing to tell people about a job; rendered per route."""

    event: str  # run_failed | run_lost | run_missed | batch_corrupt
    job: Any
    summary: str  # one line, e.g. "failed: KeyError: 'id'"
    run: dict | None = None
    detail: str = ""  # more text for Sentry and e-mail (scrubbed, bounded)
    level: str = "error"
    interval: Any = None  # the interval concerned when there is no run (run_missed)

    @property
    def text(self) -> str:
        where = ""
        if self.run:
            rid, start, end = _run_fields(self.run)
            where = f" (interval {start}..{end}, run {rid})"
        owner = f" [owner: {self.job.owner}]" if self.job.owner else ""
        return f"jankycron: job {self.job.name} {self.summary}{where}{owner}"

    def payload(self) -> dict[str, Any]:
        """The generic webhook's JSON body."""
        rid, start, end = _run_fields(self.run) if self.run else (None, None, None)
        if self.run is None and self.interval is not None:  # no run to name: run_id stays null
            start, end = fmt(self.interval.start), fmt(self.interval.end)
        return {"source": "jankycron", "event": self.event, "job": self.job.name,
                "owner": self.job.owner, "run_id": rid, "start": start, "end": end,
                "status": (self.run or {}).get("status"), "summary": self.summary,
                "text": self.text}


class Alerts:
    """Sends a job's alerts to Sentry and its routes. No method raises.

    ``now``: a datetime or a function returning one (the maintenance-window check); tests pass
    a fixed time. ``session``: the ``requests.Session`` webhooks are posted with.
    """

    def __init__(self, settings: Settings, *, session: requests.Session | None = None,
                 now: datetime | Callable[[], datetime] | None = None):
        self.settings = settings
        self.session = session or requests.Session()
        self._now = now
        self._secrets = settings.scrubber()  # alert texts pass through it (scrub.py)

    def now(self) -> datetime:
        if self._now is None:
            return datetime.now(UTC)
        return self._now() if callable(self._now) else self._now

    # ---------------------------------------------------------------- what happened
    def run_failed(self, job, run: dict, error: str, *, warehouse: bool = False) -> None:
        """A run failed for good (retries used up, or an error that is not transient).
        ``warehouse=True``: the warehouse failed, which is expected in its maintenance window."""
        rid = _run_fields(run)[0]
        window = self.settings.maintenance_window
        if warehouse and window is not None and window.contains(self.now()):
            log.info("[%s %s] alert held back: warehouse failure inside the maintenance window "
                     "%s", job.name, rid, window)
            return
        self._send(Alert("run_failed", job, f"failed: {self._first_line(error)}", run,
                         detail=self._bounded(error)))

    def run_lost(self, job, run: dict, detail: str) -> None:
        """A run's worker stopped heartbeating (killed, OOM, host lost)."""
        self._send(Alert("run_lost", job, f"run lost: {self._first_line(detail)}", run,
                         detail=self._bounded(detail)))

    def batch_corrupt(self, job, run: dict, table: str, reason: str) -> None:
        """A staged batch of the run is damaged and was quarantined (load.Loader); sent once,
        when the loader marks it. Never held back by the maintenance window."""
        self._send(Alert("batch_corrupt", job,
                         f"batch for table {table} quarantined: {self._first_line(reason)}",
                         run, detail=self._bounded(reason)))

    def run_missed(self, job, last_success: datetime | None, expected_by: datetime,
                   interval: Any = None) -> None:
        """No successful run as recent as the schedule allows (a dead man's switch);
        ``interval``: the one that should have landed."""
        last = f"last successful interval ended {fmt(last_success)}" if last_success else \
            "no successful run yet"
        which = f" (interval {interval})" if interval is not None else ""
        self._send(Alert("run_missed", job,
                         f"missed: {last}; a success was expected by {fmt(expected_by)}{which}",
                         interval=interval))

    def checkin(self, job, status: str, check_in_id: str | None = None) -> str | None:
        """Sentry Crons check-in for the job's monitor: ``in_progress`` when a run starts (keep
        the returned id), then ``ok`` once its data is loaded or ``error``. None without Sentry."""
        if status not in CHECKIN_STATUSES:
            raise ValueError(f"check-in status {status!r}: expected one of {CHECKIN_STATUSES}")
        if not self.settings.sentry_dsn:
            return None
        try:
            return capture_checkin(monitor_slug=monitor_slug(job), check_in_id=check_in_id,
                                   status=status, monitor_config=monitor_config(job))
        except Exception as e:
            log.warning("[%s] Sentry check-in %s not sent: %s", job.name, status,
                        type(e).__name__)
            return None

    # ---------------------------------------------------------------- sending
    def _send(self, alert: Alert) -> None:
        self._to_sentry(alert)
        rid = _run_fields(alert.run)[0] if alert.run else "-"
        for raw in alert.job.alert:
            try:
                route = parse_route(raw)
            except ValueError as e:
                log.warning("[%s %s] alert not sent: %s", alert.job.name, rid, e)
                continue
            try:
                getattr(self, f"_to_{route.kind}")(route, alert)
            except Exception as e:  # an alert never fails a job
                log.warning("[%s %s] alert to %s not sent: %s", alert.job.name, rid, route,
                            self._reason(e))
            else:
                log.info("[%s %s] alert sent to %s", alert.job.name, rid, route)

    def _to_sentry(self, alert: Alert) -> None:
        if not self.settings.sentry_dsn:
            return
        try:
            with sentry_sdk.new_scope() as scope:
                scope.set_tags(sentry_tags(alert.job, alert.run))
                scope.set_tag("jankycron.event", alert.event)
                scope.fingerprint = fingerprint(alert.job.name)
                if alert.detail:
                    scope.set_context("jankycron", {"detail": alert.detail})
                sentry_sdk.capture_message(scrub(alert.text, self._secrets), level=alert.level)
        except Exception as e:
            log.warning("[%s] Sentry event not sent: %s", alert.job.name, type(e).__name__)

    def _to_slack(self, route: Route, alert: Alert) -> None:
        url = self.settings.slack_webhook_url
        if not url:
            raise _NotSent("JANKYCRON_SLACK_WEBHOOK_URL is not set")
        self._post(url, {"channel": route.target, "text": scrub(alert.text, self._secrets),
                         "username": "jankycron"})

    def _to_webhook(self, route: Route, alert: Alert) -> None:
        self._post(route.target, _scrub_deep(alert.payload(), self._secrets))

    def _post(self, url: str, body: dict) -> None:
        r = self.session.post(url, json=body, timeout=HTTP_TIMEOUT, allow_redirects=False)
        if r.status_code >= 300:
            # Slack answers errors with a short code such as "channel_not_found": worth a log.
            code = r.text.strip()[:40] if re.fullmatch(r"[a-z_]{1,40}", r.text.strip()) else ""
            raise _NotSent(f"HTTP {r.status_code}{f' {code}' if code else ''}")

    def _to_email(self, route: Route, alert: Alert) -> None:
        if not self.settings.smtp_url:
            raise _NotSent("JANKYCRON_SMTP_URL is not set")
        msg = EmailMessage()
        msg["From"] = self.settings.alert_from
        msg["To"] = route.target
        msg["Subject"] = scrub(f"[jankycron] {alert.job.name} {alert.summary}", self._secrets)[:200]
        msg.set_content(scrub(f"{alert.text}\n\n{alert.detail}\n", self._secrets))
        u = urlsplit(self.settings.smtp_url)
        tls = u.scheme == "smtps"
        if tls:
            smtp = smtplib.SMTP_SSL(u.hostname, u.port or 465, timeout=SMTP_TIMEOUT,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(u.hostname, u.port or 25, timeout=SMTP_TIMEOUT)
        with smtp:
            if not tls:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                    tls = True
            if u.username:
                if not tls:
                    raise _NotSent("the SMTP server offers no TLS; credentials not sent")
                smtp.login(unquote(u.username), unquote(u.password or ""))
            smtp.send_message(msg)

    # ---------------------------------------------------------------- text
    def _first_line(self, text: str) -> str:
        lines = [ln.strip() for ln in scrub(text or "", self._secrets).splitlines() if ln.strip()]
        line = lines[0] if lines else "(no error text)"
        return line if len(line) <= 300 else line[:297] + "..."

    def _bounded(self, text: str) -> str:
        return scrub(text or "", self._secrets)[:4000]

    def _reason(self, e: Exception) -> str:
        if isinstance(e, _NotSent):
            return str(e)
        if isinstance(e, requests.RequestException):
            return type(e).__name__  # their text holds the URL, whose path may be a token
        first = (str(e).strip().splitlines() or [""])[0][:200]
        return scrub(f"{type(e).__name__}: {first}" if first else type(e).__name__,
                     self._secrets)


class _NotSent(Exception):
    """A route that answered, but not with success (one line, safe to log)."""
