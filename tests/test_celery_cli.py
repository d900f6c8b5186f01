"""The operator's commands through the workers: a backfill runs every interval on the workers
and loads them once per table; one failing interval does not stop the others; after the fix,
`rerun --failed` runs exactly the failed ones again; `--no-wait` returns the task ids at once;
`jobs` shows the next run and the last status."""

from __future__ import annotations

from celery_helpers import Cluster, cluster_fixture, hooks_fixture, wait_until  # noqa: F401

DAILY = '''
from pathlib import Path
from jankycron import job

FIXED = Path(__file__).parent.parent / "fixed"

@job(schedule="0 3 * * *", table="items", key="id", alert="{hook}")
def daily(run):
    if run.start.day == 21 and not FIXED.exists():
        raise KeyError("price")
    for i in range(2):
        yield {{"id": run.start.day * 10 + i, "label": run.start.date().isoformat()}}
'''


def test_backfill_and_rerun_failed_through_the_workers(cluster: Cluster) -> None:
    cluster.rows("CREATE TABLE items (id bigint NOT NULL, label text)")
    cluster.ws.write_job("daily", DAILY.format(hook=cluster.hooks.url))
    cluster.worker()

    proc = cluster.ws.cli("backfill", "daily", "--start", "2026-11-20", "--end", "2026-11-22")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == ("error: 1 of 3 interval(s) failed; see jankycron "
                                            "history daily")
    assert "job daily failed: KeyError: 'price' (daily.py line 10)" in proc.stderr
    assert proc.stdout.count("success; 2 extracted, 2 loaded") == 2
    assert cluster.rows("SELECT label, count(*) FROM items GROUP BY 1 ORDER BY 1") == [
        ("2026-11-20", 2), ("2026-11-22", 2)]
    assert len(cluster.hooks.events("run_failed", "daily")) == 1

    (cluster.ws.path / "fixed").touch()
    queued = cluster.ws.cli("rerun", "--failed", "--no-wait", check=True)
    (line,) = queued.stdout.splitlines()  # "<task id>  daily 2026-11-21T03:00:00Z..."
    assert line.split("  ")[1] == "daily 2026-11-21T03:00:00Z..2026-11-22T03:00:00Z"
    wait_until(lambda: [r for r in cluster.runs("daily")
                        if r["start"].startswith("2026-11-21") and r["status"] == "success"],
               "the rerun to land")
    assert cluster.rows("SELECT count(*) FROM items") == [(6,)]
    assert cluster.ws.cli("rerun", "--failed", check=True).stdout == "nothing to rerun\n"
    statuses = {(r["start"][:10], r["status"]) for r in cluster.runs("daily")}
    assert statuses == {("2026-11-20", "success"), ("2026-11-21", "failed"),
                        ("2026-11-21", "success"), ("2026-11-22", "success")}

    (row,) = cluster.ws.cli_json("jobs")
    assert row["last_status"] == "success" and row["next_run"].endswith("T03:00:00Z")
    assert row["catchup"] is True
