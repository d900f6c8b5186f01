"""Celery tuning for jankycron: nothing a crashed worker held may be lost (REFERENCE §6).

Read by ``jankycron.celery_app.make_celery``, which adds what depends on the settings and the
jobs: the broker and result backend, queues, RedBeat, beat's schedule, and per-run time limits
(a job's ``timeout`` is its run's soft limit; the hard kill follows 60 s later).
"""

# Ack a task only after it finished, and requeue it if the worker process died (SIGKILL, OOM):
# a run is idempotent (its batch keys are deterministic and the loader merges by key), so a
# second execution is safe while a lost one is not. A task that keeps killing its worker is
# stopped after 3 deliveries (celery_app.MAX_DELIVERIES), so requeueing cannot loop forever.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1  # a worker holds at most the task it is running
# With acks_late the broker redelivers a task whose worker lost its connection: stop running
# it here rather than run it twice at once (the run lock would drop one anyway).
worker_cancel_long_running_tasks_on_connection_loss = True
broker_connection_retry_on_startup = True

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
# Results are stored only for tasks someone waits for (`jankycron run` / `backfill`, a forced
# load, a recovery under a waited-for task id); beat's ticks and scheduled runs store none. The
# CLI reads a result as soon as it exists, so a day is plenty (Redis runs with noeviction).
result_expires = 24 * 3600
