"""The CLI reaches the workers from any install (issue 12, item 5): the settings that protect
data are the package's own, and a ``celeryconfig.py`` in the folder only overrides them, even
for the ``jankycron`` console script (which does not have the current folder on sys.path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import duckdb
import pytest
import redis
from celery_helpers import REDIS_URL, Proc, wait_until

from jankycron.celery_app import make_celery
from jankycron.config import Settings
from jankycron.discovery import discover
from jankycron.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
JOB = '''
from jankycron import job

@job(schedule="0 0 * * *", table="hello", key="id")
def hello(run):
    yield {"id": 1, "day": run.start.isoformat()}
'''


def _app(tmp_path: Path, config: str):
    (tmp_path / "jobs").mkdir(exist_ok=True)
    settings = Settings.from_env({"JANKYCRON_BROKER_URL": "redis://127.0.0.1:1/0",
                                  "JANKYCRON_JOBS_PATH": str(tmp_path / "jobs")})
    return make_celery(settings, discover(settings.jobs_path)[0], config)


def test_two_apps_in_one_process_keep_their_own_tasks(tmp_path: Path, monkeypatch) -> None:
    """make_celery's tasks belong to their app only (``shared=False``): Celery attaches shared
    tasks to every app created later in the process, so a second app (a test, the CLI waiting
    after building one) got the first app's closures and Celery warned of duplicate names,
    which ``filterwarnings = error`` turns into a failure."""
    monkeypatch.chdir(tmp_path)
    absent = f"jc_absent_{uuid.uuid4().hex[:8]}"  # no override file
    first, second = _app(tmp_path, absent), _app(tmp_path, absent)
    first.finalize()
    second.finalize()  # raised DuplicateTaskNameWarning before
    assert second.tasks["jankycron.fire"] is not first.tasks["jankycron.fire"]


def test_without_a_config_file_the_data_protecting_settings_hold(tmp_path: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    conf = _app(tmp_path, f"jc_absent_{uuid.uuid4().hex[:8]}").conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost,
            conf.worker_prefetch_multiplier) == (True, True, 1)
    assert conf.broker_transport_options["visibility_timeout"] == 4 * 3600
    assert conf.result_backend_transport_options["visibility_timeout"] == 4 * 3600


def test_a_config_file_in_the_current_folder_overrides_only_what_it_sets(tmp_path: Path,
                                                                          monkeypatch) -> None:
    """The current folder is not on sys.path here (as in the console script): the file is
    still read, and what it leaves out keeps the package's value."""
    name = f"jc_tuning_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import os\nvisibility_timeout = 7200\nworker_concurrency = 3\n"
        "broker_transport_options = {'max_connections': 20}\n")
    monkeypatch.chdir(tmp_path)
    assert str(tmp_path) not in sys.path and "" not in sys.path
    conf = _app(tmp_path, name).conf
    assert conf.worker_concurrency == 3
    assert conf.broker_transport_options == {"visibility_timeout": 7200, "max_connections": 20}
    assert conf.result_backend_transport_options == {"visibility_timeout": 7200}
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost,
            conf.worker_prefetch_multiplier) == (True, True, 1)

    (tmp_path / f"{name}.py").write_text("visibility_timeout = = 1\n")
    with pytest.raises(ConfigError, match=f"{name}.py cannot be read: SyntaxError"):
        _app(tmp_path, name)


@pytest.mark.slow
def test_run_through_a_worker_from_a_wheel_installed_outside_the_checkout(tmp_path: Path) -> None:
    """A wheel of the package in a fresh virtualenv, a worker and the CLI each started in a
    folder of their own that holds no copy of anything: ``jankycron run`` is run by the worker.
    Again from a deploy folder holding a celeryconfig.py (the case that used to fail)."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    (wheel,) = wheels.glob("jankycron-*.whl")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=300)

    jobs, worker_dir, deploy, elsewhere = (tmp_path / d for d in
                                           ("jobs", "worker", "deploy", "elsewhere"))
    for d in (jobs, worker_dir, deploy, elsewhere):
        d.mkdir()
    (jobs / "hello.py").write_text(textwrap.dedent(JOB))
    (deploy / "celeryconfig.py").write_text("result_expires = 3600\n")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as db:
        db.execute("CREATE TABLE hello (id int NOT NULL, day text)")
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({
        "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
        "JANKYCRON_BROKER_URL": REDIS_URL,
        "JANKYCRON_JOBS_PATH": str(jobs),
        "JANKYCRON_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "JANKYCRON_STORE_URL": (tmp_path / "store").as_uri(),
        "JANKYCRON_WAREHOUSE_URL": f"duckdb:///{tmp_path / 'warehouse.duckdb'}",
    })
    worker = Proc("worker", [str(venv / "bin" / "celery"), "-A", "jankycron.worker", "worker",
                             "-c", "1", "--loglevel", "INFO"], env, worker_dir)
    try:
        wait_until(lambda: "ready" in worker.text() or worker.popen.poll() is not None,
                   "the worker to start")
        assert worker.popen.poll() is None, worker.text()
        for day, cwd in (("2026-11-01", elsewhere), ("2026-11-02", deploy)):
            proc = subprocess.run([str(venv / "bin" / "jankycron"), "run", "hello", "--date", day,
                                   "--json"], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=120)
            assert proc.returncode == 0, proc.stdout + proc.stderr + worker.text()
            out = json.loads(proc.stdout)
            run = out[0] if isinstance(out, list) else out
            assert (run["status"], run["rows_loaded"]) == ("success", 1), out
        assert "Traceback" not in worker.text(), worker.text()
    finally:
        worker.stop()
