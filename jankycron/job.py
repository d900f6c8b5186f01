"""The analyst's API: ``@job`` builds a frozen ``Job``; a ``Run`` is what the job receives.

    from jankycron import job

    @job(schedule="0 4 * * *", table="github_pull_requests", key="id", retries=3,
         timeout="30m", alert="slack:#data-eng", owner="data-eng")
    def github_pull_requests(run):
        for pr in fetch_prs(updated_since=run.start, until=run.end):
            yield {"id": pr.id, "title": pr.title, "updated_at": pr.updated_at}

A job that feeds several tables names them all with their merge keys and routes records with
``run.to``::

    @job(schedule="0 4 * * *", table={"gh_issues": "id", "gh_issue_comments": "id"})
    def issues(run):
        yield {"id": 1, ...}                            # the first table
        yield run.to("gh_issue_comments", {"id": 7, ...})

Nothing registers at import: discovery finds ``Job`` objects in job files by value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from .config import parse_duration
from .errors import ConfigError, JobDefinitionError
from .schedule import Interval, Schedule, fmt

_IDENT = re.compile(r"^[a-z_][a-z0-9_$]{0,126}$")


class Routed(NamedTuple):
    """A record bound for a table other than the job's first one (see ``Run.to``)."""

    table: str
    record: dict


def _key_tuple(key: str | Iterable[str], table: str) -> tuple[str, ...]:
    cols = (key,) if isinstance(key, str) else tuple(key)
    if not cols or not all(isinstance(c, str) and c for c in cols):
        raise JobDefinitionError(f"key for table {table!r} must be a column name or a tuple")
    return cols


def _check_ident(name: str, what: str) -> str:
    # Redshift folds identifiers to lower case; requiring lower case keeps every backend equal.
    if not isinstance(name, str) or not _IDENT.match(name):
        raise JobDefinitionError(
            f"{what} {name!r} must be lower case letters, digits and _ (at most 127 bytes)"
        )
    return name


@dataclass(frozen=True)
class Job:
    """A job: what runs, when, and where its records land. Build it with ``@job``."""

    name: str
    fn: Callable[[Run], Iterable[dict | Routed]] = field(repr=False, compare=False)
    schedule: Schedule
    tables: Mapping[str, tuple[str, ...]]  # table -> merge key columns; first is the default
    retries: int = 0
    timeout: float = 3600.0
    alert: tuple[str, ...] = ()
    owner: str | None = None
    catchup: bool = True  # after downtime: run every missed interval (True) or only the latest
    rerun_replaces: bool = True  # a second run of an interval replaces the first's batches
    source_file: str | None = field(default=None, compare=False)

    @property
    def table(self) -> str:
        """The default table (records yielded without ``run.to``)."""
        return next(iter(self.tables))

    def interval_on(self, day) -> Interval:
        return self.schedule.interval_on(day)

    def __call__(self, run: Run) -> Iterable[dict | Routed]:
        return self.fn(run)


def job(
    schedule: str,
    table: str | Mapping[str, str | Iterable[str]],
    key: str | Iterable[str] | None = None,
    retries: int = 0,
    timeout: str | int | float = "1h",
    alert: str | Iterable[str] | None = None,
    owner: str | None = None,
    name: str | None = None,
    catchup: bool = True,
    rerun_replaces: bool = True,
) -> Callable[[Callable], Job]:
    """Declare a job. See the module docstring for an example.

    - ``schedule``: 5-field cron, always UTC; a run covers [previous fire, this fire).
    - ``table`` and ``key``: the target table and its merge key (a column or a tuple); or
      ``table={"t1": "id", "t2": ("repo", "number")}`` for several tables.
    - ``retries``: how often a ``TransientError`` is retried (with backoff).
    - ``timeout``: ``"30m"``, ``"2h"`` or seconds.
    - ``alert``: alert route(s) on top of Sentry, e.g. ``"slack:#data-eng"``.
    - ``catchup``: when beat was down and intervals were missed, ``True`` (the default: drop
      nothing) runs each missed interval once, oldest first; ``False`` runs only the latest
      and logs how many were skipped (for jobs whose source only serves "now", say).
    - ``rerun_replaces``: ``True`` (the default) when a run of an interval re-extracts the
      same data, so a rerun's batches replace the older run's (and its dead letters); ``False``
      when each run reads new data (draining a stream), so every run's batches load and every
      run's dead letters stay listed.
    """
    sched = Schedule(schedule)
    if isinstance(table, str):
        if key is None:
            raise JobDefinitionError(f"table {table!r} needs a merge key: key='id'")
        tables = {_check_ident(table, "table"): _key_tuple(key, table)}
    elif isinstance(table, Mapping) and table:
        if key is not None:
            raise JobDefinitionError("give keys inside table={...}, not also key=...")
        tables = {_check_ident(t, "table"): _key_tuple(k, t) for t, k in table.items()}
    else:
        raise JobDefinitionError("table must be a table name or a non-empty {table: key} dict")
    for t, cols in tables.items():
        for c in cols:
            _check_ident(c, f"key column of {t}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise JobDefinitionError(f"retries must be a whole number >= 0, got {retries!r}")
    try:
        timeout_s = parse_duration(timeout, "timeout")
    except ConfigError as e:
        raise JobDefinitionError(str(e)) from None
    alerts = (alert,) if isinstance(alert, str) else tuple(alert or ())
    if not isinstance(catchup, bool):
        raise JobDefinitionError(f"catchup must be True or False, got {catchup!r}")
    if not isinstance(rerun_replaces, bool):
        raise JobDefinitionError(f"rerun_replaces must be True or False, got {rerun_replaces!r}")

    def decorate(fn: Callable) -> Job:
        if not callable(fn):
            raise JobDefinitionError("@job(...) must decorate a function")
        return Job(
            name=_check_ident(name or fn.__name__, "job name"),
            fn=fn,
            schedule=sched,
            tables=tables,
            retries=retries,
            timeout=timeout_s,
            alert=alerts,
            owner=owner,
            catchup=catchup,
            rerun_replaces=rerun_replaces,
            source_file=getattr(getattr(fn, "__code__", None), "co_filename", None),
        )

    return decorate


class RunLog(logging.LoggerAdapter):
    """A logger that puts ``[job run_id]`` in front of every line."""

    def __init__(self, logger: logging.Logger, job: str, run_id: str):
        super().__init__(logger, {"job": job, "run_id": run_id})

    def process(self, msg, kwargs):
        kwargs.setdefault("extra", {}).update(self.extra)
        return f"[{self.extra['job']} {self.extra['run_id']}] {msg}", kwargs


class Run:
    """What a job function receives: the data interval, a logger and persisted state.

    - ``run.start`` / ``run.end``: aware UTC datetimes; the run covers [start, end).
    - ``run.state``: a small JSON-able dict persisted per job once the run's data is staged
      (cursors, high-water marks).
    - ``run.log``: a logger whose lines carry the job name and run id.
    - ``run.to(table, record)``: route a record to another of the job's tables.
    """

    def __init__(self, job: Job, interval: Interval, run_id: str, state: dict[str, Any]):
        self.job = job
        self.interval = interval
        self.run_id = run_id
        self.state = state
        self.log = RunLog(logging.getLogger(f"jankycron.jobs.{job.name}"), job.name, run_id)

    @property
    def start(self) -> datetime:
        return self.interval.start

    @property
    def end(self) -> datetime:
        return self.interval.end

    def to(self, table: str, record: dict) -> Routed:
        if table not in self.job.tables:
            raise JobDefinitionError(
                f"job {self.job.name} yields to table {table!r}, which is not in its "
                f"table={{...}}: {', '.join(self.job.tables)}"
            )
        return Routed(table, record)

    def __repr__(self) -> str:
        return f"Run({self.job.name} {fmt(self.start)}..{fmt(self.end)} id={self.run_id})"
