"""Real Celery processes for the tests: workers and beats (``celery -A jankycron.worker``) on a
Redis database of their own, against a workspace with a PostgreSQL warehouse and ledger and a
local store; and a webhook that records the alerts jankycron sends (the real sender,
jankycron.alerts, posting to a job's ``alert="http://..."`` route).

Test modules import the fixtures: ``from celery_helpers import cluster_fixture, hooks_fixture``.
Everything ticks every second (JANKYCRON_HEARTBEAT=1s), so beat fires, sweeps and checks for
missed runs within seconds. Waits poll with generous deadlines: the machine is small and shared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import Workspace, http_server, pg_query

REDIS_URL = os.environ.get("JANKYCRON_TEST_CELERY_REDIS", "redis://127.0.0.1:6379/11")
DEADLINE = 90.0  # seconds; a healthy run takes a few


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE,
               every: float = 0.3) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Proc:
    """A Celery process in its own process group (a SIGKILL takes its pool children too, as
    when a container or host dies), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path):
        self.name = name
        self.log_path = cwd / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count(self, needle: str) -> int:
        return self.text().count(needle)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            self.popen.wait(30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
        self.kill(signal.SIGKILL)  # any pool child left behind
        self._log.close()


class Hooks:
    """An HTTP endpoint that records every JSON body POSTed to it (a job's alert route)."""

    url: str  # set while it serves

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def events(self, event: str | None = None, job: str | None = None) -> list[dict[str, Any]]:
        return [b for b in list(self.bodies)
                if (event is None or b.get("event") == event) and (job is None or
                                                                    b.get("job") == job)]


class Cluster:
    """Workers and beats for one workspace, all stopped at the end of the test."""

    def __init__(self, ws: Workspace, hooks: Hooks):
        self.ws, self.hooks = ws, hooks
        self.procs: list[Proc] = []
        self.redis = redis.Redis.from_url(REDIS_URL)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.ws.env}

    def worker(self, name: str = "worker", queues: str | None = None,
               concurrency: int = 2) -> Proc:
        argv = [sys.executable, "-m", "celery", "-A", "jankycron.worker", "worker",
                "--loglevel", "INFO", "--concurrency", str(concurrency), "--hostname",
                f"{name}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat"]
        if queues:
            argv += ["--queues", queues]
        return self._start(name, argv)

    def beat(self, name: str = "beat", loglevel: str = "DEBUG") -> Proc:
        """DEBUG by default: the tests watch beat's "Sending due task" lines, debug since
        idle ticks log at debug (celery_app.QuietTicks)."""
        return self._start(name, [sys.executable, "-m", "celery", "-A", "jankycron.worker",
                                  "beat", "--loglevel", loglevel])

    def _start(self, name: str, argv: list[str]) -> Proc:
        proc = Proc(name, argv, self.env, self.ws.path)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()

    # ------------------------------------------------------------------ what users see
    def runs(self, job: str | None = None) -> list[dict[str, Any]]:
        """The ledger's runs (``history --json``), oldest first."""
        rows = self.ws.cli_json("history", *([job] if job else []), "--limit", "1000")
        return list(reversed(rows))

    def rows(self, sql: str) -> list[tuple]:
        return pg_query(self.ws.env["JANKYCRON_WAREHOUSE_URL"], sql)


@pytest.fixture(name="hooks")
def hooks_fixture() -> Iterator[Hooks]:
    h = Hooks()
    with http_server(h.handler()) as root:
        h.url = f"{root}/hook"
        yield h


@pytest.fixture(name="cluster")
def cluster_fixture(tmp_path: Path, pg_url: str, hooks: Hooks) -> Iterator[Cluster]:
    """A workspace on PostgreSQL (warehouse and ledger) and a local store, with the broker,
    RedBeat and the locks on a Redis database emptied before and after the test."""
    (tmp_path / "jobs").mkdir()
    ws = Workspace(tmp_path, {
        "JANKYCRON_JOBS_PATH": str(tmp_path / "jobs"),
        "JANKYCRON_STATE_URL": pg_url,
        "JANKYCRON_WAREHOUSE_URL": pg_url,
        "JANKYCRON_STORE_URL": (tmp_path / "store").as_uri(),
        "JANKYCRON_BROKER_URL": REDIS_URL,
        "JANKYCRON_HEARTBEAT": "1s",
        "JANKYCRON_RETRY_BACKOFF": "1s",
    })
    c = Cluster(ws, hooks)
    c.redis.flushdb()
    try:
        yield c
    finally:
        c.stop()
        c.redis.flushdb()
