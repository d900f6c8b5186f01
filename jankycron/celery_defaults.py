"""Celery tuning for jankycron, the package's own: nothing a crashed worker held may be lost
(REFERENCE §6). Every install has it, whatever folder a worker or the CLI starts in.

Read by ``jankycron.celery_app.make_celery``; a ``celeryconfig.py`` (importable, or in the
current folder) overrides single settings (``celery_app._tuning``). make_celery then adds what
depends on the settings and the jobs: the broker and result backend, queues, RedBeat, beat's
schedule, and per-run time limits (a job's ``timeout`` is its run's soft limit; the hard kill
follows 60 s later).
"""

# Ack a task only after it finished, and requeue it if the worker process died (SIGKILL, OOM):
# a run is idempotent (its batch keys are deterministic and the loader merges by key), so a
# second execution is safe while a lost one is not. A task that keeps killing its worker is
# stopped after 3 deliveries (celery_app.MAX_DELIVERIES), so requeueing cannot loop forever.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1  # a worker holds at most the task it is running
# A lost broker connection (a Redis restart) does not stop the running tasks: they finish and
# are acked on the new connection. Cancelling them (True) turned a Redis blip into a revoked
# run and an operator's `jankycron run` exiting 1. If the broker delivers such a task again
# meanwhile, celery_app recognises it by its task id in the ledger: it waits for the run in
# progress, and a task whose run already succeeded is dropped, not run twice.
worker_cancel_long_running_tasks_on_connection_loss = False
broker_connection_retry_on_startup = True
broker_connection_retry = True
broker_connection_max_retries = None  # a worker waits for Redis to come back, however long
# A task that finishes while Redis is down stores its result once Redis is back.
result_backend_always_retry = True
result_backend_max_retries = 30  # backs off up to 10 s apart: a few minutes

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
task_track_started = True  # the CLI shows "running" between "queued" and the outcome

timezone = "UTC"  # schedules are UTC; local-time crontabs have long-standing DST bugs
enable_utc = True

# An unacked task is redelivered after the visibility timeout, even while it still runs: it
# must exceed the longest job timeout (jobs default to 1h) plus the 60 s hard-limit grace, and
# the longest retry countdown (15 min at most). make_celery warns when a job's timeout does not
# fit. Crashed workers do not wait for it: the sweeper re-enqueues their runs after 3 missed
# heartbeats.
visibility_timeout = 4 * 3600
broker_transport_options = {"visibility_timeout": visibility_timeout}
result_backend_transport_options = {"visibility_timeout": visibility_timeout}
# Only what a CLI waits for stores a result (scheduled runs and beat's ticks store none),
# so results need not outlive the longest wait by much.
result_expires = 24 * 3600
