"""One loader per table at a time, across processes and hosts: a Redis lock per table.

The lock is a key holding a random owner token with a TTL (``SET key token NX PX ttl``). While a
load runs, a thread renews the TTL, but only while the key still holds our token; release
deletes it under the same condition (both as Lua scripts, so check-and-act is atomic). The
loader checks ``ensure_owned()`` right before COMMIT: a loader that stalled past its TTL (a long
GC pause, a frozen VM) and lost the lock rolls back instead of committing next to the new
owner. The warehouse's own table lock and ``jankycron_loads`` would still stop a double merge;
this lock keeps two loaders from doing the same work and makes the second one wait or move on.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from types import TracebackType

from ..config import redact
from ..errors import TransientError

log = logging.getLogger(__name__)

_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end")


class LockBusy(TransientError):
    """Another loader holds the table's lock; try again later."""


class LockLost(TransientError):
    """The lock expired or was taken over before commit; the load was rolled back."""


class TableLock:
    def __init__(self, client, table: str, ttl: float = 60.0):
        self.client, self.table, self.ttl = client, table, ttl
        self.key = f"jankycron:load-lock:{table}"
        # Who holds it, for the operator: host, pid and a random part.
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    def acquire(self, wait: float) -> None:
        """Take the lock, waiting up to ``wait`` seconds; LockBusy if it stays taken."""
        deadline = time.monotonic() + wait
        while not self.client.set(self.key, self.token, nx=True, px=int(self.ttl * 1000)):
            if time.monotonic() >= deadline:
                raise LockBusy(f"table {self.table} is being loaded by another loader "
                               f"({self.holder() or 'lock just released'}); try again later")
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, daemon=True,
                                         name=f"jankycron-lock-{self.table}")
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.client.eval(_RENEW, 1, self.key, self.token,
                                        int(self.ttl * 1000)):
                    log.warning("lost the load lock of %s", self.table)
                    return
            except Exception as e:  # Redis blip: the check before commit decides
                log.warning("could not renew the load lock of %s: %s", self.table, e)

    def ensure_owned(self) -> None:
        """Raise LockLost unless we still hold the lock (called right before COMMIT)."""
        try:
            holder = self.holder()
        except Exception as e:  # cannot confirm: do not commit
            raise LockLost(f"could not confirm the load lock of table {self.table} "
                           f"({type(e).__name__}); rolled back, the batches stay pending") \
                from None
        if holder != self.token:
            raise LockLost(f"lost the load lock of table {self.table} before commit; "
                           "rolled back, the batches stay pending")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except Exception as e:  # it expires by itself
            log.warning("could not release the load lock of %s: %s", self.table, e)

    def __enter__(self) -> TableLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class RedisLocks:
    """Makes TableLocks on one Redis (``JANKYCRON_LOCK_URL``)."""

    def __init__(self, url: str, ttl: float = 60.0, wait: float = 60.0):
        import redis  # noqa: PLC0415 - only deployments with a lock URL need it

        self.url, self.ttl, self.wait = url, ttl, wait
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10,
                                           decode_responses=False)
        self._errors = (redis.ConnectionError, redis.TimeoutError)

    def ping(self) -> list[str]:
        """Raise unless Redis answers; return warnings about settings that can lose locks."""
        try:
            self.client.ping()
            config = {}
            for name in ("appendonly", "maxmemory-policy"):
                config.update(self.client.config_get(name))
        except self._errors as e:
            raise TransientError(f"lock store {redact(self.url)} is unreachable: "
                                 f"{type(e).__name__}") from None
        except Exception:  # CONFIG may be disabled (managed Redis): nothing to say
            return []
        warnings = []
        if config.get("appendonly") != "yes":
            warnings.append("appendonly is not yes: a restart forgets every lock")
        if config.get("maxmemory-policy", "noeviction") != "noeviction":
            warnings.append(f"maxmemory-policy is {config['maxmemory-policy']}, not "
                            "noeviction: Redis may evict a held lock")
        return warnings

    def acquire(self, table: str) -> TableLock:
        lock = TableLock(self.client, table, self.ttl)
        try:
            lock.acquire(self.wait)
        except self._errors as e:
            raise TransientError(f"lock store {redact(self.url)} is unreachable: "
                                 f"{type(e).__name__}") from None
        return lock
