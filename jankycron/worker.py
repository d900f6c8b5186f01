"""The one module that builds a Celery app at import, for the Celery command line::

    celery -A jankycron.worker worker    # add -Q jankycron.ops for a small ops-only worker
    celery -A jankycron.worker beat      # RedBeat; start two: one active, one hot standby

Settings come from the environment, jobs from ``JANKYCRON_JOBS_PATH``; restart both after
changing jobs/. A broken job file is skipped and logged as an error (which Sentry reports);
the other jobs run.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import after_setup_logger, after_setup_task_logger, beat_init, worker_init

from .celery_app import make_celery
from .config import Settings
from .discovery import discover
from .scrub import install_log_filter

log = logging.getLogger(__name__)

settings = Settings.from_env(os.environ)
registry, errors = discover(settings.jobs_path, settings.import_timeout)
app = make_celery(settings, registry)
scrubber = settings.scrubber()


def _started(role: str) -> None:
    from .alerts import init_sentry
    from .metrics import start_worker_metrics

    init_sentry(settings, celery=True)
    start_worker_metrics(settings, role)  # JANKYCRON_METRICS_PORT (beat: + 1); off when unset
    for e in errors:
        log.error("skipped broken job file %s", e)
    log.info("jankycron: %d job(s) from %s", len(registry), settings.jobs_path)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _scrub_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    """Celery has set up its handlers (root, then the task logger): every record they write,
    tracebacks and redirected stdout included, is scrubbed of the configured secrets."""
    install_log_filter(scrubber, *([logger] if logger is not None else []))


@worker_init.connect
def _worker_started(**_: Any) -> None:
    _started("worker")


@beat_init.connect
def _beat_started(**_: Any) -> None:
    _started("beat")
