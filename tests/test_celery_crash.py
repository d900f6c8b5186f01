"""A worker killed mid-run (SIGKILL of its whole process group, as when a container or host
dies) loses nothing: its run stops heartbeating, the sweeper marks it lost, alerts once and
runs the interval again on another worker, and every row lands exactly once. The operator's
`jankycron run`, waiting meanwhile, gets the outcome of the run that finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date

from celery_helpers import DEADLINE, Cluster, cluster_fixture, hooks_fixture, wait_until  # noqa: F401

ROWS = 80  # ~4 s of extraction: time to kill the worker mid-run
SLOW = '''
import time
from jankycron import job

@job(schedule="0 3 * * *", table="items", key="id", timeout="2m", alert="{hook}")
def slow(run):
    day = int(run.start.timestamp()) // 86400
    for i in range({rows}):
        time.sleep(0.05)
        yield {{"id": day * 1000 + i, "label": "row %d" % i}}
'''
DAY = "2026-11-20"


def test_a_run_whose_worker_is_killed_completes_on_another_and_lands_once(
        cluster: Cluster) -> None:
    cluster.rows("CREATE TABLE items (id bigint NOT NULL, label text)")
    cluster.ws.write_job("slow", SLOW.format(hook=cluster.hooks.url, rows=ROWS))
    doomed = cluster.worker("doomed", concurrency=1)
    operator = subprocess.Popen([sys.executable, "-m", "jankycron", "run", "slow", "--date", DAY],
                                cwd=cluster.ws.path, env=cluster.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: "extracting" in doomed.text(), "the run to start extracting")
        doomed.kill()  # mid-extraction
        assert operator.poll() is None  # still waiting for its run

        cluster.worker("rescuer")
        cluster.beat()  # the sweeper is a beat task
        out, err = operator.communicate(timeout=DEADLINE)
    finally:
        if operator.poll() is None:
            operator.kill()
    assert operator.returncode == 0, out + err
    assert f"success; {ROWS} extracted, {ROWS} loaded, 0 dead-lettered" in out
    assert "running again after its worker died (lost: no heartbeat since" in err

    day = (date.fromisoformat(DAY) - date(1970, 1, 1)).days
    assert cluster.rows(f"SELECT count(*), count(DISTINCT id) FROM items WHERE id / 1000 = "
                        f"{day}") == [(ROWS, ROWS)]
    runs = [r for r in cluster.runs("slow") if r["start"].startswith(DAY)]
    assert [r["status"] for r in runs] == ["lost", "success"], runs
    assert runs[0]["rows_loaded"] == 0
    (lost,) = cluster.hooks.events("run_lost", "slow")
    assert lost["run_id"] == runs[0]["run_id"]
    assert not cluster.hooks.events("run_failed")
    assert os.path.exists(doomed.log_path)


def test_a_run_whose_pool_child_is_killed_is_delivered_again_and_lands_once(
        cluster: Cluster) -> None:
    """Only the pool process dies (the OOM killer's usual pick): the worker's main process
    rejects the task back to the queue (task_reject_on_worker_lost, acks late), a new pool
    process runs it, the dead attempt is marked lost, and every row lands exactly once."""
    cluster.rows("CREATE TABLE items (id bigint NOT NULL, label text)")
    cluster.ws.write_job("slow", SLOW.format(hook=cluster.hooks.url, rows=ROWS))
    worker = cluster.worker("survivor", concurrency=1)
    operator = subprocess.Popen([sys.executable, "-m", "jankycron", "run", "slow", "--date", DAY],
                                cwd=cluster.ws.path, env=cluster.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: "extracting" in worker.text(), "the run to start extracting")
        children = subprocess.run(["pgrep", "-P", str(worker.popen.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 1, children  # concurrency 1: one pool process
        os.kill(int(children[0]), signal.SIGKILL)
        out, err = operator.communicate(timeout=DEADLINE)
    finally:
        if operator.poll() is None:
            operator.kill()
    assert worker.popen.poll() is None  # the worker itself lived on
    assert operator.returncode == 0, out + err
    assert f"success; {ROWS} extracted, {ROWS} loaded, 0 dead-lettered" in out
    day = (date.fromisoformat(DAY) - date(1970, 1, 1)).days
    assert cluster.rows(f"SELECT count(*), count(DISTINCT id) FROM items WHERE id / 1000 = "
                        f"{day}") == [(ROWS, ROWS)]
    runs = [r for r in cluster.runs("slow") if r["start"].startswith(DAY)]
    assert [r["status"] for r in runs] == ["lost", "success"], runs
    assert not cluster.hooks.events("run_failed")


KILLER = '''
import os, signal
from jankycron import job

@job(schedule="0 3 * * *", table="items", key="id", timeout="2m", alert="{hook}")
def killer(run):
    yield {{"id": 1, "label": "first"}}
    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does to a greedy job
'''


def test_a_task_that_keeps_killing_its_worker_fails_once_with_one_alert(
        cluster: Cluster) -> None:
    """Delivered again after each death, but not forever: after three, the run fails with one
    alert and the waiting operator gets a one-line error."""
    cluster.rows("CREATE TABLE items (id bigint NOT NULL, label text)")
    cluster.ws.write_job("killer", KILLER.format(hook=cluster.hooks.url))
    worker = cluster.worker("victim", concurrency=1)
    proc = cluster.ws.cli("run", "killer", "--date", DAY, env=cluster.env, timeout=DEADLINE)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "worker died 3 times" in proc.stderr and "Traceback" not in proc.stderr
    assert worker.popen.poll() is None
    runs = [r for r in cluster.runs("killer") if r["start"].startswith(DAY)]
    assert [r["status"] for r in runs] == ["lost", "lost", "failed"], runs
    assert len(cluster.hooks.events("run_failed", "killer")) == 1
    assert cluster.rows("SELECT count(*) FROM items") == [(0,)]
