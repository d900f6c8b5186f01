"""Segment events: drain the webhook's Redis stream into the segment_* tables every 5 minutes.

The web process takes Segment's webhooks (POST /webhooks/segment, JANKYCRON_SEGMENT_SECRET)
and appends them to a Redis stream (JANKYCRON_WEBHOOK_REDIS_URL, default the broker). This job
reads what arrived, one row per event into the table of its type; rows merge on id (Segment's
messageId), so Segment's retries never duplicate a row. Stream entries are acknowledged only
after a later run sees this run's batches loaded (jankycron/sources/segment.py). Columns:
warehouse/0004_segment.sql.
"""

import os

from jankycron import job
from jankycron.config import Settings
from jankycron.sources import segment


@job(
    schedule="*/5 * * * *",  # the data interval is only a label: each run drains what is there
    table={table: "id" for table in segment.TABLES.values()},
    retries=3,  # Redis unreachable: retried with backoff; nothing was acknowledged
    timeout="30m",
    owner="data-eng",
    rerun_replaces=False,  # each run drains new events: a rerun adds to, never replaces, a run
)
def segment_events(run):
    settings = Settings.from_env(os.environ)
    for table, row in segment.drain(run, settings):
        yield run.to(table, row)
