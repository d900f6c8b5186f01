"""``POST /webhooks/segment``: Segment's Webhooks destination, verified and stored durably.

What each answer means to Segment (it retries timeouts and 5xx for 4 hours, never 4xx):

- ``200 {"accepted": N}``: the N events are in the Redis stream (``sources/segment.py``); the
  drain job stages them and the loader merges them on ``messageId``.
- ``401``: ``X-Signature`` is missing or is not the hex HMAC-SHA1 of the raw body with
  ``JANKYCRON_SEGMENT_SECRET`` (compared in constant time). Computed over the bytes received,
  never over re-serialised JSON, which would not match byte for byte.
- ``400``: the body is not JSON, not an event object or an array of them, or an event has no
  ``messageId`` (the answer says which one).
- ``413``: the body is larger than ``JANKYCRON_WEBHOOK_MAX_BODY`` (16MB); checked before the
  body is read (``Content-Length``) and while reading it (chunked bodies).
- ``503``: the events could not be stored (Redis down, full, or not configured), or no secret
  is configured; Segment retries, and unsigned data is never accepted.

Answers are one-line JSON ``{"error": ...}``; the secret is never logged nor echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from .config import Settings, redact
from .errors import ConfigError
from .sources import segment

log = logging.getLogger(__name__)

segment_webhook = Blueprint("segment_webhook", __name__)


def _settings() -> Settings:
    return current_app.extensions["jankycron"].settings


def _client() -> Any:
    """The stream's Redis client, built on first use and cached on the app (one per process;
    redis-py's pool is safe across gunicorn's fork)."""
    ext = current_app.extensions
    if "jankycron.segment_redis" not in ext:
        ext["jankycron.segment_redis"] = segment.connect(_settings().webhook_redis_url)
    return ext["jankycron.segment_redis"]


def _error(code: int, message: str) -> tuple[Response, int]:
    if code >= 500:
        log.error("segment webhook: %d %s", code, message)
    else:
        log.warning("segment webhook: %d %s", code, message)
    return jsonify(error=message), code


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` is the hex HMAC-SHA1 of the raw ``body`` under ``secret``."""
    if not signature:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    # As bytes: compare_digest refuses str with non-ASCII characters (a 500, not a 401).
    given = signature.strip().lower().encode("utf-8", "replace")
    return hmac.compare_digest(expected.encode(), given)


def check_events(data: Any) -> str | None:
    """Why the parsed body is not one event or an array of events with messageIds, or None."""
    events = data if isinstance(data, list) else [data]
    if not events:
        return "empty batch: no events"
    for i, event in enumerate(events):
        where = f"event {i} of the batch" if isinstance(data, list) else "the event"
        if not isinstance(event, dict):
            return f"{where} is not a JSON object"
        mid = event.get("messageId")
        if not isinstance(mid, str) or not mid:
            return f"{where} has no messageId"
    return None


@segment_webhook.post("/webhooks/segment")
def receive() -> tuple[Response, int]:
    settings = _settings()
    if not settings.segment_secret:
        return _error(503, "webhook not configured: JANKYCRON_SEGMENT_SECRET is not set")
    limit = settings.webhook_max_body
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"body of {request.content_length} bytes is over the limit of "
                           f"{limit} (JANKYCRON_WEBHOOK_MAX_BODY)")
    # A chunked body has no Content-Length: read at most one byte more than the limit
    # (werkzeug stops a stream at max_content_length), so that a larger one shows.
    request.max_content_length = limit + 1
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        body = None
    if body is None or len(body) > limit:
        return _error(413, f"body is over the limit of {limit} bytes "
                           "(JANKYCRON_WEBHOOK_MAX_BODY)")
    if not verify(settings.segment_secret, body, request.headers.get("X-Signature")):
        what = "bad" if request.headers.get("X-Signature") else "missing"
        return _error(401, f"{what} X-Signature: expected the hex HMAC-SHA1 of the body")
    try:
        data = json.loads(body)
    except ValueError as e:  # also bad UTF-8
        return _error(400, f"body is not JSON: {str(e).splitlines()[0][:200]}")
    problem = check_events(data)
    if problem:
        return _error(400, problem)
    n = len(data) if isinstance(data, list) else 1
    try:
        segment.append(_client(), body, n)
    except ConfigError as e:
        return _error(503, str(e))
    except Exception as e:  # any Redis failure: not stored, so Segment must retry
        url = redact(settings.webhook_redis_url or "")
        reason = str(e).splitlines()[0][:200] if str(e) else ""
        return _error(503, f"events not stored: Redis at {url}: {type(e).__name__}: {reason}")
    return jsonify(accepted=n), 200
