"""Redis restarts under a running fleet (issue 12, items 2 and 3): Redis (``appendonly yes``, a
server of the test's own on a free port) is shut down cleanly mid-run and started again on the
same port. Workers and beats reconnect and carry on, the operator's ``jankycron run`` gets the
run's outcome, every slot fires once and every row lands once. And a task delivered again
after the broker's visibility timeout, whose interval already succeeded, is dropped."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import redis
from celery_helpers import DEADLINE, Cluster, Hooks, hooks_fixture, wait_until  # noqa: F401
from conftest import Workspace

from jankycron.schedule import parse_fmt

ROWS = 80  # ~4 s of extraction: time to restart Redis mid-run
SLOW = '''
import time
from jankycron import job

@job(schedule="0 3 * * *", table="items", key="id", timeout="2m", alert="{hook}")
def slow(run):
    day = int(run.start.timestamp()) // 86400
    for i in range({rows}):
        time.sleep({pause})
        yield {{"id": day * 1000 + i, "label": "row %d" % i}}
'''
DAY, NEXT_DAY = "2026-11-20", "2026-11-21"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, with ``appendonly yes`` (as deploy/README asks), so a
    clean shutdown keeps the queue, the unacked messages and RedBeat's schedule."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with redis.Redis.from_url(self.url) as client:
            wait_until(lambda: self._pings(client), "redis-server to answer", timeout=30,
                       every=0.1)

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def shutdown(self) -> None:
        """``redis-cli shutdown``: the append-only file is synced, then the server exits."""
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True,
                       timeout=30)
        assert self.proc is not None
        self.proc.wait(30)

    def restart(self, down_for: float) -> None:
        self.shutdown()
        time.sleep(down_for)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    s = RedisServer(folder)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(name="fleet")
def fleet_fixture(tmp_path: Path, pg_url: str, hooks: Hooks,
                  server: RedisServer) -> Iterator[Cluster]:
    """cluster_fixture's workspace, on this test's own Redis."""
    (tmp_path / "jobs").mkdir()
    ws = Workspace(tmp_path, {
        "JANKYCRON_JOBS_PATH": str(tmp_path / "jobs"),
        "JANKYCRON_STATE_URL": pg_url,
        "JANKYCRON_WAREHOUSE_URL": pg_url,
        "JANKYCRON_STORE_URL": (tmp_path / "store").as_uri(),
        "JANKYCRON_BROKER_URL": server.url,
        "JANKYCRON_HEARTBEAT": "1s",
        "JANKYCRON_RETRY_BACKOFF": "1s",
    })
    c = Cluster(ws, hooks)
    c.redis = redis.Redis.from_url(server.url)
    try:
        yield c
    finally:
        c.stop()
        c.redis.close()


def _day(day: str) -> int:
    return (date.fromisoformat(day) - date(1970, 1, 1)).days


def _operator(fleet: Cluster, day: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jankycron", "run", "slow", "--date", day],
                            cwd=fleet.ws.path, env=fleet.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_worker_and_the_waiting_cli_ride_out_a_redis_restart_mid_run(
        fleet: Cluster, server: RedisServer) -> None:
    """Redis restarts while the worker runs a task (unacked, acks late): the worker stays up and
    takes the next run, the operator's `jankycron run` prints the run's success, and the
    interval's rows land once with one success in history."""
    fleet.rows("CREATE TABLE items (id bigint NOT NULL, label text)")
    fleet.ws.write_job("slow", SLOW.format(hook=fleet.hooks.url, rows=ROWS, pause=0.05))
    worker = fleet.worker("steady", concurrency=1)
    operator = _operator(fleet, DAY)
    try:
        wait_until(lambda: "extracting" in worker.text(), "the run to start extracting")
        server.restart(down_for=0.5)
        out, err = operator.communicate(timeout=DEADLINE)
    finally:
        if operator.poll() is None:
            operator.kill()
    assert operator.returncode == 0, out + err + worker.text()
    assert f"success; {ROWS} extracted, {ROWS} loaded, 0 dead-lettered" in out
    assert "Traceback" not in err
    assert worker.popen.poll() is None, worker.text()  # the worker lived on

    nxt = fleet.ws.cli("run", "slow", "--date", NEXT_DAY, env=fleet.env, timeout=DEADLINE)
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr + worker.text()
    for day in (DAY, NEXT_DAY):
        assert fleet.rows(f"SELECT count(*), count(DISTINCT id) FROM items WHERE id / 1000 = "
                          f"{_day(day)}") == [(ROWS, ROWS)]
        runs = [r for r in fleet.runs("slow") if r["start"].startswith(day)]
        assert [r["status"] for r in runs] == ["success"], runs
    assert "Unrecoverable error" not in worker.text()
    # nothing is left unacked, to be delivered again when the visibility timeout comes
    assert fleet.redis.hlen("unacked") == 0, fleet.redis.hgetall("unacked")
    assert not fleet.hooks.events("run_failed")


EVERY_MINUTE = '''
from jankycron import job

@job(schedule="* * * * *", table="items", key="id")
def items(run):
    minute = int(run.start.timestamp()) // 60
    for i in range(3):
        yield {"id": minute * 10 + i, "label": "items %d" % i}
'''


@pytest.mark.skipif(
    os.environ.get("CI") == "true" and not os.environ.get("JANKYCRON_TEST_BEAT_RESTART"),
    reason="flaky under load: 1 of 4 full runs timed out waiting for a slot after the restart "
           "(passes alone); open in issue 12; JANKYCRON_TEST_BEAT_RESTART=1 runs it in CI")
def test_beats_ride_out_a_redis_restart_and_every_slot_fires_once(
        fleet: Cluster, server: RedisServer) -> None:
    """Redis restarts under an active beat and a standby blocked on RedBeat's lock: neither
    beat exits, one of them fires the slots after the restart, and no slot fires twice."""
    fleet.rows("CREATE TABLE items (id bigint NOT NULL, label text)")
    fleet.ws.write_job("items", EVERY_MINUTE)
    worker = fleet.worker()
    active = fleet.beat("beat-a")
    wait_until(lambda: active.count("Sending due task job:items") >= 2, "beat A to tick")
    standby = fleet.beat("beat-b")
    wait_until(lambda: "beat: Starting..." in standby.text(), "beat B to start")
    wait_until(lambda: [r for r in fleet.runs("items") if r["status"] == "success"],
               "the job's first run")

    server.restart(down_for=2)
    restarted = datetime.now(UTC)
    sent = {b.name: b.count("Sending due task job:items") for b in (active, standby)}
    wait_until(lambda: sum(b.count("Sending due task job:items") for b in (active, standby))
               >= sum(sent.values()) + 3, "a beat to tick again after the restart")
    wait_until(lambda: [r for r in fleet.runs("items") if r["status"] == "success" and
                        parse_fmt(r["start"]) >= restarted - timedelta(minutes=1)],
               "a slot after the restart to fire and land", timeout=150)
    for proc in (active, standby, worker):
        assert proc.popen.poll() is None, proc.text()  # every process lived on
        assert "Traceback" not in proc.text() or proc is worker, proc.text()
    runs = fleet.runs("items")
    starts = [r["start"] for r in runs]
    assert len(starts) == len(set(starts)), f"a slot fired twice: {starts}"
    assert all(r["status"] == "success" for r in runs), runs
    for r in runs:
        minute = int(parse_fmt(r["start"]).timestamp()) // 60
        assert fleet.rows(f"SELECT count(*), count(DISTINCT id) FROM items WHERE id / 10 = "
                          f"{minute}") == [(3, 3)]


VISIBILITY = 20  # seconds: the broker's redelivery window, 4 h in production
SHORT_VISIBILITY = f'''
"""This test's override of the packaged Celery defaults: a short visibility timeout."""
visibility_timeout = {VISIBILITY}
# kombu looks for expired unacked messages every 10th of its 10 s checks: every second here
broker_transport_options = {{"visibility_timeout": visibility_timeout,
                            "unacked_restore_interval": 1, "unacked_restore_throttle": 1}}
'''


def test_a_killed_workers_task_delivered_again_after_its_run_succeeded_is_dropped(
        fleet: Cluster) -> None:
    """A worker is SIGKILLed mid-run: the sweeper marks the run lost and runs it again under the
    same task id on another worker. The killed worker's message is still unacked; the broker
    delivers it again after the visibility timeout. It is recognised and dropped: the source is
    not pulled again, history shows one success for the interval, and the rows land once."""
    (fleet.ws.path / "celeryconfig.py").write_text(SHORT_VISIBILITY)
    fleet.rows("CREATE TABLE items (id bigint NOT NULL, label text)")
    fleet.ws.write_job("slow", SLOW.format(hook=fleet.hooks.url, rows=ROWS, pause=0.05))
    doomed = fleet.worker("doomed", concurrency=1)
    operator = _operator(fleet, DAY)
    try:
        wait_until(lambda: "extracting" in doomed.text(), "the run to start extracting")
        killed = time.monotonic()
        doomed.kill()  # its message stays unacked in Redis
        rescuer = fleet.worker("rescuer", concurrency=1)
        fleet.beat()  # the sweeper
        out, err = operator.communicate(timeout=DEADLINE)
    finally:
        if operator.poll() is None:
            operator.kill()
    assert operator.returncode == 0, out + err
    assert "running again after its worker died" in err
    assert time.monotonic() - killed < VISIBILITY, "recovered by the broker, not the sweeper"

    task_id = re.search(r"queued \(task ([0-9a-f-]+)\)", err).group(1)
    wait_until(lambda: rescuer.count(f"jankycron.run[{task_id}] succeeded") >= 2,
               "the broker to deliver the killed worker's task again, and a worker to take it",
               timeout=VISIBILITY + 60)
    assert rescuer.count(f"extracting {DAY}") == 1, rescuer.text()  # the source pulled once
    assert f"task {task_id} delivered again after its run" in rescuer.text()
    runs = [r for r in fleet.runs("slow") if r["start"].startswith(DAY)]
    assert [r["status"] for r in runs] == ["lost", "success"], runs
    assert fleet.rows(f"SELECT count(*), count(DISTINCT id) FROM items WHERE id / 1000 = "
                      f"{_day(DAY)}") == [(ROWS, ROWS)]
    # acked (just after the worker logs "succeeded"): not delivered a third time
    wait_until(lambda: fleet.redis.hlen("unacked") == 0, "the dropped delivery to be acked",
               timeout=10)
    assert not fleet.hooks.events("run_failed")


def test_a_task_delivered_again_while_its_run_is_in_progress_waits_and_is_dropped(
        fleet: Cluster, server: RedisServer) -> None:
    """Redis drops the worker's connections but stays up (`CLIENT KILL`, as a failover or a
    proxy restart does): on reconnecting, kombu puts the unacked message back on the queue and
    the worker takes it again while the first delivery still runs. The second delivery waits
    for the run in progress, then is dropped: one extraction, one success, rows once."""
    fleet.rows("CREATE TABLE items (id bigint NOT NULL, label text)")
    fleet.ws.write_job("slow", SLOW.format(hook=fleet.hooks.url, rows=ROWS, pause=0.05))
    worker = fleet.worker("steady", concurrency=2)
    operator = _operator(fleet, DAY)
    try:
        wait_until(lambda: "extracting" in worker.text(), "the run to start extracting")
        fleet.redis.client_kill_filter(_type="normal", skipme=True)
        out, err = operator.communicate(timeout=DEADLINE)
    finally:
        if operator.poll() is None:
            operator.kill()
    assert operator.returncode == 0, out + err + worker.text()
    assert f"success; {ROWS} extracted, {ROWS} loaded, 0 dead-lettered" in out
    task_id = re.search(r"queued \(task ([0-9a-f-]+)\)", err).group(1)
    wait_until(lambda: f"task {task_id} delivered again" in worker.text() or
               worker.count(f"extracting {DAY}") > 1, "the task's second delivery")
    wait_until(lambda: fleet.redis.hlen("unacked") == 0 and not fleet.redis.llen(
        "jankycron.runs"), "every delivery to be acked")
    time.sleep(3)  # a second run would be extracting by now
    assert worker.count(f"extracting {DAY}") == 1, worker.text()
    runs = [r for r in fleet.runs("slow") if r["start"].startswith(DAY)]
    assert [r["status"] for r in runs] == ["success"], runs
    assert fleet.rows(f"SELECT count(*), count(DISTINCT id) FROM items WHERE id / 1000 = "
                      f"{_day(DAY)}") == [(ROWS, ROWS)]
    assert worker.popen.poll() is None and "Unrecoverable error" not in worker.text()
