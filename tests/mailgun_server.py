"""A local HTTP server that behaves like Mailgun's Events API, for the email job's tests.

``GET /v3/{domain}/events?begin=&end=&ascending=yes&limit=&event=a OR b`` answers
``{"items": [...], "paging": {"next": URL, ...}}`` with HTTP Basic auth ``api:KEY``; the next
URL is ``/v3/{domain}/events/{token}``, an opaque token holding the query and the position
after the last item served (as Mailgun's do), and the list ends with an empty page. Events are
stored with a *visible* flag: a late event is added invisible and made visible later
(``arrive``), like an event that reaches Mailgun's store after it happened. Faults are served,
in order, to the next requests: a 429 with ``Retry-After``, a 5xx. Every request is recorded.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from conftest import http_server

API_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DOMAIN = "mg.example.com"


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    status: int


class Mailgun:
    """The server's data and behaviour; ``serve()`` runs it on a free loopback port."""

    def __init__(self, page_size: int = 300, api_key: str = API_KEY, domain: str = DOMAIN):
        self.page_size, self.api_key, self.domain = page_size, api_key, domain
        self.events: list[dict] = []
        self.visible: dict[str, bool] = {}
        self.faults: list[tuple[str, Fault]] = []
        self.seen: list[Seen] = []
        self.base = ""
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------- data building
    def add(self, event: str, when: datetime, *, visible: bool = True, **extra: Any) -> dict:
        """Store one event stamped ``when``; returns it (its ``id`` is the merge key)."""
        eid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        n = len(self.events) + 1
        item = {
            "id": eid, "event": event, "timestamp": when.timestamp(), "log-level": "info",
            "recipient": f"user{n}@example.org", "recipient-domain": "example.org",
            "message": {"headers": {"message-id": f"20261120.{n}@{self.domain}",
                                    "from": f"news@{self.domain}", "to": f"user{n}@example.org",
                                    "subject": "Our November news"}, "size": 2048},
            "tags": ["newsletter"], "user-variables": {"user_id": str(n)},
            "envelope": {"sender": f"news@{self.domain}", "transport": "smtp"},
        }
        if event == "delivered":
            item["delivery-status"] = {"code": 250, "message": "OK", "attempt-no": 1,
                                       "tls": True, "description": ""}
        if event in ("opened", "clicked", "unsubscribed", "complained"):
            item.update({"ip": "203.0.113.7",
                         "geolocation": {"country": "DE", "region": "BE", "city": "Berlin"},
                         "client-info": {"client-type": "browser", "client-os": "Linux",
                                         "client-name": "Firefox", "device-type": "desktop",
                                         "user-agent": "Mozilla/5.0 (X11; Linux x86_64)"}})
        if event == "clicked":
            item["url"] = f"https://example.com/news?utm_source=mail&n={n}"
        if event == "failed":
            item.update({"severity": "permanent", "reason": "bounce",
                         "delivery-status": {"code": 550, "message": "5.1.1 User unknown",
                                             "description": "", "attempt-no": 1}})
        item.update(extra)
        with self._lock:
            self.events.append(item)
            self.visible[eid] = visible
        return item

    def arrive(self, item: dict) -> None:
        """A late event reaches the store: from now on it is listed."""
        with self._lock:
            self.visible[item["id"]] = True

    def fail_next(self, fault: Fault, on: str = "any") -> None:
        """Serve ``fault`` instead of the next request of a kind: ``first`` (a new query),
        ``next`` (a ``paging.next`` URL) or ``any``. Faults queue up in order."""
        with self._lock:
            self.faults.append((on, fault))

    def pages_served(self) -> list[Seen]:
        return [s for s in self.seen if s.status == 200]

    # ---------------------------------------------------------------------- serving
    def handle(self, path: str, query: dict[str, str], auth: str | None
               ) -> tuple[int, dict[str, str], Any]:
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if auth != expected:
            return 401, {}, "Forbidden"  # Mailgun answers a bad key with plain text
        prefix = f"/v3/{self.domain}/events"
        token = path[len(prefix):].lstrip("/") if path.startswith(prefix) else ""
        kind = "next" if token else "first"
        with self._lock:
            match = next((f for f in self.faults if f[0] in (kind, "any")), None)
            if match:
                self.faults.remove(match)
        if match:
            return match[1].status, match[1].headers, match[1].body
        if not path.startswith(prefix):
            return 404, {}, {"message": f"Domain not found: {path.split('/')[2]}"}
        if token:
            q = json.loads(base64.urlsafe_b64decode(token.encode()))
        else:
            if query.get("ascending") != "yes" or "begin" not in query:
                return 400, {}, {"message": "this fake serves ascending ranges only"}
            q = {"begin": float(query["begin"]), "end": float(query.get("end", "1e12")),
                 "limit": min(int(query.get("limit", 100)), 300),
                 "event": query.get("event"), "after": None}
        return 200, {}, self.page(q)

    def page(self, q: dict) -> dict:
        types = {t.strip() for t in q["event"].split(" OR ")} if q["event"] else None
        with self._lock:
            items = [e for e in self.events if self.visible[e["id"]]]
        items = sorted((e for e in items
                        if q["begin"] <= e["timestamp"] <= q["end"]  # both ends inclusive
                        and (types is None or e["event"] in types)),
                       key=lambda e: (e["timestamp"], e["id"]))
        if q["after"] is not None:
            after = tuple(q["after"])
            items = [e for e in items if (e["timestamp"], e["id"]) > after]
        chunk = items[: min(q["limit"], self.page_size)]
        nxt = dict(q, after=[chunk[-1]["timestamp"], chunk[-1]["id"]] if chunk else q["after"])
        token = base64.urlsafe_b64encode(json.dumps(nxt).encode()).decode()
        url = f"{self.base}/v3/{self.domain}/events/{token}"
        return {"items": chunk, "paging": {"next": url, "previous": url, "first": url,
                                           "last": url}}

    @contextmanager
    def serve(self) -> Iterator[Mailgun]:
        with http_server(_handler(self)) as root:
            self.base = root + ""
            yield self


def _handler(mg: Mailgun) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            status, headers, body = mg.handle(parts.path, query, self.headers.get("Authorization"))
            with mg._lock:
                mg.seen.append(Seen(parts.path, query, status))
            if isinstance(body, str):
                data, ctype = body.encode(), "text/plain"
            else:
                data, ctype = json.dumps(body).encode(), "application/json"
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
