"""Read-only views of the ledger for the status page (``status.py``): aggregates over runs,
batches and dead letters, never record contents. Plain SQL that runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from .ledger import BatchStatus, Ledger, _run_out


def interval_runs(ledger: Ledger, since: str, until: str) -> list[dict[str, Any]]:
    """The newest run of every (job, interval) whose interval starts in [since, until)."""
    rows = ledger._rows(
        "SELECT r.* FROM jc_runs r WHERE r.interval_start >= ? AND r.interval_start < ? "
        "AND NOT EXISTS (SELECT 1 FROM jc_runs n WHERE n.job = r.job AND n.interval_start = "
        "r.interval_start AND n.interval_end = r.interval_end AND n.id > r.id) "
        "ORDER BY r.job, r.interval_start", (since, until))
    return [_run_out(r) for r in rows]

def watched_since(ledger: Ledger) -> dict[str, str]:
    """Per job, since when runs are expected: beat's first sight of it (jc_schedule.since, as
    the missed-run check does); for a job beat never saw (manual runs only), its oldest
    interval's end."""
    out: dict[str, str] = {}
    for r in ledger._rows("SELECT job, MIN(interval_end) AS at FROM jc_runs GROUP BY job"):
        if r["at"]:
            out[r["job"]] = r["at"]
    for r in ledger._rows("SELECT job, since AS at FROM jc_schedule"):
        if r["at"]:
            out[r["job"]] = r["at"]
    return out


def table_queues(ledger: Ledger) -> dict[str, dict[str, Any]]:
    """Per table: pending batches and rows, the oldest pending batch's staging time, the
    last load, and the failed loads in a row (with the last error) if any."""
    out: dict[str, dict[str, Any]] = {}
    for r in ledger._rows(
            "SELECT table_name, SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS "
            "pending, SUM(CASE WHEN status = 'pending' THEN rows ELSE 0 END) AS pending_rows,"
            " MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest_pending, "
            "MAX(CASE WHEN status = 'loaded' THEN loaded_at END) AS last_load, "
            "SUM(CASE WHEN status = 'corrupt' THEN 1 ELSE 0 END) AS corrupt "
            "FROM jc_batches GROUP BY table_name"):
        out[r["table_name"]] = {"pending": int(r["pending"] or 0),
                                "pending_rows": int(r["pending_rows"] or 0),
                                "oldest_pending": r["oldest_pending"],
                                "last_load": r["last_load"], "failures": 0,
                                "corrupt": int(r["corrupt"] or 0),
                                "last_failure_at": None, "last_error": None}
    for r in ledger._rows("SELECT * FROM jc_table_state"):
        out.setdefault(r["table_name"], {"pending": 0, "pending_rows": 0,
                                         "oldest_pending": None, "last_load": None})
        out[r["table_name"]].update(failures=r["failures"],
                                    last_failure_at=r["last_failure_at"],
                                    last_error=r["last_error"])
    return out

def pending_batch_list(ledger: Ledger, limit: int = 500) -> list[dict[str, Any]]:
    """Pending batches (no record contents), oldest interval first per table."""
    return ledger._rows(
        "SELECT table_name AS table_name, job, run_id, interval_start, interval_end, rows, "
        "created_at FROM jc_batches WHERE status = ? ORDER BY table_name, interval_start, id "
        "LIMIT ?", (BatchStatus.PENDING, limit))

def corrupt_batch_list(ledger: Ledger, limit: int = 500) -> list[dict[str, Any]]:
    """Quarantined batches (``corrupt``, not yet superseded by a rerun) and why."""
    return ledger._rows(
        "SELECT table_name AS table_name, job, run_id, interval_start, interval_end, rows, "
        "error FROM jc_batches WHERE status = ? ORDER BY table_name, interval_start, id "
        "LIMIT ?", (BatchStatus.CORRUPT, limit))

def deadletter_reasons(ledger: Ledger, limit: int = 1000) -> list[dict[str, Any]]:
    """Open dead letters counted per table, job and reason (never the records), the most
    frequent first within a table."""
    return ledger._rows(
        "SELECT table_name, job, reason, COUNT(*) AS n, MAX(created_at) AS last_at "
        "FROM jc_deadletters WHERE status = 'open' GROUP BY table_name, job, reason "
        "ORDER BY table_name, COUNT(*) DESC, reason LIMIT ?", (limit,))
