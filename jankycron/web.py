"""The web process: ``create_app()`` builds a small Flask app; nothing is built at import.

- ``GET /healthz``: 200 ``{"status": "ok", "checks": {...}}`` when the ledger answers; 503 with
  a one-line reason otherwise (no secrets). Kubernetes' readiness probe and load balancers.
- ``GET /metrics``: Prometheus text, read from the shared ledger at scrape time (see
  ``jankycron/metrics.py``), so it covers the runs and loads of every worker.

Each concern is a blueprint; later ones (the Segment webhook, a status page) register theirs
in ``create_app``. Run it with ``gunicorn 'jankycron.web:create_app()'``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .config import Settings
from .metrics import LedgerSource, ledger_registry
from .scrub import install_log_filter
from .status import bp as status_page
from .webhooks import segment_webhook


@dataclass
class WebState:
    settings: Settings
    source: LedgerSource
    registry: CollectorRegistry


def create_app(settings: Settings | None = None) -> Flask:
    """The WSGI app; settings from the environment unless given (tests pass them)."""
    settings = settings or Settings.from_env(os.environ)
    app = Flask("jankycron")
    # Every log line of the web process (gunicorn's error log too) is scrubbed of secrets.
    install_log_filter(settings.scrubber(), "gunicorn.error")
    source = LedgerSource(settings)
    app.extensions["jankycron"] = WebState(settings, source, ledger_registry(source))
    app.register_blueprint(ops)
    app.register_blueprint(status_page)  # /, /jobs/<name>, /loader: see status.py
    app.register_blueprint(segment_webhook)  # POST /webhooks/segment
    return app


def state() -> WebState:
    return current_app.extensions["jankycron"]


ops = Blueprint("ops", __name__)


@ops.get("/healthz")
def healthz() -> tuple[Response, int]:
    web = state()
    try:
        web.source.ping()
    except Exception as e:
        lines = str(e).strip().splitlines()
        reason = web.settings.scrubber()(lines[0] if lines else type(e).__name__)[:300]
        body = jsonify(status="unavailable", reason=f"ledger: {reason}",
                       checks={"ledger": reason})
        code = 503
    else:
        body, code = jsonify(status="ok", checks={"ledger": "ok"}), 200
    body.headers["Cache-Control"] = "no-store"
    return body, code


@ops.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(state().registry), content_type=CONTENT_TYPE_LATEST)
