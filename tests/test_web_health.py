"""/healthz says whether the ledger answers; /metrics shows what the ledger holds, for every
worker, at the moment of the scrape (through Flask's test client and a real gunicorn)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from conftest import free_port, gunicorn
from prometheus_client.parser import text_string_to_metric_families

from jankycron.config import Settings
from jankycron.ledger import BatchStatus, Ledger, RunStatus
from jankycron.schedule import Interval
from jankycron.web import create_app

DAY1 = Interval(datetime(2026, 11, 24, 4, tzinfo=UTC), datetime(2026, 11, 25, 4, tzinfo=UTC))
DAY2 = Interval(datetime(2026, 11, 25, 4, tzinfo=UTC), datetime(2026, 11, 26, 4, tzinfo=UTC))


def loaded_run(ledger: Ledger, job: str, table: str, interval: Interval, loaded: int,
               rejected: int) -> str:
    """A run as the runner records it: staged, then its batch merged by the loader."""
    run_id = ledger.start_run(job, interval)
    batch = ledger.add_batch(run_id, job, interval, table, f"staging/{table}/{run_id}", loaded +
                             rejected, {"id": loaded + rejected})
    ledger.finish_run(run_id, RunStatus.STAGED, rows_extracted=loaded + rejected,
                      rows_staged=loaded + rejected)
    ledger.batches_done({batch: (BatchStatus.LOADED, loaded, rejected, {})})
    return run_id


def fill(ledger: Ledger) -> None:
    """orders: two loaded runs and one failed; invoices: one run staged, its batch pending."""
    loaded_run(ledger, "orders", "orders", DAY1, 10, 2)
    loaded_run(ledger, "orders", "orders", DAY2, 5, 0)
    failed = ledger.start_run("orders", DAY2)
    ledger.finish_run(failed, RunStatus.FAILED, error="KeyError: 'id'")
    ledger._exec("UPDATE jc_runs SET started_at = ?, finished_at = ? WHERE id = ?",
                 ("2026-11-26T04:00:00Z", "2026-11-26T04:01:30Z", failed))  # it ran 90 s
    staged = ledger.start_run("invoices", DAY2)
    ledger.add_batch(staged, "invoices", DAY2, "invoices", "staging/invoices/x", 7, {"id": 7})
    ledger.finish_run(staged, RunStatus.STAGED, rows_extracted=7, rows_staged=7)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` from Prometheus text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def assert_matches_the_ledger(m: dict[tuple[str, tuple], float]) -> None:
    assert m[("jankycron_ledger_up", ())] == 1
    assert m[("jankycron_runs", (("job", "orders"), ("status", "success")))] == 2
    assert m[("jankycron_runs", (("job", "orders"), ("status", "failed")))] == 1
    assert m[("jankycron_runs", (("job", "invoices"), ("status", "staged")))] == 1
    assert m[("jankycron_rows_loaded_total", (("table", "orders"),))] == 15
    assert m[("jankycron_rows_rejected_total", (("table", "orders"),))] == 2
    assert m[("jankycron_pending_batches", (("table", "invoices"),))] == 1
    assert m[("jankycron_pending_rows", (("table", "invoices"),))] == 7
    assert m[("jankycron_pending_batches", (("table", "orders"),))] == 0
    assert m[("jankycron_run_duration_seconds_count",
              (("job", "orders"), ("status", "success")))] == 2
    assert m[("jankycron_run_duration_seconds_bucket",
              (("job", "orders"), ("le", "+Inf"), ("status", "success")))] == 2
    failed = (("job", "orders"), ("status", "failed"))
    assert m[("jankycron_run_duration_seconds_sum", failed)] == 90
    assert m[("jankycron_run_duration_seconds_bucket", (failed[0], ("le", "60.0"), failed[1]))] \
        == 0
    assert m[("jankycron_run_duration_seconds_bucket", (failed[0], ("le", "120.0"), failed[1]))] \
        == 1
    assert m[("jankycron_load_latency_seconds_count", (("table", "orders"),))] == 2
    assert m[("jankycron_last_success_interval_end_timestamp_seconds", (("job", "orders"),))] \
        == DAY2.end.timestamp()
    last = m[("jankycron_last_success_timestamp_seconds", (("job", "orders"),))]
    assert abs(last - time.time()) < 120
    assert ("jankycron_last_success_timestamp_seconds", (("job", "invoices"),)) not in m


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("pg_url")


def test_metrics_show_what_the_ledger_holds(state_url: str) -> None:
    ledger = Ledger(state_url)
    fill(ledger)
    client = create_app(Settings.from_env({"JANKYCRON_STATE_URL": state_url})).test_client()

    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    assert_matches_the_ledger(samples(r.get_data(as_text=True)))

    loaded_run(ledger, "orders", "orders", DAY2, 3, 1)  # a worker finishes another run
    m = samples(client.get("/metrics").get_data(as_text=True))
    assert m[("jankycron_runs", (("job", "orders"), ("status", "success")))] == 3
    assert m[("jankycron_rows_loaded_total", (("table", "orders"),))] == 18
    ledger.close()


def test_healthz_is_ok_when_the_ledger_answers(tmp_path: Path) -> None:
    settings = Settings.from_env({"JANKYCRON_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}"})
    r = create_app(settings).test_client().get("/healthz")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ok", "checks": {"ledger": "ok"}}


def test_an_unreachable_ledger_is_a_503_with_one_line_and_no_password() -> None:
    url = f"postgresql://jankycron:hunter2@127.0.0.1:{free_port()}/jankycron"
    client = create_app(Settings.from_env({"JANKYCRON_STATE_URL": url})).test_client()

    r = client.get("/healthz")
    assert r.status_code == 503
    body = r.get_json()
    assert body["status"] == "unavailable"
    assert body["reason"].startswith("ledger: ") and "unreachable" in body["reason"]
    assert "\n" not in body["reason"] and "hunter2" not in r.get_data(as_text=True)

    m = client.get("/metrics")  # a scrape still answers, and says the ledger is down
    assert m.status_code == 200
    assert samples(m.get_data(as_text=True))[("jankycron_ledger_up", ())] == 0


def test_gunicorn_serves_health_and_metrics(tmp_path: Path) -> None:
    state = f"sqlite:///{tmp_path / 'state.db'}"
    fill(Ledger(state))
    with gunicorn(tmp_path, {"JANKYCRON_STATE_URL": state}) as web:
        health = requests.get(f"{web.url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        for _ in range(3):  # whichever worker answers, the numbers are the ledger's
            metrics = requests.get(f"{web.url}/metrics", timeout=10)
            assert metrics.status_code == 200
            assert_matches_the_ledger(samples(metrics.text))


def test_a_worker_or_beat_serves_its_own_process_metrics(tmp_path: Path) -> None:
    port = free_port()
    code = ("import sys, time; from jankycron.config import Settings; "
            "from jankycron.metrics import start_worker_metrics; "
            f"s = Settings.from_env({{'JANKYCRON_METRICS_PORT': '{port - 1}'}}); "
            "print(start_worker_metrics(s, 'beat'), start_worker_metrics(s, 'beat'), flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        # beat serves on JANKYCRON_METRICS_PORT + 1; a second server on a taken port says so
        # (a log line) and returns None instead of crashing the process
        assert proc.stdout.readline().split() == [str(port), "None"]
        m = samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        assert ("jankycron_process_start_time_seconds", (("role", "beat"),)) in m
        assert any(name == "process_resident_memory_bytes" for name, _ in m)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
