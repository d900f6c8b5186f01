"""GitHub Enterprise, nightly: what happened yesterday in the covered repositories.

Settings (the job's environment): GITHUB_BASE_URL (https://HOST/api/v3), GITHUB_TOKEN, and
GITHUB_ORGS=acme,infra and/or GITHUB_REPOS=acme/api. Pagination, rate limits and retries are
handled in jankycron/sources/github.py; each table's columns are in warehouse/0002_github.sql.
"""

from jankycron import job
from jankycron.sources import github


@job(
    schedule="0 3 * * *",  # nightly at 03:00 UTC; the run covers the previous 24 hours
    table=github.TABLES,  # seven tables, each with its merge key (github_commits: repo_id, sha)
    retries=3,
    timeout="2h",
    owner="data-eng",
)
def github_enterprise(run):
    settings = github.settings_from_env()
    for table, record in github.pull(run.start, run.end, settings, log=run.log):
        yield run.to(table, record)
