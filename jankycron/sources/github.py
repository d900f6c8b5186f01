"""GitHub Enterprise Server (or github.com): everything that happened in an interval.

    settings = settings_from_env()             # GITHUB_BASE_URL, GITHUB_TOKEN, GITHUB_ORGS...
    for table, row in pull(run.start, run.end, settings, log=run.log):
        yield run.to(table, row)

``pull`` yields ``(table, row)`` pairs for these tables (merge keys in brackets):

- ``github_repositories [id]``: every covered repository, as it is now (a dimension: a run
  refreshes it, so joins from the other tables always find their repository).
- ``github_pull_requests [id]``: pull requests updated in [start, end).
- ``github_issues [id]``: issues updated in [start, end); pull requests, which the issues API
  also returns, are left out.
- ``github_issue_comments [id]``: conversation comments on issues *and* pull requests updated
  in [start, end) (``issue_number`` is the issue's or the pull request's number).
- ``github_review_comments [id]``: comments on pull request diffs updated in [start, end).
- ``github_reviews [id]``: every submitted review of the pull requests updated in
  [start, end) (reviews have no ``updated_at``; a dismissal changes the pull request).
- ``github_commits [repo_id, sha]``: commits on the default branch whose commit date is in
  [start, end). Commits of a merged branch keep their own dates and are not on the default
  branch's timeline for that day; the merge commit is.

How each list is bounded: issues, issue comments and review comments take ``since`` and are
read in ascending ``updated_at`` order until past ``end``; the pulls list has no ``since``, so
it is read newest first and paging stops at the first pull request updated before ``start``;
commits take ``since``/``until``. Rows are UTC throughout.

Why not PyGithub: it is the obvious client, but its waits happen inside urllib3's
``Retry.sleep`` (``time.sleep``, not injectable without subclassing its internals), a
``Retry-After`` is slept however long it is (``max_rate_limit_wait`` caps only its own
primary/secondary waits), a 429 without ``Retry-After`` is not retried, and it waits for the
primary reset only after a 403 rather than when ``X-RateLimit-Remaining`` reaches 0. Its
objects also fetch lazily, so reading an attribute can cost a request. The REST calls needed
here are seven list endpoints with Link-header pagination, so ``http.Client`` (one retry and
rate-limit policy for every bundled source) does the job in less code than adapting PyGithub.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from ..config import parse_duration
from ..errors import ConfigError
from .http import Client, HTTPStatusError

PUBLIC_API = "https://api.github.com"

TABLES = {
    "github_repositories": "id",
    "github_pull_requests": "id",
    "github_issues": "id",
    "github_issue_comments": "id",
    "github_review_comments": "id",
    "github_reviews": "id",
    "github_commits": ("repo_id", "sha"),
}


@dataclass(frozen=True)
class GitHubSettings:
    """Where to read from and what to cover. Build it with ``settings_from_env``."""

    base_url: str
    token: str = field(repr=False)
    orgs: tuple[str, ...] = ()
    repos: tuple[str, ...] = ()  # "owner/name"
    max_wait: float = 3660.0  # primary limits reset hourly: waiting one out beats a rerun
    per_page: int = 100


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))


def settings_from_env(environ: Mapping[str, str] | None = None) -> GitHubSettings:
    """Read the GitHub settings from the job's environment (``os.environ`` by default).

    - ``GITHUB_BASE_URL``: the API root, ``https://HOST/api/v3`` for GHES (default github.com)
    - ``GITHUB_TOKEN``: a token that can read the repositories (required)
    - ``GITHUB_ORGS`` (``acme,infra``) and/or ``GITHUB_REPOS`` (``acme/api,acme/web``)
    - ``GITHUB_MAX_WAIT``: the longest rate-limit wait before giving up for a retry (``1h1m``)
    - ``GITHUB_PER_PAGE``: page size, at most 100 (default 100)
    """
    env = os.environ if environ is None else environ
    base = env.get("GITHUB_BASE_URL", "").strip() or PUBLIC_API
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("GITHUB_BASE_URL must be an http(s) URL such as "
                          "https://ghe.example.com/api/v3")
    if parts.username or parts.password or parts.query:
        raise ConfigError("GITHUB_BASE_URL must not carry credentials or a query; "
                          "put the token in GITHUB_TOKEN")
    token = env.get("GITHUB_TOKEN", "").strip()
    if not token:
        raise ConfigError("GITHUB_TOKEN is not set: a token that can read the repositories "
                          "is required")
    orgs, repos = _names(env.get("GITHUB_ORGS", "")), _names(env.get("GITHUB_REPOS", ""))
    if not orgs and not repos:
        raise ConfigError("set GITHUB_ORGS (e.g. acme,infra) and/or GITHUB_REPOS "
                          "(e.g. acme/api) to say which repositories to pull")
    bad = [r for r in repos if r.count("/") != 1 or "" in r.split("/")]
    if bad:
        raise ConfigError(f"GITHUB_REPOS entries must look like owner/name: {', '.join(bad)}")
    max_wait = parse_duration(env.get("GITHUB_MAX_WAIT", "3660"), "GITHUB_MAX_WAIT")
    per_page = env.get("GITHUB_PER_PAGE", "100").strip()
    if not per_page.isdigit() or not 1 <= int(per_page) <= 100:
        raise ConfigError(f"GITHUB_PER_PAGE must be a number from 1 to 100, got {per_page!r}")
    return GitHubSettings(base.rstrip("/"), token, orgs, repos, max_wait, int(per_page))


# --------------------------------------------------------------------------------- pulling
def pull(start: datetime, end: datetime, settings: GitHubSettings, *,
         sleep: Callable[[float], None] = time.sleep,
         log: logging.Logger | logging.LoggerAdapter | None = None,
         ) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(table, row)`` for everything that happened in [start, end) in the covered repos."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    client = Client(
        settings.base_url,
        headers={"Authorization": f"token {settings.token}",
                 "Accept": "application/vnd.github+json",
                 "User-Agent": "jankycron"},
        max_wait=settings.max_wait, sleep=sleep, log=log,
    )
    source = _Source(client, settings.per_page, start, end)
    try:
        for repo in source.repositories(settings.orgs, settings.repos):
            yield "github_repositories", repository_row(repo)
            if repo.get("archived") and (_ts(repo.get("updated_at")) or end) < start:
                continue  # archived before the window: read-only, nothing can have happened
            yield from source.activity(repo)
    except HTTPStatusError as e:
        if e.status == 401:
            raise ConfigError(f"{e}: check GITHUB_TOKEN") from None
        raise


def _ts(value: str | None) -> datetime | None:
    # GitHub sends "2026-11-20T05:00:00Z"; fromisoformat reads the Z since Python 3.11.
    return datetime.fromisoformat(value).astimezone(UTC) if value else None


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Source:
    def __init__(self, client: Client, per_page: int, start: datetime, end: datetime):
        self.client, self.per_page, self.start, self.end = client, per_page, start, end

    def _list(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        return self.client.items(path, {"per_page": self.per_page, **params})

    def repositories(self, orgs: tuple[str, ...], repos: tuple[str, ...]
                     ) -> Iterator[dict[str, Any]]:
        seen = set()
        for org in orgs:
            for repo in self._list(f"orgs/{quote(org)}/repos", type="all"):
                if repo["id"] not in seen:
                    seen.add(repo["id"])
                    yield repo
        for name in repos:
            repo = self.client.get_json(f"repos/{quote(name)}")
            if repo["id"] not in seen:
                seen.add(repo["id"])
                yield repo

    def _updated_asc(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Items of a list that takes ``since``, oldest update first, until past ``end``."""
        items = self._list(path, **params, since=_iso(self.start), sort="updated",
                           direction="asc")
        for item in items:
            updated = _ts(item["updated_at"])
            if updated >= self.end:
                return  # ascending: everything after this is later still
            if updated >= self.start:
                yield item

    def activity(self, repo: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        full = quote(repo["full_name"])
        ctx = {"repo_id": repo["id"], "repo": repo["full_name"]}
        numbers = []
        for pr in self._list(f"repos/{full}/pulls", state="all", sort="updated",
                             direction="desc"):
            updated = _ts(pr["updated_at"])
            if updated < self.start:
                break  # newest first: the rest were updated before the window; stop paging
            if updated < self.end:
                numbers.append(pr["number"])
                yield "github_pull_requests", pull_request_row(pr, ctx)
        for number in numbers:
            for review in self._list(f"repos/{full}/pulls/{number}/reviews"):
                if review.get("state") != "PENDING":  # a draft only its author can see
                    yield "github_reviews", review_row(review, ctx, number)
        try:
            for issue in self._updated_asc(f"repos/{full}/issues", state="all"):
                if "pull_request" not in issue:
                    yield "github_issues", issue_row(issue, ctx)
            for comment in self._updated_asc(f"repos/{full}/issues/comments"):
                yield "github_issue_comments", issue_comment_row(comment, ctx)
        except HTTPStatusError as e:
            if e.status != 410:  # 410 Gone: issues are turned off for this repository
                raise
        for comment in self._updated_asc(f"repos/{full}/pulls/comments"):
            yield "github_review_comments", review_comment_row(comment, ctx)
        try:
            # ``until`` is inclusive and to the second: stop one second before ``end``.
            for commit in self._list(f"repos/{full}/commits", since=_iso(self.start),
                                     until=_iso(self.end - timedelta(seconds=1))):
                yield "github_commits", commit_row(commit, ctx)
        except HTTPStatusError as e:
            if e.status != 409:  # 409 Conflict: the repository is empty
                raise


# ------------------------------------------------------------------------------ flattening
def _login(user: dict[str, Any] | None) -> str | None:
    return user.get("login") if user else None


def _uid(user: dict[str, Any] | None) -> int | None:
    return user.get("id") if user else None


def _number(url: str | None) -> int | None:
    """The trailing number of ``.../issues/12`` or ``.../pulls/12``."""
    tail = (url or "").rstrip("/").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def repository_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"], "full_name": r["full_name"], "owner_login": _login(r.get("owner")),
        "name": r.get("name"), "description": r.get("description"),
        "private": r.get("private"), "fork": r.get("fork"), "archived": r.get("archived"),
        "visibility": r.get("visibility"), "default_branch": r.get("default_branch"),
        "language": r.get("language"), "html_url": r.get("html_url"),
        "stargazers_count": r.get("stargazers_count"), "forks_count": r.get("forks_count"),
        "open_issues_count": r.get("open_issues_count"),
        "created_at": _ts(r.get("created_at")), "updated_at": _ts(r.get("updated_at")),
        "pushed_at": _ts(r.get("pushed_at")),
    }


def _labels(item: dict[str, Any]) -> list[str]:
    return [label["name"] for label in item.get("labels") or [] if isinstance(label, dict)]


def pull_request_row(p: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": p["id"], **ctx, "number": p["number"], "title": p.get("title"),
        "body": p.get("body"), "state": p.get("state"), "draft": p.get("draft"),
        "user_login": _login(p.get("user")), "user_id": _uid(p.get("user")),
        "author_association": p.get("author_association"),
        "head_ref": (p.get("head") or {}).get("ref"), "head_sha": (p.get("head") or {}).get("sha"),
        "base_ref": (p.get("base") or {}).get("ref"),
        "merge_commit_sha": p.get("merge_commit_sha"), "labels": _labels(p),
        "html_url": p.get("html_url"),
        "created_at": _ts(p.get("created_at")), "updated_at": _ts(p.get("updated_at")),
        "closed_at": _ts(p.get("closed_at")), "merged_at": _ts(p.get("merged_at")),
    }


def issue_row(i: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": i["id"], **ctx, "number": i["number"], "title": i.get("title"),
        "body": i.get("body"), "state": i.get("state"), "state_reason": i.get("state_reason"),
        "user_login": _login(i.get("user")), "user_id": _uid(i.get("user")),
        "assignee_login": _login(i.get("assignee")), "labels": _labels(i),
        "comments": i.get("comments"), "author_association": i.get("author_association"),
        "html_url": i.get("html_url"),
        "created_at": _ts(i.get("created_at")), "updated_at": _ts(i.get("updated_at")),
        "closed_at": _ts(i.get("closed_at")),
    }


def issue_comment_row(c: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": c["id"], **ctx, "issue_number": _number(c.get("issue_url")),
        "user_login": _login(c.get("user")), "user_id": _uid(c.get("user")),
        "author_association": c.get("author_association"), "body": c.get("body"),
        "html_url": c.get("html_url"),
        "created_at": _ts(c.get("created_at")), "updated_at": _ts(c.get("updated_at")),
    }


def review_comment_row(c: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": c["id"], **ctx, "pull_request_number": _number(c.get("pull_request_url")),
        "review_id": c.get("pull_request_review_id"), "in_reply_to_id": c.get("in_reply_to_id"),
        "user_login": _login(c.get("user")), "user_id": _uid(c.get("user")),
        "author_association": c.get("author_association"), "body": c.get("body"),
        "path": c.get("path"), "line": c.get("line"), "commit_id": c.get("commit_id"),
        "html_url": c.get("html_url"),
        "created_at": _ts(c.get("created_at")), "updated_at": _ts(c.get("updated_at")),
    }


def review_row(r: dict[str, Any], ctx: dict[str, Any], number: int) -> dict[str, Any]:
    return {
        "id": r["id"], **ctx, "pull_request_number": number,
        "user_login": _login(r.get("user")), "user_id": _uid(r.get("user")),
        "state": r.get("state"), "body": r.get("body"), "commit_id": r.get("commit_id"),
        "author_association": r.get("author_association"), "html_url": r.get("html_url"),
        "submitted_at": _ts(r.get("submitted_at")),
    }


def commit_row(c: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    git = c.get("commit") or {}
    author, committer = git.get("author") or {}, git.get("committer") or {}
    return {
        **ctx, "sha": c["sha"], "message": git.get("message"),
        "author_login": _login(c.get("author")), "author_name": author.get("name"),
        "committer_login": _login(c.get("committer")), "committer_name": committer.get("name"),
        "authored_at": _ts(author.get("date")), "committed_at": _ts(committer.get("date")),
        "parent_count": len(c.get("parents") or []), "html_url": c.get("html_url"),
    }
