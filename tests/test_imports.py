"""The core (runner, staging, loader, ledger) stays free of Celery, Flask and click, so a job
runs as plain Python and the edges can change without touching it (click's test_imports)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CORE = ["jankycron", "jankycron.runner", "jankycron.staging", "jankycron.load",
        "jankycron.load.postgres", "jankycron.load.duckdb", "jankycron.ledger",
        "jankycron.discovery", "jankycron.deadletters", "jankycron.store",
        "jankycron.load.redshift_sql", "jankycron.load.redshift", "jankycron.housekeeping",
        "jankycron.sources.http", "jankycron.sources.github"]
FORBIDDEN = ("celery", "kombu", "flask", "werkzeug", "click", "sentry_sdk", "redbeat")


@pytest.mark.parametrize("module", CORE)
def test_core_module_does_not_import_the_edges(module: str) -> None:
    code = (f"import sys, json; import {module}; "
            "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = set(json.loads(out))
    assert module.split(".")[0] in loaded
    assert not loaded & set(FORBIDDEN), f"{module} pulls in {sorted(loaded & set(FORBIDDEN))}"


def test_the_check_itself_sees_an_edge_import() -> None:
    """Guard against a vacuous test: importing the CLI does pull in click."""
    code = "import sys, jankycron.cli; print('click' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "True"
