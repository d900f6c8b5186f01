"""Celery tuning for jankycron: nothing a crashed worker held may be lost.

Read by ``jankycron.celery_app.make_celery`` (the Celery app itself arrives with the Celery
operations issue; these settings are the contract it will be built on, see REFERENCE §6).
"""

# Ack a task only after it finished, and requeue it if the worker process died (SIGKILL, OOM):
# a run is idempotent (its batch keys are deterministic and the loader merges by key), so a
# second execution is safe while a lost one is not.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1  # a worker holds at most the task it is running

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

timezone = "UTC"  # schedules are UTC; local-time crontabs have long-standing DST bugs
enable_utc = True

# An unacked task is redelivered after the visibility timeout, even while it still runs:
# it must exceed the longest job timeout (jobs default to 1h; the longest bundled job is 2h).
broker_transport_options = {"visibility_timeout": 4 * 3600}
result_backend_transport_options = {"visibility_timeout": 4 * 3600}
result_expires = 7 * 24 * 3600
