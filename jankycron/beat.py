"""Beat's scheduler: RedBeat, made to ride out a Redis restart (``beat_scheduler`` points here
when the broker is Redis; see celery_app._transport).

RedBeat as released (2.4) lets the first Redis error after a restart end beat: the active beat
dies on the ``ConnectionError`` from extending its lock, and a standby whose blocked lock
acquisition failed is left with no lock and dies on ``None.extend``. Here a tick that cannot
reach Redis fires nothing and is tried again a heartbeat later; a beat without the lock (a
standby, or an active one whose lock expired while Redis was down and was taken by another)
waits to acquire it, as at startup, before it fires anything. So at most one beat fires, and
one always does once Redis is back.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.signals import beat_init
from redbeat.schedulers import (
    LUA_EXTEND_TO_SCRIPT,
    RedBeatScheduler,
    acquire_distributed_beat_lock,
    get_redis,
)

log = logging.getLogger(__name__)

_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


class Beat(RedBeatScheduler):
    """RedBeatScheduler whose lock and ticks survive Redis going away and coming back."""

    _unreachable = False  # logged once per outage
    _waiting = False  # waiting for the lock (logged once per wait)

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True,
                    **kwargs: Any) -> Any:
        """Send a due entry's task; one that cannot reach Redis is one warning line, not
        Celery's ERROR with a traceback. Nothing is lost: beat's entries only tick, and the
        ``fire`` task enqueues every due interval from the ledger at the next tick."""
        try:
            return super().apply_async(entry, producer, advance, **kwargs)
        except Exception as e:
            cause = e if isinstance(e, _UNREACHABLE) else (e.__cause__ or e.__context__)
            if not isinstance(cause, _UNREACHABLE):
                raise
            log.warning("beat: could not send %s (%s: Redis unreachable); the next tick "
                        "tries again", entry.name, type(cause).__name__)
            return None

    def tick(self, min: Any = min, **kwargs: Any) -> float:  # noqa: A002 - Scheduler's signature
        try:
            if self.lock_key and not self._hold_lock():
                return self.max_interval
            remaining = [t for t in (self.maybe_due(entry, **self._maybe_due_kwargs)
                                     for entry in self.schedule.values()) if t]
        except _UNREACHABLE as e:
            if not self._unreachable:
                log.warning("beat: Redis unreachable (%s): nothing fires until it is back; "
                            "retrying every %.0fs", type(e).__name__, self.max_interval)
            self._unreachable = True
            return self.max_interval
        except RuntimeError:  # as RedBeat: the schedule changed while iterating
            log.debug("beat: RuntimeError", exc_info=True)
            return self.max_interval
        if self._unreachable:
            log.warning("beat: Redis is back")
            self._unreachable = False
        return min([*remaining, self.max_interval])

    def _hold_lock(self) -> bool:
        """Extend our lock; without one, wait to acquire it (a standby). False: we do not
        hold it (lost meanwhile, or the wait was cut short), so nothing fires this tick."""
        if self.lock is None:
            # Once per wait at INFO (a wait cut short by a Redis outage is tried every tick).
            (log.debug if self._waiting else log.info)(
                "beat: Acquiring lock %s (a standby until it is free)", self.lock_key)
            self._waiting = True
            self.lock = self._acquire()
            self._waiting = False
            log.info("beat: Acquired lock")
            return True
        try:
            self.lock.extend(int(self.lock_timeout))
        except redis.exceptions.LockError:
            log.warning("beat: lost the lock %s (it expired while Redis was unreachable, or "
                        "another beat holds it): standing by", self.lock_key)
            self.lock = None
            return False
        return True

    def _acquire(self) -> Any:
        """Block until this beat holds the lock, as RedBeat's startup does; a Redis error
        while waiting propagates (tick tries again next time)."""
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)  # extend *to*, as RedBeat
        lock.acquire()
        return lock

    def close(self) -> None:
        try:
            super().close()
        except _UNREACHABLE as e:  # the lock expires by itself
            log.warning("beat: could not release the lock (%s)", type(e).__name__)
            self.lock = None


# RedBeat acquires the lock in a beat_init handler, where a Redis error is logged with a
# traceback and leaves the lock None. Beat acquires it in its first tick instead (celery loads
# this module, building the scheduler, before it sends beat_init).
beat_init.disconnect(acquire_distributed_beat_lock)


@beat_init.connect
def _acquire_at_start(sender: Any = None, **kwargs: Any) -> None:
    if not isinstance(sender.scheduler, Beat):
        acquire_distributed_beat_lock(sender, **kwargs)
