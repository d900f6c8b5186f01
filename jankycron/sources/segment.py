"""Segment events: the Redis stream the webhook appends to, and its drain into warehouse rows.

The web process (``jankycron/webhooks.py``) appends each verified request body, as received,
to the stream ``jankycron:segment:events`` (one entry per request). ``jobs/segment_events.py``
drains it every few minutes with a consumer group and yields one row per event for the
``segment_*`` tables (``warehouse/0004_segment.sql``), merged on ``id`` = ``messageId``.

When is an entry acknowledged? The runner saves ``run.state`` only after the run's batches are
staged and recorded, and loads them afterwards (possibly later, by another process). A drain
therefore records the stream ranges it read in ``run.state`` and acknowledges them at the start
of a *later* run, once the ledger shows every batch of that run **loaded**:

- a crash before staging: the run's state is not saved; its entries stay pending and the next
  run reads them again (pending entries no saved run covers are always re-read first);
- a crash after staging, before the ack: the entries are acked by the next run, or read and
  staged again, and the loader merges them on ``messageId``: no duplicate rows;
- a run whose batch was *superseded* (a newer run of the same interval replaced it before it
  loaded, which for a drain does not hold the same events) is forgotten unacked, so its
  entries are read again.

Acknowledged entries are trimmed (``XTRIM MINID`` below the oldest unacknowledged one).
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from ..config import Settings, redact
from ..errors import ConfigError, TransientError
from ..ledger import BatchStatus, Ledger

log = logging.getLogger(__name__)

STREAM = "jankycron:segment:events"
GROUP = "jankycron-segment-drain"
CONSUMER = "drain"  # one name: a crashed drain's pending entries are re-read by the next one
READ_COUNT = 1000  # entries per XREADGROUP call (one call = one recorded range)
MAX_EVENTS = 500_000  # per run; the rest waits for the next run

TABLES = {
    "track": "segment_tracks",
    "identify": "segment_identifies",
    "page": "segment_pages",
    "screen": "segment_screens",
    "group": "segment_groups",
    "alias": "segment_aliases",
}

# context fields most analyses filter on get their own column (as Segment's warehouses do);
# the whole context object is kept in ``context`` (SUPER) for the rest.
CONTEXT_COLUMNS = {
    "context_ip": ("ip",),
    "context_locale": ("locale",),
    "context_timezone": ("timezone",),
    "context_user_agent": ("userAgent",),
    "context_library_name": ("library", "name"),
    "context_library_version": ("library", "version"),
    "context_page_path": ("page", "path"),
    "context_page_referrer": ("page", "referrer"),
    "context_page_search": ("page", "search"),
    "context_page_title": ("page", "title"),
    "context_page_url": ("page", "url"),
    "context_campaign_source": ("campaign", "source"),
    "context_campaign_medium": ("campaign", "medium"),
    "context_campaign_name": ("campaign", "name"),
    "context_campaign_term": ("campaign", "term"),
    "context_campaign_content": ("campaign", "content"),
    "context_app_name": ("app", "name"),
    "context_app_version": ("app", "version"),
    "context_device_type": ("device", "type"),
    "context_os_name": ("os", "name"),
    "context_os_version": ("os", "version"),
}


# ------------------------------------------------------------------------------ the stream
def connect(url: str | None) -> redis.Redis:
    """A client for the stream's Redis; short timeouts, so that a Redis that is down is a
    quick 503 (Segment waits 5 s) or a transient drain failure, never a hang."""
    if not url:
        raise ConfigError("no Redis for the Segment stream: set JANKYCRON_WEBHOOK_REDIS_URL")
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=3,
                                health_check_interval=30)


def append(client: redis.Redis, body: bytes, events: int) -> bytes:
    """Store one verified request body (as received) in the stream; returns the entry id.
    No MAXLEN: an entry leaves the stream only once its events are loaded."""
    return client.xadd(STREAM, {"body": body, "events": events})


def _sid(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(ms), int(seq or 0)


def _fmt(sid: tuple[int, int]) -> str:
    return f"{sid[0]}-{sid[1]}"


class Ranges:
    """Stream id ranges (inclusive) that staged-but-not-yet-loaded runs hold."""

    def __init__(self, ranges: Iterable[tuple[str, str]]):
        self._r = sorted((_sid(a), _sid(b)) for a, b in ranges)
        self._starts = [a for a, _ in self._r]

    def __contains__(self, sid: tuple[int, int]) -> bool:
        i = bisect.bisect_right(self._starts, sid) - 1
        return i >= 0 and self._r[i][0] <= sid <= self._r[i][1]


def _ranges_of(ids: list[tuple[int, int]], taken: list[bool]) -> list[list[str]]:
    """The runs of consecutive taken ids of one read call, as [first, last] ranges."""
    out: list[list[str]] = []
    run: list[tuple[int, int]] = []
    for sid, ok in zip(ids, taken, strict=True):
        if ok:
            run.append(sid)
        elif run:
            out.append([_fmt(run[0]), _fmt(run[-1])])
            run = []
    if run:
        out.append([_fmt(run[0]), _fmt(run[-1])])
    return out


class Drain:
    """One drain run against the stream: settle earlier runs, trim, read."""

    def __init__(self, client: redis.Redis, ledger: Ledger, log: logging.Logger | Any = log):
        self.client, self.ledger, self.log = client, ledger, log

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def settle(self, held: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Ack the ranges of runs whose batches all loaded; keep those still pending; forget
        (unacked, so they are read again) those superseded or unknown. Returns the kept."""
        kept = []
        for entry in held:
            statuses = self.ledger.batch_statuses(entry["run"])
            if statuses == {BatchStatus.LOADED}:
                acked = self.ack(entry["ranges"])
                self.log.info("acknowledged %d stream entries of run %s", acked, entry["run"])
            elif BatchStatus.PENDING in statuses:
                kept.append(entry)
            else:
                self.log.warning("run %s's batches were %s: its stream entries are read again",
                                 entry["run"], ", ".join(sorted(statuses)) or "not recorded")
        return kept

    def ack(self, ranges: list[list[str]]) -> int:
        acked = 0
        for first, last in ranges:
            start = first
            while True:
                pending = self.client.xpending_range(STREAM, GROUP, min=start, max=last,
                                                     count=10_000, consumername=CONSUMER)
                if not pending:
                    break
                ids = [p["message_id"] for p in pending]
                acked += self.client.xack(STREAM, GROUP, *ids)
                ms, seq = _sid(ids[-1])
                start = f"{ms}-{seq + 1}"
        return acked

    def trim(self) -> int:
        """Delete every entry below the oldest one not yet acknowledged."""
        summary = self.client.xpending(STREAM, GROUP)
        if summary["pending"]:
            minid = _sid(summary["min"])
        else:
            groups = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g
                      for g in self.client.xinfo_groups(STREAM)}
            ms, seq = _sid(groups[GROUP]["last-delivered-id"])
            minid = (ms, seq + 1)
        return self.client.xtrim(STREAM, minid=_fmt(minid), approximate=False)

    def read(self, covered: Ranges, limit: int = MAX_EVENTS
             ) -> Iterator[tuple[list[tuple[tuple[int, int], bytes]], list[list[str]]]]:
        """Per read call: the entries to stage and the id ranges they span. First the pending
        entries no kept run covers (a crashed drain's), then new ones, at most ``limit``."""
        count = 0
        for phase in ("pending", "new"):
            cursor = "0"
            while count < limit:
                reply = self.client.xreadgroup(
                    GROUP, CONSUMER, {STREAM: cursor if phase == "pending" else ">"},
                    count=min(READ_COUNT, limit - count))
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                ids = [_sid(eid) for eid, _ in entries]
                taken = [phase == "new" or sid not in covered for sid in ids]
                batch = [(sid, fields.get(b"body", b""))
                         for sid, (_, fields), ok in zip(ids, entries, taken, strict=True) if ok]
                count += len(batch)
                yield batch, _ranges_of(ids, taken)
                cursor = _fmt(ids[-1])


def drain(run: Any, settings: Settings, limit: int = MAX_EVENTS
          ) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows of a drain run, as (table, row); see the module docstring for the acks."""
    client = connect(settings.webhook_redis_url)
    where = redact(settings.webhook_redis_url or "")
    try:
        ledger = Ledger.open(settings)  # only to settle: closed before any row is yielded
        try:
            d = Drain(client, ledger, run.log)
            d.ensure_group()
            held = d.settle(list(run.state.get("unacked", [])))
        finally:
            ledger.close()
        d.trim()
        covered = Ranges(r for entry in held for r in entry["ranges"])
        mine: list[list[str]] = []
        seen: set[str] = set()
        counts = {"entries": 0, "events": 0, "duplicates": 0, "skipped": 0}
        uuid_ts = datetime.now(UTC)
        for entries, ranges in d.read(covered, limit):
            mine.extend(ranges)
            for sid, body in entries:
                counts["entries"] += 1
                received = datetime.fromtimestamp(sid[0] / 1000, UTC)
                for event in _events(body, sid, run.log):
                    counts["events"] += 1
                    mid = event.get("messageId")
                    if mid in seen:  # Segment's retries, drained together: stage one
                        counts["duplicates"] += 1
                        continue
                    seen.add(mid)
                    item = to_row(event, received=received, uuid_ts=uuid_ts)
                    if item is None:
                        counts["skipped"] += 1
                        continue
                    yield item
        if counts["skipped"]:
            run.log.warning("%d event(s) of types with no table (e.g. delete) not staged",
                            counts["skipped"])
        run.log.info("drained %(entries)d stream entries, %(events)d events "
                     "(%(duplicates)d repeated messageIds)", counts)
        run.state["unacked"] = held + ([{"run": run.run_id, "ranges": mine}] if mine else [])
    except redis.RedisError as e:
        raise TransientError(f"Segment stream at {where}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        client.close()


def _events(body: bytes, sid: tuple[int, int], log: Any) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except ValueError as e:  # the webhook only stores valid JSON; this is corruption
        log.error("stream entry %s is not JSON (%s); skipped", _fmt(sid), e)
        return []
    return [e for e in (data if isinstance(data, list) else [data]) if isinstance(e, dict)]


# ------------------------------------------------------------------------------ rows
_SLUG = re.compile(r"[^a-z0-9]+")


def slug(name: str) -> str:
    """Segment's table-name form of an event name: ``Order Completed`` -> ``order_completed``."""
    return _SLUG.sub("_", name.strip().lower()).strip("_")


def timestamp(value: Any) -> Any:
    """An ISO 8601 string as an aware datetime; anything else as given (the loader refuses a
    value that is not a timestamp, as a dead letter, rather than this guessing)."""
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return value
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return value


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def to_row(event: dict[str, Any], received: datetime, uuid_ts: datetime
           ) -> tuple[str, dict[str, Any]] | None:
    """(table, row) for one Segment event; None for a type with no table (``delete``...)."""
    table = TABLES.get(event.get("type", ""))
    if table is None:
        return None
    context = event.get("context")
    row: dict[str, Any] = {
        "id": event.get("messageId"),
        "anonymous_id": event.get("anonymousId"),
        "user_id": event.get("userId"),
        # Segment's server time; the webhook's own receipt time when absent (a test event).
        "received_at": timestamp(event.get("receivedAt")) or received,
        "sent_at": timestamp(event.get("sentAt")),
        "timestamp": timestamp(event.get("timestamp")),
        "original_timestamp": timestamp(event.get("originalTimestamp")),
        "uuid_ts": uuid_ts,
        "context": context,
    }
    for column, path in CONTEXT_COLUMNS.items():
        row[column] = _dig(context, path)
    props = event.get("properties")
    kind = event["type"]
    if kind == "track":
        name = event.get("event")
        row.update(event=slug(name) if isinstance(name, str) else name, event_text=name,
                   properties=props)
    elif kind in ("page", "screen"):
        row.update(name=event.get("name"), properties=props)
        if kind == "page":
            row["category"] = event.get("category")
            for key in ("path", "referrer", "search", "title", "url"):
                row[key] = _dig(props, (key,))
    elif kind == "identify":
        row["traits"] = event.get("traits")
    elif kind == "group":
        row.update(group_id=event.get("groupId"), traits=event.get("traits"))
    elif kind == "alias":
        row["previous_id"] = event.get("previousId")
    return table, row
