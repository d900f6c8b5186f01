"""Prometheus metrics, computed from the shared ledger when they are scraped.

Every worker writes its runs and batches to the ledger, so one collector reading it shows the
truth for all of them from any process (the web app's ``/metrics``), with no per-process
counters to add up and no prometheus multiprocess mode. Counters can only grow because the
ledger keeps every run and batch.

| metric | labels | from |
|---|---|---|
| ``jankycron_runs`` (gauge) | job, status | runs in the ledger |
| ``jankycron_run_duration_seconds`` (histogram) | job, status | finished runs: start -> finish |
| ``jankycron_last_success_timestamp_seconds`` | job | newest successful run's finish |
| ``jankycron_last_success_interval_end_timestamp_seconds`` | job | its data interval's end |
| ``jankycron_rows_loaded_total`` / ``_rows_rejected_total`` | table | batches + dead letters |
| ``jankycron_rows_replaced_total`` | table | replaced by a later row of the run, same key |
| ``jankycron_load_latency_seconds`` (histogram) | table | batch staged -> merged |
| ``jankycron_pending_batches`` / ``_pending_rows`` | table | batches waiting for a load |
| ``jankycron_oldest_pending_batch_timestamp_seconds`` | table | when the oldest was staged |
| ``jankycron_corrupt_batches`` | table | quarantined batches (damaged objects), not superseded |
| ``jankycron_ledger_up`` | | 1 when the ledger answered this scrape |

Worker and beat processes can also serve their own process metrics (``start_worker_metrics``)
on ``JANKYCRON_METRICS_PORT`` (beat: that port + 1), so Prometheus's ``up`` says whether they
are alive; what they did is in the ledger, hence in the web process's ``/metrics``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .config import Settings
from .ledger import Ledger
from .ledger import now as ledger_now
from .schedule import parse_fmt

log = logging.getLogger(__name__)

RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200)
LOAD_BUCKETS = (1, 5, 15, 30, 60, 300, 600, 1800, 3600, 14400, 43200, 86400)

# Seconds between two ISO 8601 text columns; the ledger stores times as text on both backends.
_SECONDS = {
    "sqlite": "ROUND((julianday({end}) - julianday({start})) * 86400)",
    "postgresql": "EXTRACT(EPOCH FROM (CAST({end} AS timestamptz) - CAST({start} AS timestamptz)))",
}


class LedgerSource:
    """One ledger connection per thread, reopened after an error (a restarted database)."""

    def __init__(self, settings: Settings, opener: Callable[[], Ledger] | None = None):
        self._open = opener or (lambda: Ledger.open(settings))
        self._local = threading.local()

    @contextmanager
    def ledger(self) -> Iterator[Ledger]:
        ledger = getattr(self._local, "ledger", None)
        if ledger is None:
            ledger = self._local.ledger = self._open()
        try:
            yield ledger
        except Exception:
            self._local.ledger = None
            try:
                ledger.close()
            except Exception:
                pass
            raise

    def ping(self) -> None:
        """Raise unless the ledger answers a query now."""
        with self.ledger() as ledger:
            ledger._rows("SELECT 1 AS ok")


class LedgerCollector:
    """A prometheus_client collector whose values are read from the ledger at each scrape."""

    def __init__(self, source: LedgerSource):
        self.source = source

    def describe(self) -> list[Metric]:
        return []  # values come and go with the ledger; skip the registry's collect-at-register

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("jankycron_ledger_up", "1 when the ledger answered this scrape")
        started = time.monotonic()
        try:
            with self.source.ledger() as ledger:
                families = list(_families(ledger))
        except Exception as e:  # a scrape shows the ledger as down; it never fails
            log.warning("metrics: the ledger did not answer: %s", type(e).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        took = GaugeMetricFamily("jankycron_ledger_scrape_seconds",
                                 "time spent reading the ledger for this scrape")
        took.add_metric([], time.monotonic() - started)
        yield took
        yield from families


def _families(ledger: Ledger) -> Iterator[Metric]:
    runs = GaugeMetricFamily("jankycron_runs", "runs in the ledger, by job and status",
                             labels=["job", "status"])
    for r in ledger._rows("SELECT job, status, COUNT(*) AS n FROM jc_runs GROUP BY job, status"):
        runs.add_metric([r["job"], r["status"]], r["n"])
    yield runs

    yield _histogram(ledger, "jankycron_run_duration_seconds",
                     "finished runs, from start to finish (seconds)", ["job", "status"],
                     "jc_runs", "started_at", "finished_at", "finished_at IS NOT NULL",
                     RUN_BUCKETS)

    last = GaugeMetricFamily("jankycron_last_success_timestamp_seconds",
                             "when the newest successful run of the job finished",
                             labels=["job"])
    last_end = GaugeMetricFamily("jankycron_last_success_interval_end_timestamp_seconds",
                                 "end of the newest data interval loaded successfully",
                                 labels=["job"])
    # a run of an interval that has not ended (an old ledger, the API) must not make the job
    # look fresh to a staleness alert on this gauge
    for r in ledger._rows("SELECT job, MAX(finished_at) AS at, MAX(CASE WHEN interval_end <= ? "
                          "THEN interval_end END) AS iend FROM jc_runs WHERE status = 'success' "
                          "GROUP BY job", (ledger_now(),)):
        if r["at"]:
            last.add_metric([r["job"]], parse_fmt(r["at"]).timestamp())
        if r["iend"]:
            last_end.add_metric([r["job"]], parse_fmt(r["iend"]).timestamp())
    yield last
    yield last_end

    stage_rejects = {r["table_name"]: r["n"] for r in ledger._rows(
        "SELECT table_name, COUNT(*) AS n FROM jc_deadletters WHERE phase = 'stage' "
        "GROUP BY table_name")}
    loaded = CounterMetricFamily("jankycron_rows_loaded", "rows merged into the table",
                                 labels=["table"])
    rejected = CounterMetricFamily("jankycron_rows_rejected",
                                   "rows sent to the dead-letter store instead of the table",
                                   labels=["table"])
    replaced = CounterMetricFamily("jankycron_rows_replaced",
                                   "rows a later row of the same run with the same key replaced",
                                   labels=["table"])
    pending = GaugeMetricFamily("jankycron_pending_batches", "staged batches waiting for a load",
                                labels=["table"])
    pending_rows = GaugeMetricFamily("jankycron_pending_rows", "rows in pending batches",
                                     labels=["table"])
    oldest = GaugeMetricFamily("jankycron_oldest_pending_batch_timestamp_seconds",
                               "when the oldest pending batch of the table was staged",
                               labels=["table"])
    rows = ledger._rows(
        "SELECT table_name, SUM(rows_loaded) AS loaded, SUM(rows_rejected) AS rejected, "
        "SUM(rows_replaced) AS replaced, "
        "SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending, "
        "SUM(CASE WHEN status = 'pending' THEN rows ELSE 0 END) AS pending_rows, "
        "MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest, "
        "SUM(CASE WHEN status = 'corrupt' THEN 1 ELSE 0 END) AS corrupt "
        "FROM jc_batches GROUP BY table_name")
    corrupt = GaugeMetricFamily("jankycron_corrupt_batches",
                                "quarantined batches: a staged object is damaged (until a rerun "
                                "of the interval supersedes them)", labels=["table"])
    for table in sorted({r["table_name"] for r in rows} | set(stage_rejects)):
        r = next((x for x in rows if x["table_name"] == table), {})
        loaded.add_metric([table], int(r.get("loaded") or 0))
        rejected.add_metric([table], int(r.get("rejected") or 0) + stage_rejects.get(table, 0))
        replaced.add_metric([table], int(r.get("replaced") or 0))
        pending.add_metric([table], int(r.get("pending") or 0))
        pending_rows.add_metric([table], int(r.get("pending_rows") or 0))
        corrupt.add_metric([table], int(r.get("corrupt") or 0))
        if r.get("oldest"):
            oldest.add_metric([table], parse_fmt(r["oldest"]).timestamp())
    yield from (loaded, rejected, replaced, pending, pending_rows, oldest, corrupt)

    yield _histogram(ledger, "jankycron_load_latency_seconds",
                     "loaded batches, from staged to merged into the table (seconds)", ["table"],
                     "jc_batches", "created_at", "loaded_at",
                     "status = 'loaded' AND loaded_at IS NOT NULL", LOAD_BUCKETS,
                     label_columns=["table_name"])


def _histogram(ledger: Ledger, name: str, doc: str, labels: list[str], table: str,
               start: str, end: str, where: str, buckets: tuple[int, ...],
               label_columns: list[str] | None = None) -> HistogramMetricFamily:
    """A histogram whose buckets are counted in SQL: one aggregate query, whatever the size
    of the history."""
    cols = label_columns or labels
    seconds = _SECONDS[ledger.kind].format(start=start, end=end)
    le = ", ".join(f"SUM(CASE WHEN d <= {b} THEN 1 ELSE 0 END) AS le{i}"
                   for i, b in enumerate(buckets))
    group = ", ".join(cols)
    rows = ledger._rows(f"SELECT {group}, COUNT(*) AS n, SUM(d) AS total, {le} FROM "
                        f"(SELECT {group}, {seconds} AS d FROM {table} WHERE {where}) t "
                        f"GROUP BY {group}")
    family = HistogramMetricFamily(name, doc, labels=labels)
    for r in rows:
        counts = [(str(float(b)), int(r[f"le{i}"])) for i, b in enumerate(buckets)]
        family.add_metric([str(r[c]) for c in cols], counts + [("+Inf", int(r["n"]))],
                          float(r["total"] or 0))
    return family


def ledger_registry(source: LedgerSource) -> CollectorRegistry:
    """The web process's registry: the ledger's metrics plus this process's own."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(LedgerCollector(source))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def start_worker_metrics(settings: Settings, role: str = "worker") -> int | None:
    """Serve this process's metrics on ``JANKYCRON_METRICS_PORT`` (beat: that port + 1, so
    both fit on one host); call from Celery's ``worker_init`` / ``beat_init`` signals. Returns
    the port, or None when no port is set or it is taken (logged; never raises)."""
    if not settings.metrics_port:
        return None
    port = settings.metrics_port + (1 if role == "beat" else 0)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    info = Gauge("jankycron_process_start_time_seconds", "when this jankycron process started",
                 ["role"], registry=registry)
    info.labels(role).set(time.time())
    try:
        start_http_server(port, registry=registry)
    except OSError as e:
        log.warning("metrics: cannot serve the %s's metrics on port %d: %s", role, port,
                    e.strerror or type(e).__name__)
        return None
    log.info("metrics: the %s's metrics are on port %d", role, port)
    return port

