"""The GitHub Enterprise job pulls one day across an org's repos and a listed repo from a local
server that behaves like GHES: every item of every page in the window lands once, nothing
outside it does, rate limits are waited out instead of failing, a 502 is retried, GHES with rate
limiting turned off works, and a rerun of the day duplicates nothing."""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT, Workspace, free_port, warehouse_rows
from ghes_server import GHES, TOKEN, Fault

from jankycron.errors import ConfigError, TerminalError, TransientError
from jankycron.sources import github
from jankycron.sources.http import Client, HTTPStatusError, retry_after

DAY = "2026-11-20"
START = datetime(2026, 11, 20, 3, tzinfo=UTC)  # the job runs at 03:00 UTC
END = START + timedelta(days=1)
INSIDE = [timedelta(0), timedelta(hours=1), timedelta(hours=9),
          timedelta(hours=23, minutes=59, seconds=59)]
OUTSIDE = [-timedelta(seconds=1), -timedelta(days=2), timedelta(days=1),
           timedelta(days=1, hours=5)]
OLD = [-timedelta(days=d) for d in range(3, 10)]  # pull requests the job must not page to
COVERED = ("acme/api", "acme/web", "infra/deploy")

TABLES = ["github_repositories", "github_pull_requests", "github_issues",
          "github_issue_comments", "github_review_comments", "github_reviews", "github_commits"]


def build(g: GHES) -> dict[str, set]:
    """Org acme (api, web, an empty repo) + a listed repo infra/deploy + a repo nobody asked
    for; activity inside, at the edges of and outside the day. Returns the keys that must land."""
    expected: dict[str, set] = defaultdict(set)
    for name in ("acme/api", "acme/web", "acme/empty"):
        expected["github_repositories"].add(g.add_repo(name, org="acme")["id"])
    expected["github_repositories"].add(g.add_repo("infra/deploy")["id"])
    g.add_repo("infra/secret")  # not in GITHUB_ORGS/GITHUB_REPOS
    sha = (f"{i:040x}" for i in itertools.count(1))
    for repo in (*COVERED, "infra/secret"):
        repo_id = g.repos[repo]["id"]
        numbers = itertools.count(1)
        for off in INSIDE + OUTSIDE + OLD:
            when = START + off
            pr = g.add_pull(repo, when, next(numbers))
            issue = g.add_issue(repo, when, next(numbers))
            ic = g.add_issue_comment(repo, when, issue["number"])
            rc = g.add_review_comment(repo, when, pr["number"])
            commit = g.add_commit(repo, when, next(sha))
            if off in INSIDE and repo != "infra/secret":
                expected["github_pull_requests"].add(pr["id"])
                expected["github_issues"].add(issue["id"])
                expected["github_issue_comments"].add(ic["id"])
                expected["github_review_comments"].add(rc["id"])
                expected["github_commits"].add((repo_id, commit["sha"]))
                submitted = g.reviews[(repo, pr["number"])][0]  # the other one is PENDING
                expected["github_reviews"].add(submitted["id"])
    return expected


def env_for(g: GHES, token: str = TOKEN) -> dict[str, str]:
    return {"GITHUB_BASE_URL": g.base, "GITHUB_TOKEN": token, "GITHUB_ORGS": "acme",
            "GITHUB_REPOS": "infra/deploy"}


def keys_of(rows: list[tuple[str, dict]]) -> dict[str, set]:
    out: dict[str, set] = defaultdict(set)
    for table, row in rows:
        out[table].add((row["repo_id"], row["sha"]) if table == "github_commits" else row["id"])
    return out


def warehouse_keys(ws: Workspace) -> dict[str, set]:
    out = {t: {r[0] for r in warehouse_rows(ws, f"SELECT id FROM {t}")}
           for t in TABLES if t != "github_commits"}
    out["github_commits"] = set(warehouse_rows(ws, "SELECT repo_id, sha FROM github_commits"))
    return out


def counts(ws: Workspace) -> dict[str, int]:
    return {t: warehouse_rows(ws, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


def setup_workspace(ws: Workspace) -> None:
    shutil.copy(ROOT / "jobs" / "github_enterprise.py", ws.jobs)
    ws.cli("migrate", "--path", str(ROOT / "warehouse"), check=True)


# ------------------------------------------------------------------------------ the pull
def test_one_day_across_repos_lands_every_page_and_waits_out_limits_and_a_502():
    g = GHES(page_size=3)
    waits: list[float] = []
    with g.serve():
        expected = build(g)
        g.fail_once("/repos/acme/api/pulls", Fault(502, body={"message": "Bad Gateway"}))
        g.fail_once("/repos/acme/web/issues", Fault(403, {"Retry-After": "7"}, {
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes."}))
        g.fail_once("/repos/acme/web/pulls/comments", Fault(200, use_up_limit_for=30))
        g.fail_once("/repos/infra/deploy/commits", Fault(429, {"Retry-After": "3"}, {
            "message": "Too many requests"}))
        settings = github.settings_from_env(env_for(g))
        rows = list(github.pull(START, END, settings, sleep=waits.append))

    assert keys_of(rows) == expected
    assert len(rows) == sum(len(v) for v in expected.values())  # each item once
    # 502: a jittered backoff of about 1s; 403 secondary: Retry-After; the 200 that used the
    # limit up: until X-RateLimit-Reset (30s) + 1s margin; 429: Retry-After
    assert len(waits) == 4, waits
    assert 0.5 <= waits[0] <= 1.5
    assert waits[1] == 7.0
    assert 29.0 <= waits[2] <= 32.0
    assert waits[3] == 3.0
    # the pulls list is read newest first and paging stops once past the window
    for repo in COVERED:
        pages = {int(s.query.get("page", 1)) for s in g.requests_to(f"/repos/{repo}/pulls")}
        assert max(pages) == 3, (repo, pages)
    # the windows sent to the API are the run's interval, in UTC
    first = g.requests_to("/repos/acme/api/issues")[0].query
    assert (first["since"], first["sort"], first["direction"]) == (
        "2026-11-20T03:00:00Z", "updated", "asc")
    commits = g.requests_to("/repos/acme/api/commits")[0].query
    assert (commits["since"], commits["until"]) == ("2026-11-20T03:00:00Z",
                                                   "2026-11-21T02:59:59Z")


def test_rows_are_flat_with_utc_times_and_issues_exclude_pull_requests():
    g = GHES(rate_limits=False)
    with g.serve():
        g.add_repo("infra/deploy")
        pr = g.add_pull("infra/deploy", START + timedelta(hours=2), 5, title="Add retries")
        g.add_issue_comment("infra/deploy", START + timedelta(hours=3), 5)
        settings = github.settings_from_env({**env_for(g), "GITHUB_ORGS": ""})
        rows = list(github.pull(START, END, settings, sleep=lambda s: None))
    by_table = defaultdict(list)
    for table, row in rows:
        by_table[table].append(row)
    assert by_table["github_issues"] == []  # the PR's shadow issue is not an issue
    (row,) = by_table["github_pull_requests"]
    assert row["id"] == pr["id"] and row["repo"] == "infra/deploy"
    assert row["user_login"] == "ada" and row["head_ref"] == "feature-5"
    assert row["labels"] == ["bug"]
    assert row["updated_at"] == START + timedelta(hours=2)
    assert row["updated_at"].utcoffset() == timedelta(0)
    (comment,) = by_table["github_issue_comments"]
    assert comment["issue_number"] == 5 and comment["user_login"] == "barbara"


def test_a_repo_archived_before_the_day_is_listed_but_not_read():
    g = GHES(rate_limits=False)
    with g.serve():
        old = g.add_repo("infra/old", archived=True, updated_at="2025-01-01T00:00:00Z")
        settings = github.settings_from_env({**env_for(g), "GITHUB_ORGS": "",
                                             "GITHUB_REPOS": "infra/old"})
        rows = list(github.pull(START, END, settings, sleep=lambda s: None))
    assert [(t, r["id"]) for t, r in rows] == [("github_repositories", old["id"])]
    assert [s.path for s in g.seen] == ["/repos/infra/old"]  # no list calls for its activity


# ------------------------------------------------------------------------------ the CLI
def test_cli_run_loads_the_day_waiting_out_limits_and_a_rerun_duplicates_nothing(duck_ws):
    ws = duck_ws
    setup_workspace(ws)
    g = GHES(page_size=3)
    g.enforce_reset = True  # a request before the reset would get a 403: the job must wait
    with g.serve():
        expected = build(g)
        g.fail_once("/repos/acme/api/pulls", Fault(502, body={"message": "Bad Gateway"}))
        g.fail_once("/repos/acme/web/issues", Fault(403, {"Retry-After": "1"}, {
            "message": "You have exceeded a secondary rate limit."}))
        g.fail_once("/repos/acme/web/pulls/comments", Fault(200, use_up_limit_for=1))
        g.fail_once("/repos/infra/deploy/commits", Fault(429, {"Retry-After": "1"}))
        began = time.monotonic()
        first = ws.cli("run", "github_enterprise", "--date", DAY, "--local", env=env_for(g))
        took = time.monotonic() - began
        assert first.returncode == 0, first.stderr
        assert warehouse_keys(ws) == expected
        assert [s.status for s in g.seen].count(403) == 1  # only the injected one
        assert [s.status for s in g.seen].count(502) == 1
        assert took >= 3  # Retry-After 1s twice and the reset wait were really slept
        before = counts(ws)

        # later the same day: a PR is retitled and a comment edited, still inside the window
        pr = next(p for p in g.pulls["acme/web"] if p["updated_at"] == "2026-11-20T04:00:00Z")
        pr.update(title="Retitled", updated_at="2026-11-20T12:00:00Z")
        ic = g.issue_comments["infra/deploy"][0]
        ic.update(body="Edited.", updated_at="2026-11-20T13:00:00Z")
        second = ws.cli("run", "github_enterprise", "--date", DAY, "--local", env=env_for(g))
        assert second.returncode == 0, second.stderr

    assert counts(ws) == before
    assert warehouse_keys(ws) == expected
    assert warehouse_rows(ws, f"SELECT title FROM github_pull_requests WHERE id = {pr['id']}"
                          ) == [("Retitled",)]
    assert warehouse_rows(ws, f"SELECT body FROM github_issue_comments WHERE id = {ic['id']}"
                          ) == [("Edited.",)]
    history = ws.cli_json("history", "github_enterprise")
    assert [h["status"] for h in history] == ["success", "success"]
    assert [h["rows_rejected"] for h in history] == [0, 0]  # every row fits its columns
    assert history[0]["rows_loaded"] == sum(len(v) for v in expected.values())


def test_cli_run_on_postgres_with_ghes_rate_limiting_disabled(pg_ws):
    ws = pg_ws
    setup_workspace(ws)
    g = GHES(page_size=3, rate_limits=False)  # no X-RateLimit headers; /rate_limit is a 404
    with g.serve():
        expected = build(g)
        for _ in range(2):
            proc = ws.cli("run", "github_enterprise", "--date", DAY, "--local", env=env_for(g))
            assert proc.returncode == 0, proc.stderr
        assert warehouse_keys(ws) == expected
        assert counts(ws) == {t: len(expected[t]) for t in TABLES}
        # 409: acme/empty has no commits yet, which is not an error
        assert {s.status for s in g.seen} == {200, 409}


def test_bad_token_fails_with_one_line_that_does_not_show_the_token(duck_ws):
    ws = duck_ws
    setup_workspace(ws)
    bad = "ghp_wrong_token_do_not_print_1234"
    with GHES().serve() as g:
        build(g)
        proc = ws.cli("run", "github_enterprise", "--date", DAY, "--local",
                      env=env_for(g, token=bad))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (f"error: GET {g.base.split('//')[1]}/orgs/acme/repos: 401 Unauthorized "
                        "(Bad credentials): check GITHUB_TOKEN")
    assert bad not in proc.stderr + proc.stdout
    (run,) = ws.cli_json("history", "github_enterprise")
    assert run["status"] == "failed" and "401" in run["error"] and bad not in run["error"]


# ------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("env, words", [
    ({"GITHUB_ORGS": "acme"}, "GITHUB_TOKEN is not set"),
    ({"GITHUB_TOKEN": "t"}, "GITHUB_ORGS"),
    ({"GITHUB_TOKEN": "t", "GITHUB_REPOS": "just-a-name"}, "owner/name: just-a-name"),
    ({"GITHUB_TOKEN": "t", "GITHUB_ORGS": "a", "GITHUB_BASE_URL": "ghe.example.com"},
     "http(s) URL"),
    ({"GITHUB_TOKEN": "t", "GITHUB_ORGS": "a", "GITHUB_PER_PAGE": "500"}, "1 to 100"),
])
def test_missing_or_bad_settings_are_one_line_errors(env, words):
    with pytest.raises(ConfigError) as err:
        github.settings_from_env(env)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_settings_default_to_public_github_and_never_show_the_token():
    s = github.settings_from_env({"GITHUB_TOKEN": "sekrit-123", "GITHUB_REPOS": "a/b, c/d,a/b",
                                  "GITHUB_MAX_WAIT": "10m"})
    assert s.base_url == "https://api.github.com" and s.repos == ("a/b", "c/d")
    assert s.max_wait == 600 and "sekrit-123" not in repr(s)


# ------------------------------------------------------------------------------ http helper
def client(g: GHES, waits: list[float], **kw) -> Client:
    return Client(g.base, headers={"Authorization": f"token {TOKEN}"}, sleep=waits.append, **kw)


def test_5xx_is_retried_with_growing_jittered_backoff_then_succeeds():
    waits: list[float] = []
    with GHES().serve() as g:
        for status in (500, 502, 503):
            g.fail_once("/rate_limit", Fault(status, body={"message": "oops"}))
        resp = client(g, waits).get("rate_limit")
    assert resp.status_code == 200
    assert len(waits) == 3
    for n, w in enumerate(waits):  # about 1, 2, 4 s, each times 0.5-1.5
        assert 0.5 * 2**n <= w <= 1.5 * 2**n


def test_5xx_after_the_retries_is_a_transient_one_line_error_without_the_query():
    waits: list[float] = []
    with GHES().serve() as g:
        for _ in range(3):
            g.fail_once("/rate_limit", Fault(502))
        with pytest.raises(TransientError) as err:
            client(g, waits, retries=2).get("rate_limit", {"access_token": "leak-me"})
    msg = str(err.value)
    assert msg == f"GET 127.0.0.1:{g.base.split(':')[2].split('/')[0]}/api/v3/rate_limit: " \
                  "502 Bad Gateway after 2 retries"
    assert len(waits) == 2


def test_connection_errors_are_retried_then_transient():
    waits: list[float] = []
    c = Client(f"http://127.0.0.1:{free_port()}/api/v3", sleep=waits.append, retries=3)
    with pytest.raises(TransientError) as err:
        c.get("orgs/acme/repos")
    assert "ConnectionError after 3 retries" in str(err.value) and len(waits) == 3


@pytest.mark.parametrize("status", [403, 429])
def test_retry_after_is_waited_exactly(status):
    waits: list[float] = []
    with GHES().serve() as g:
        g.fail_once("/rate_limit", Fault(status, {"Retry-After": "17"},
                                         {"message": "secondary rate limit"}))
        assert client(g, waits).get("rate_limit").status_code == 200
    assert waits == [17.0]


def test_secondary_limit_without_retry_after_waits_a_minute_then_doubles():
    waits: list[float] = []
    with GHES(rate_limits=False).serve() as g:
        g.add_repo("acme/api")
        for _ in range(2):
            g.fail_once("/repos/acme/api", Fault(403, body={
                "message": "You have exceeded a secondary rate limit."}))
        assert client(g, waits).get("repos/acme/api").status_code == 200
    assert waits == [60.0, 120.0]


def test_used_up_primary_limit_waits_for_the_reset_before_the_next_request():
    waits: list[float] = []
    with GHES().serve() as g:
        g.fail_once("/rate_limit", Fault(200, use_up_limit_for=40))
        c = client(g, waits)
        c.get("rate_limit")
        assert waits == []  # the response itself was fine
        c.get("rate_limit")
    assert len(waits) == 1 and 39.0 <= waits[0] <= 42.0


def test_primary_limit_403_waits_until_the_reset():
    waits: list[float] = []
    with GHES().serve() as g:
        reset = str(int(time.time()) + 20)
        g.fail_once("/rate_limit", Fault(403, {"X-RateLimit-Remaining": "0",
                                               "X-RateLimit-Reset": reset},
                                         {"message": "API rate limit exceeded"}))
        assert client(g, waits).get("rate_limit").status_code == 200
    assert len(waits) == 1 and 19.0 <= waits[0] <= 22.0


def test_a_wait_over_the_cap_is_a_transient_error_at_once():
    waits: list[float] = []
    with GHES().serve() as g:
        g.fail_once("/rate_limit", Fault(429, {"Retry-After": "3600"}))
        with pytest.raises(TransientError) as err:
            client(g, waits, max_wait=900).get("rate_limit")
    assert waits == []
    assert "would wait 3600s, over the 900s cap; retry later" in str(err.value)


def test_no_rate_limit_headers_at_all_is_fine():
    waits: list[float] = []
    with GHES(rate_limits=False).serve() as g:
        g.add_repo("acme/api")
        c = client(g, waits)
        for _ in range(3):
            resp = c.get("repos/acme/api")
            assert resp.status_code == 200 and "X-RateLimit-Remaining" not in resp.headers
        with pytest.raises(HTTPStatusError) as err:
            c.get("rate_limit")  # GHES with rate limiting off: 404, not a reason to wait
    assert err.value.status == 404 and "Rate limiting is not enabled" in str(err.value)
    assert waits == []


def test_plain_403_and_404_are_terminal_with_path_but_no_query():
    waits: list[float] = []
    with GHES().serve() as g:
        g.fail_once("/orgs/acme/repos", Fault(403, body={"message": "Must have admin rights"}))
        with pytest.raises(HTTPStatusError) as forbidden:
            client(g, waits).get("orgs/acme/repos", {"q": "secret-in-query"})
        with pytest.raises(HTTPStatusError) as missing:
            client(g, waits).get("repos/acme/nope", {"q": "secret-in-query"})
    assert isinstance(forbidden.value, TerminalError) and waits == []
    assert str(forbidden.value).endswith("/api/v3/orgs/acme/repos: 403 Forbidden "
                                         "(Must have admin rights)")
    assert "404 Not Found" in str(missing.value)
    assert "secret-in-query" not in str(forbidden.value) + str(missing.value)


def test_pagination_never_follows_a_link_to_another_host():
    with GHES().serve() as g:
        g.fail_once("/rate_limit", Fault(200, {"Link": '<http://evil.test/steal>; rel="next"'},
                                         []))
        with pytest.raises(TerminalError) as err:
            list(client(g, []).items("rate_limit"))
    assert "refusing a URL outside" in str(err.value) and "evil.test" in str(err.value)


def test_tokens_never_reach_the_logs(caplog):
    caplog.set_level(logging.DEBUG)
    waits: list[float] = []
    with GHES().serve() as g:
        g.fail_once("/rate_limit", Fault(502))
        g.fail_once("/rate_limit", Fault(429, {"Retry-After": "2"}))
        client(g, waits).get("rate_limit")
        with pytest.raises(HTTPStatusError):
            Client(g.base, headers={"Authorization": "token wrong-token-xyz"},
                   sleep=waits.append).get("rate_limit")
    assert len(waits) == 2
    assert "rate_limit" in caplog.text  # the waits were logged...
    assert TOKEN not in caplog.text and "wrong-token-xyz" not in caplog.text  # ...not the token
    assert "Authorization" not in caplog.text


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()
    assert retry_after("30", now) == 30.0
    assert retry_after("Fri, 20 Nov 2026 12:00:45 GMT", now) == 45.0
    assert retry_after("soon", now) is None and retry_after(None, now) is None


def test_job_file_declares_every_table_with_its_key():
    from jankycron.discovery import discover

    registry, errors = discover(Path(ROOT / "jobs"))
    assert errors == []
    job = registry.get("github_enterprise")
    assert {t: k for t, k in job.tables.items()} == {
        t: (k,) if isinstance(k, str) else k for t, k in github.TABLES.items()}
    assert job.schedule.expr == "0 3 * * *" and job.retries == 3 and job.timeout == 7200
    assert json.dumps(list(job.tables)) == json.dumps(TABLES)
