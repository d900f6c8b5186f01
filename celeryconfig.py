"""An example of Celery overrides for one deployment; jankycron's own settings are in
``jankycron/celery_defaults.py`` (late acks, reject on worker lost, prefetch 1, a 4 h visibility
timeout, JSON, UTC) and apply in every install without this file.

A ``celeryconfig.py`` in the folder the worker, beat or the CLI starts in (or importable from
``PYTHONPATH``) overrides single settings: only what is set here changes; a dict setting such as
``broker_transport_options`` is merged key by key. Keep the data-protecting settings as they
are unless you know why (README, "Running it on Celery").
"""

# Jobs that may run longer than 4 h need a longer visibility timeout (it must exceed the
# longest job timeout + 60 s, and the longest retry countdown; the worker warns at start when
# it does not). This sets both the broker's and the result backend's.
# visibility_timeout = 8 * 3600

# worker_concurrency = 4
# result_expires = 3 * 24 * 3600
