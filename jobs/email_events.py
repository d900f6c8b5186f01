"""Email events, hourly: delivered, opened, clicked, bounced, complained and unsubscribed.

Settings (the job's environment): MAILGUN_API_KEY, MAILGUN_DOMAIN, and MAILGUN_BASE_URL for EU
accounts (https://api.eu.mailgun.net). Providers report events late, so each run reads its
hour shifted back by MAILGUN_LAG (30m): the 10:00-11:00 run reads events stamped 09:30-10:30.
Pagination, rate limits and retries are handled in jankycron/sources/email.py; the columns are
in warehouse/0003_email_events.sql.
"""

from jankycron import job
from jankycron.sources import email


@job(
    schedule="0 * * * *",  # hourly, UTC; the run covers the previous hour, shifted by the lag
    table="email_events",
    key=("provider", "id"),  # the provider's event id: a rerun replaces, never duplicates
    retries=3,
    timeout="45m",  # under the hour, so runs never pile up
    owner="data-eng",
)
def email_events(run):
    provider = email.provider_from_env(log=run.log)
    yield from email.pull(run.start, run.end, provider)
