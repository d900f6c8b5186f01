"""A small HTTP client for the bundled sources, on ``requests``.

    client = Client("https://ghe.example.com/api/v3", headers={"Authorization": "token ..."})
    for resp in client.pages("repos/acme/api/pulls", {"state": "all"}):
        ...

What it does for every request:

- **Timeouts** on connect and read (a hung socket fails, it does not hang a worker).
- **5xx and network errors** are retried ``retries`` times with exponential backoff and jitter;
  after that a ``TransientError`` (the run is retried later, nothing is lost).
- **Rate limits.** A 429, or a 403 that is a rate limit (``Retry-After``, ``X-RateLimit-
  Remaining: 0`` or "rate limit" in the body: GitHub's secondary limits), waits ``Retry-After``,
  else until ``X-RateLimit-Reset``, else ``secondary_wait`` doubling. A response that says
  ``X-RateLimit-Remaining: 0`` makes the *next* request wait until the reset, instead of
  spending it on a 403. No rate-limit headers at all (GHES with rate limiting off) is normal.
- **A cap on any single wait** (``max_wait``): a longer wait raises ``TransientError`` at once,
  so the run is retried later instead of sleeping past its timeout.
- **Other 4xx** raise ``HTTPStatusError`` (a ``TerminalError``) naming the status and the URL
  without its query string.

Waiting goes through ``sleep`` (tests pass a recorder). Headers are never logged and errors
never carry the query string or user info of a URL, so tokens stay out of logs and messages.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from ..errors import TerminalError, TransientError

_log = logging.getLogger(__name__)

# Errors after which the same request may well succeed. A ChunkedEncodingError is a
# connection cut in the middle of a body.
_NETWORK = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class HTTPStatusError(TerminalError):
    """A 4xx response that retrying will not fix (bad token, no access, not found)."""

    def __init__(self, message: str, status: int, path: str):
        super().__init__(message)
        self.status = status
        self.path = path


def where(method: str, url: str) -> str:
    """``GET host/path`` for messages: no scheme, user info or query string (secrets live
    there, if anywhere)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{method} {host}{parts.path}"


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _message(resp: requests.Response) -> str:
    """The API's own one-line reason (GitHub: ``{"message": "Bad credentials"}``), if any."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    msg = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(msg).split())[:200] if msg else ""


class Client:
    """HTTP GETs against one API root with the retry and rate-limit rules of this module.

    - ``base_url``: relative paths are joined to it; absolute URLs (pagination links) must
      stay on its scheme and host, so the token is never sent anywhere else.
    - ``retries``: extra attempts after a 5xx or network error, waiting about ``backoff`` *
      2**n seconds (times a random 0.5-1.5, at most ``backoff_max``).
    - ``max_wait``: the longest single wait; a longer one raises ``TransientError``.
    - ``rate_limit_waits``: how many rate-limit waits one request may take.
    - ``sleep``, ``clock``, ``rng``: injectable for tests.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] = (10.0, 60.0),
        retries: int = 4,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        max_wait: float = 900.0,
        rate_limit_waits: int = 10,
        secondary_wait: float = 60.0,
        reset_margin: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        log: logging.Logger | logging.LoggerAdapter | None = None,
        session: requests.Session | None = None,
    ):
        self.base_url = base_url.rstrip("/") + "/"
        self.session = session or requests.Session()
        self.session.headers.update(headers or {})
        self.timeout = timeout
        self.retries = retries
        self.backoff, self.backoff_max = backoff, backoff_max
        self.max_wait = max_wait
        self.rate_limit_waits = rate_limit_waits
        self.secondary_wait = secondary_wait
        self.reset_margin = reset_margin
        self.sleep, self.clock = sleep, clock
        self.rng = rng or random.Random()
        self.log = log or _log
        self._origin = urlsplit(self.base_url)[:2]
        self._not_before = 0.0  # clock() before which no request is sent (limit exhausted)

    def __repr__(self) -> str:  # never the session headers: they hold the token
        return f"Client({where('', self.base_url).strip()})"

    # ------------------------------------------------------------------------- requests
    def url(self, path: str) -> str:
        url = urljoin(self.base_url, path.lstrip("/")) if "://" not in path else path
        if urlsplit(url)[:2] != self._origin:
            raise TerminalError(f"{where('GET', url)}: refusing a URL outside "
                                f"{where('', self.base_url).strip()} (the token is not sent "
                                "to other hosts)")
        return url

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> requests.Response:
        return self.request("GET", path, params=params)

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        resp = self.get(path, params)
        return self._json(resp)

    def pages(self, path: str, params: Mapping[str, Any] | None = None
              ) -> Iterator[requests.Response]:
        """Each page of a list, following ``Link: <...>; rel="next"`` (GitHub's pagination).

        The next page is requested only when the caller asks for it, so a caller that stops
        iterating stops paging."""
        resp = self.get(path, params)
        while True:
            yield resp
            nxt = resp.links.get("next", {}).get("url")
            if not nxt:
                return
            resp = self.get(nxt)  # the link carries the query (page, since, per_page...)

    def items(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """The items of every page of a list whose pages are JSON arrays."""
        for resp in self.pages(path, params):
            body = self._json(resp)
            if not isinstance(body, list):
                raise TerminalError(f"{where('GET', resp.url)}: expected a JSON list, got "
                                    f"{type(body).__name__}")
            yield from body

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.url(path)
        what = where(method, url)
        failures = limited = 0
        while True:
            if self._not_before > self.clock():
                self._wait(self._not_before - self.clock(), what,
                           "rate limit used up (X-RateLimit-Remaining: 0), waiting for the reset")
                self._not_before = 0.0  # waited once; the next response says where we stand
            try:
                resp = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except _NETWORK as e:
                failures += 1
                if failures > self.retries:
                    raise TransientError(f"{what}: {type(e).__name__} after {self.retries} "
                                         "retries") from None
                self._wait(self._backoff(failures), what,
                           f"{type(e).__name__}, retry {failures}/{self.retries}")
                continue
            self._note_remaining(resp)
            status = resp.status_code
            if status < 400:
                return resp
            limit = self._rate_limit_wait(resp, limited)
            if limit is not None:
                limited += 1
                if limited > self.rate_limit_waits:
                    raise TransientError(f"{what}: {status}, still rate limited after "
                                         f"{self.rate_limit_waits} waits")
                self._wait(limit[0], what, f"{status} {limit[1]}")
                continue
            if status >= 500:
                failures += 1
                if failures > self.retries:
                    raise TransientError(f"{what}: {status} {resp.reason} after "
                                         f"{self.retries} retries")
                self._wait(self._backoff(failures), what,
                           f"{status} {resp.reason}, retry {failures}/{self.retries}")
                continue
            msg = _message(resp)
            raise HTTPStatusError(f"{what}: {status} {resp.reason}" + (f" ({msg})" if msg else ""),
                                  status, urlsplit(url).path)

    # ------------------------------------------------------------------------- waiting
    def _wait(self, seconds: float, what: str, reason: str) -> None:
        seconds = max(0.0, seconds)
        if seconds > self.max_wait:
            raise TransientError(f"{what}: {reason}: would wait {seconds:.0f}s, over the "
                                 f"{self.max_wait:.0f}s cap; retry later")
        self.log.warning("%s: %s; waiting %.1fs", what, reason, seconds)
        self.sleep(seconds)

    def _backoff(self, failures: int) -> float:
        base = min(self.backoff_max, self.backoff * 2 ** (failures - 1))
        return min(self.backoff_max, base * self.rng.uniform(0.5, 1.5))

    def _until_reset(self, resp: requests.Response) -> float | None:
        """Seconds until ``X-RateLimit-Reset`` (+ margin), measured on the server's clock
        (``Date``) when it sends one, so a skewed local clock does not stretch the wait."""
        reset = resp.headers.get("X-RateLimit-Reset", "").strip()
        if not reset.isdigit():
            return None
        now = self.clock()
        date = resp.headers.get("Date")
        if date:
            try:
                now = email.utils.parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                pass
        return max(0.0, int(reset) - now) + self.reset_margin

    def _note_remaining(self, resp: requests.Response) -> None:
        if resp.status_code < 400 and resp.headers.get("X-RateLimit-Remaining", "").strip() == "0":
            wait = self._until_reset(resp)
            if wait is not None:
                self._not_before = self.clock() + wait

    def _rate_limit_wait(self, resp: requests.Response, limited: int
                         ) -> tuple[float, str] | None:
        """(seconds, why) when ``resp`` is a rate limit to wait out; None when it is not."""
        if resp.status_code not in (403, 429):
            return None
        after = retry_after(resp.headers.get("Retry-After"), self.clock())
        if after is not None:
            return after, f"rate limited, Retry-After {resp.headers['Retry-After'].strip()}"
        if resp.headers.get("X-RateLimit-Remaining", "").strip() == "0":
            wait = self._until_reset(resp)
            if wait is not None:
                return wait, "rate limit used up, waiting for X-RateLimit-Reset"
        if resp.status_code == 429 or "rate limit" in _message(resp).lower():
            # GitHub: "wait at least one minute, then back off exponentially"
            return self.secondary_wait * 2 ** limited, "secondary rate limit"
        return None  # a plain 403: no access

    def _json(self, resp: requests.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            # A proxy's HTML error page with a 200, typically: worth another try later.
            raise TransientError(f"{where('GET', resp.url)}: {resp.status_code} response is "
                                 "not JSON") from None
