"""`jankycron dev`: web + worker + beat in one command on the embedded defaults (no Redis: kombu's
filesystem:// transport under ./var), and a run through its worker from the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from conftest import Workspace, create_table, free_port, warehouse_rows

JOB = '''
from jankycron import job

@job(schedule="0 5 * * *", table="greetings", key="id")
def greetings(run):
    for i in range(25):
        yield {"id": i, "text": f"hello {i} on {run.start.date()}"}
'''


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except OSError as e:
        return 0, str(e)


def test_dev_serves_health_and_runs_a_job_through_its_worker(duck_ws: Workspace) -> None:
    create_table(duck_ws, "CREATE TABLE greetings (id int NOT NULL, text varchar(100))")
    duck_ws.write_job("greetings", JOB)
    env = {k: v for k, v in {**os.environ, **duck_ws.env}.items()
           if k != "JANKYCRON_BROKER_URL"}
    port = free_port()
    log = duck_ws.path / "dev.log"
    with log.open("w") as out:
        dev = subprocess.Popen([sys.executable, "-m", "jankycron", "dev", "--port", str(port)],
                               cwd=duck_ws.path, env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _get(f"http://127.0.0.1:{port}/healthz")[0] != 200:
            assert dev.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "dev's web app never answered /healthz"
            time.sleep(0.5)
        proc = duck_ws.cli("run", "greetings", "--date", "2026-11-20",
                           env={"JANKYCRON_BROKER_URL": "filesystem://"}, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "success" in proc.stdout
        assert (duck_ws.path / "var" / "broker").is_dir()  # no Redis was involved
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(10)
    assert dev.returncode == 0, log.read_text()  # Ctrl-C stops everything cleanly
    assert warehouse_rows(duck_ws, "SELECT count(*) FROM greetings") == [(25,)]
