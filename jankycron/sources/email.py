"""Email provider events (delivered, opened, clicked, bounced, complained, unsubscribed) as
rows for the ``email_events`` table.

    provider = provider_from_env(log=run.log)      # EMAIL_PROVIDER, MAILGUN_API_KEY, ...
    yield from pull(run.start, run.end, provider)

**Late arrivals.** Providers store events out of order and late: Mailgun says to trust only
events older than about 30 minutes. So a run does not read its own interval but the interval
*shifted back by the provider's lag*: the run for [10:00, 11:00) reads events stamped
[09:30, 10:30). Consecutive runs still read consecutive windows (nothing falls between two
runs, nothing is read twice), and every window ends ``lag`` before its run's interval ends, so
a run of a complete interval only ever reads settled events. A window that would reach into
the last ``lag`` before now (``run --date`` for an interval not over yet) is refused with a
``TransientError`` rather than read half-settled. Rows merge on ``(provider, id)``, so a rerun
or backfill replaces, never duplicates.

Lowering the lag setting leaves one gap of the difference (the next window starts later than
the previous one ended): rerun the interval before the change afterwards. Raising it overlaps
once, which the merge absorbs.

**Normalised rows.** ``event`` uses one vocabulary across providers: ``delivered``,
``opened``, ``clicked``, ``bounced`` (permanent failure), ``deferred`` (temporary failure;
the provider retries), ``dropped`` (never sent: the address is on a suppression list),
``complained``, ``unsubscribed`` (and ``accepted``/``rejected`` when asked for). The
provider's own name is kept in ``provider_event``, with ``severity`` and ``reason``. Times
are UTC. Nothing is cut: the diagnostic texts (``delivery_message``, ``user_agent``) have wide
columns, and a value that still does not fit is a dead letter with the reason, as usual.

**Adding a provider.** Write a class with ``name``, ``lag`` and ``events(start, end)``
yielding rows shaped like ``mailgun_row``'s, and register its settings reader in
``PROVIDERS``. SendGrid (Email Activity API: no pagination, 6 requests/minute, message
summaries rather than events) and Mandrill (``messages/search``) are not implemented yet.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from ..config import parse_duration
from ..errors import ConfigError, TerminalError, TransientError
from .http import Client, HTTPStatusError, where

Log = logging.Logger | logging.LoggerAdapter

TABLE = "email_events"
KEY = ("provider", "id")

# Widths of the free-text columns in warehouse/0003_email_events.sql, in bytes.


class EmailProvider(Protocol):
    """What ``pull`` needs from a provider."""

    name: str
    lag: timedelta  # events younger than this may still be missing from the provider's store

    def events(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        """Normalised rows of the events stamped in [start, end), oldest first."""
        ...


def pull(start: datetime, end: datetime, provider: EmailProvider, *,
         now: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Rows for the run covering [start, end): the events stamped in that interval shifted
    back by ``provider.lag`` (see the module docstring)."""
    lo, hi = start.astimezone(UTC) - provider.lag, end.astimezone(UTC) - provider.lag
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if hi > now - provider.lag:
        settled = hi + provider.lag
        raise TransientError(
            f"{provider.name} events until {hi:%Y-%m-%d %H:%M:%S} UTC may still arrive "
            f"(lag {_human(provider.lag)}); run this interval after "
            f"{settled:%Y-%m-%d %H:%M:%S} UTC")
    return provider.events(lo, hi)


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


# ------------------------------------------------------------------------------- settings
def provider_from_env(environ: Mapping[str, str] | None = None, *,
                      sleep: Callable[[float], None] = time.sleep,
                      log: Log | None = None) -> EmailProvider:
    """The provider named by ``EMAIL_PROVIDER`` (default ``mailgun``), with its settings."""
    env = os.environ if environ is None else environ
    name = env.get("EMAIL_PROVIDER", "").strip().lower() or "mailgun"
    if name not in PROVIDERS:
        raise ConfigError(f"EMAIL_PROVIDER must be one of {', '.join(PROVIDERS)}, got {name!r}")
    return PROVIDERS[name](env, sleep=sleep, log=log)


MAILGUN_US = "https://api.mailgun.net"
MAILGUN_EU = "https://api.eu.mailgun.net"

# Mailgun event name -> normalised event (``failed`` is split by severity and reason).
MAILGUN_EVENTS = {
    "accepted": "accepted", "rejected": "rejected", "delivered": "delivered",
    "failed": None, "opened": "opened", "clicked": "clicked",
    "unsubscribed": "unsubscribed", "complained": "complained",
}
MAILGUN_DEFAULT_EVENTS = ("delivered", "failed", "opened", "clicked", "unsubscribed",
                          "complained")


@dataclass(frozen=True)
class MailgunSettings:
    """Build it with ``mailgun_settings_from_env``."""

    api_key: str = field(repr=False)
    domain: str
    base_url: str = MAILGUN_US
    lag: timedelta = timedelta(minutes=30)
    events: tuple[str, ...] = MAILGUN_DEFAULT_EVENTS
    page_size: int = 300
    max_wait: float = 900.0


def mailgun_settings_from_env(environ: Mapping[str, str] | None = None) -> MailgunSettings:
    """Read the Mailgun settings (``os.environ`` by default).

    - ``MAILGUN_API_KEY``: a key that can read the domain's events (required)
    - ``MAILGUN_DOMAIN``: the sending domain, e.g. ``mg.example.com`` (required)
    - ``MAILGUN_BASE_URL``: ``https://api.mailgun.net`` (default) or, for EU accounts,
      ``https://api.eu.mailgun.net``
    - ``MAILGUN_LAG``: how far behind now events are trusted (default ``30m``, Mailgun's advice)
    - ``MAILGUN_EVENTS``: which event types (default
      ``delivered,failed,opened,clicked,unsubscribed,complained``; ``accepted``, ``rejected``
      may be added)
    - ``MAILGUN_PAGE_SIZE``: events per page, at most 300 (default 300)
    - ``MAILGUN_MAX_WAIT``: the longest rate-limit wait before giving up for a retry (``15m``)
    """
    env = os.environ if environ is None else environ
    key = env.get("MAILGUN_API_KEY", "").strip()
    if not key:
        raise ConfigError("MAILGUN_API_KEY is not set: a Mailgun API key that can read "
                          "events is required")
    domain = env.get("MAILGUN_DOMAIN", "").strip()
    if not domain:
        raise ConfigError("MAILGUN_DOMAIN is not set: the sending domain, e.g. mg.example.com")
    if "/" in domain or " " in domain:
        raise ConfigError(f"MAILGUN_DOMAIN must be a domain name such as mg.example.com, "
                          f"got {domain!r}")
    base = env.get("MAILGUN_BASE_URL", "").strip().rstrip("/") or MAILGUN_US
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"MAILGUN_BASE_URL must be an http(s) URL such as {MAILGUN_US} "
                          f"(EU accounts: {MAILGUN_EU})")
    if parts.username or parts.password or parts.query:
        raise ConfigError("MAILGUN_BASE_URL must not carry credentials or a query; put the "
                          "key in MAILGUN_API_KEY")
    if parts.path.rstrip("/").endswith("/v3"):
        base = base[: -len("/v3")]  # the API root is asked for; tolerate the version too
    lag = parse_duration(env.get("MAILGUN_LAG", "30m"), "MAILGUN_LAG", allow_zero=True)
    events = tuple(dict.fromkeys(
        x.strip().lower() for x in env.get("MAILGUN_EVENTS", "").split(",") if x.strip()
    )) or MAILGUN_DEFAULT_EVENTS
    unknown = [e for e in events if e not in MAILGUN_EVENTS]
    if unknown:
        raise ConfigError(f"MAILGUN_EVENTS: unknown event type(s) {', '.join(unknown)}; "
                          f"known: {', '.join(MAILGUN_EVENTS)}")
    size = env.get("MAILGUN_PAGE_SIZE", "300").strip()
    if not size.isdigit() or not 1 <= int(size) <= 300:
        raise ConfigError(f"MAILGUN_PAGE_SIZE must be a number from 1 to 300, got {size!r}")
    max_wait = parse_duration(env.get("MAILGUN_MAX_WAIT", "15m"), "MAILGUN_MAX_WAIT")
    return MailgunSettings(key, domain, base, timedelta(seconds=lag), events, int(size),
                           max_wait)


# ------------------------------------------------------------------------------- Mailgun
class Mailgun:
    """Mailgun's Events API, ``GET /v3/{domain}/events``: an ascending ``begin``/``end``
    range, followed page by page through ``paging.next`` until a page has no items.

    Mailgun marks this API deprecated in favour of the Logs API (``POST /v1/analytics/logs``);
    it still serves every account, and the Logs API's rows (``id``, ``event``,
    ``@timestamp``) would map onto the same ``mailgun_row``.
    """

    name = "mailgun"

    def __init__(self, settings: MailgunSettings, *,
                 sleep: Callable[[float], None] = time.sleep, log: Log | None = None):
        self.settings = settings
        self.lag = settings.lag
        auth = base64.b64encode(f"api:{settings.api_key}".encode()).decode()
        self.client = Client(
            f"{settings.base_url}/v3/{quote(settings.domain)}",
            headers={"Authorization": f"Basic {auth}", "User-Agent": "jankycron"},
            max_wait=settings.max_wait, sleep=sleep, log=log,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, sleep: Callable[[float], None] = time.sleep,
                 log: Log | None = None) -> Mailgun:
        return cls(mailgun_settings_from_env(environ), sleep=sleep, log=log)

    def __repr__(self) -> str:
        return f"Mailgun({self.settings.domain} via {self.client!r})"

    def events(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        lo, hi = start.timestamp(), end.timestamp()
        wanted = set(self.settings.events)
        params = {"begin": _epoch(lo), "end": _epoch(hi), "ascending": "yes",
                  "limit": self.settings.page_size, "event": " OR ".join(self.settings.events)}
        try:
            url, query = "events", params
            while True:
                body = self.client.get_json(url, query)
                items = body.get("items") if isinstance(body, dict) else None
                if not isinstance(items, list):
                    raise TerminalError(f"{where('GET', self.client.url(url))}: expected "
                                        "{\"items\": [...], \"paging\": {...}}")
                if not items:
                    return  # Mailgun: the list ends with an empty page
                for item in items:
                    ts = float(item["timestamp"])
                    if ts >= hi:
                        return  # ascending: the rest are later still
                    if ts >= lo and item.get("event") in wanted:
                        yield mailgun_row(item, self.settings.domain)
                url, query = (body.get("paging") or {}).get("next"), None
                if not url:
                    return
        except HTTPStatusError as e:
            if e.status == 401:
                raise ConfigError(f"{e}: check MAILGUN_API_KEY (and MAILGUN_BASE_URL: EU "
                                  f"accounts use {MAILGUN_EU})") from None
            if e.status == 404:
                raise ConfigError(f"{e}: check MAILGUN_DOMAIN ({self.settings.domain}) and "
                                  "MAILGUN_BASE_URL") from None
            raise


PROVIDERS: dict[str, Callable[..., EmailProvider]] = {"mailgun": Mailgun.from_env}


def _epoch(seconds: float) -> str:
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:.6f}"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _mailgun_event(item: dict[str, Any]) -> str:
    name = item.get("event", "")
    if name != "failed":
        return MAILGUN_EVENTS.get(name) or name
    if item.get("severity") == "temporary":
        return "deferred"  # Mailgun retries; a permanent failure follows if it gives up
    if str(item.get("reason", "")).startswith("suppress-"):
        return "dropped"  # on a bounce/unsubscribe/complaint list: never sent
    return "bounced"


def mailgun_row(item: dict[str, Any], domain: str) -> dict[str, Any]:
    """One ``email_events`` row from a Mailgun event."""
    headers = (item.get("message") or {}).get("headers") or {}
    status = item.get("delivery-status") or {}
    geo = item.get("geolocation") or {}
    client = item.get("client-info") or {}
    tags = item.get("tags")
    variables = item.get("user-variables")
    return {
        "provider": "mailgun",
        "id": item["id"],
        "occurred_at": datetime.fromtimestamp(float(item["timestamp"]), UTC),
        "event": _mailgun_event(item),
        "provider_event": item.get("event"),
        "domain": domain,
        "recipient": item.get("recipient"),
        "recipient_domain": item.get("recipient-domain"),
        "message_id": headers.get("message-id"),
        "severity": item.get("severity"),
        "reason": item.get("reason") or None,
        "delivery_code": _int(status.get("code")),
        "delivery_message": status.get("message") or status.get("description") or None,
        "url": item.get("url"),
        "ip": item.get("ip"),
        "country": geo.get("country"),
        "region": geo.get("region"),
        "city": geo.get("city"),
        "client_type": client.get("client-type"),
        "client_os": client.get("client-os"),
        "client_name": client.get("client-name"),
        "device_type": client.get("device-type"),
        "user_agent": client.get("user-agent") or None,
        "tags": tags if isinstance(tags, list) else None,
        "user_variables": variables if isinstance(variables, dict) and variables else None,
    }
