"""A local stand-in for GitHub Enterprise Server's REST API (``/api/v3``), for tests.

It serves the list endpoints the GitHub job reads with GitHub's semantics: ``since``/``until``,
``sort``/``direction``, ``state``, Link-header pagination with a small page size, and
``X-RateLimit-*`` headers (or none: rate limiting disabled, where ``/rate_limit`` is a 404).
Faults are queued per path and served once each: a 502, a secondary-limit 403/429 with
``Retry-After``, a 200 that uses up the primary limit. Every request is recorded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from conftest import http_server

TOKEN = "ghs_test_token_5f2a9c0d1e"


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    use_up_limit_for: float | None = None  # a 200 with X-RateLimit-Remaining: 0, reset in N s


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    status: int


class GHES:
    """The server's data and behaviour; ``serve()`` runs it on a free loopback port."""

    def __init__(self, page_size: int = 3, rate_limits: bool = True, token: str = TOKEN):
        self.page_size, self.rate_limits, self.token = page_size, rate_limits, token
        self.orgs: dict[str, list[str]] = {}
        self.repos: dict[str, dict] = {}
        self.pulls: dict[str, list[dict]] = {}
        self.issues: dict[str, list[dict]] = {}  # pull requests appear here too, like GitHub
        self.issue_comments: dict[str, list[dict]] = {}
        self.review_comments: dict[str, list[dict]] = {}
        self.reviews: dict[tuple[str, int], list[dict]] = {}
        self.commits: dict[str, list[dict]] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.seen: list[Seen] = []
        self.limit_reset_at = 0.0  # with enforce_reset: requests before this get a 403
        self.enforce_reset = False
        self.base = ""
        self._lock = threading.Lock()
        self._ids = iter(range(1000, 10**9))

    # ---------------------------------------------------------------------- data building
    def next_id(self) -> int:
        return next(self._ids)

    def add_repo(self, full_name: str, org: str | None = None, **extra: Any) -> dict:
        owner, name = full_name.split("/")
        repo = {"id": self.next_id(), "full_name": full_name, "name": name,
                "owner": {"login": owner, "id": 1}, "private": True, "fork": False,
                "archived": False, "visibility": "internal", "default_branch": "main",
                "description": f"the {name} service", "language": "Python",
                "html_url": f"https://ghe.test/{full_name}", "stargazers_count": 1,
                "forks_count": 0, "open_issues_count": 0, "created_at": "2020-01-01T00:00:00Z",
                "updated_at": "2026-11-01T00:00:00Z", "pushed_at": "2026-11-01T00:00:00Z",
                **extra}
        self.repos[full_name] = repo
        if org:
            self.orgs.setdefault(org, []).append(full_name)
        for d in (self.pulls, self.issues, self.issue_comments, self.review_comments):
            d.setdefault(full_name, [])
        self.commits.setdefault(full_name, [])
        return repo

    def add_pull(self, repo: str, updated: datetime, number: int, title: str = "") -> dict:
        pr = {"id": self.next_id(), "number": number, "title": title or f"PR {number}",
              "body": "Fixes the thing.\nSecond line.", "state": "open", "draft": False,
              "user": {"login": "ada", "id": 7}, "author_association": "MEMBER",
              "head": {"ref": f"feature-{number}", "sha": "a" * 40},
              "base": {"ref": "main", "sha": "b" * 40}, "merge_commit_sha": None,
              "labels": [{"name": "bug"}], "html_url": f"https://ghe.test/{repo}/pull/{number}",
              "created_at": iso(updated - timedelta(days=1)), "updated_at": iso(updated),
              "closed_at": None, "merged_at": None}
        self.pulls[repo].append(pr)
        # the issues API lists every pull request as an issue with a "pull_request" key
        self.issues[repo].append({**self._issue(repo, updated, number), "id": self.next_id(),
                                  "pull_request": {"url": "..."}})
        self.reviews[(repo, number)] = [
            {"id": self.next_id(), "user": {"login": "grace", "id": 8}, "state": "APPROVED",
             "body": "LGTM", "commit_id": "a" * 40, "author_association": "MEMBER",
             "html_url": "...", "submitted_at": iso(updated - timedelta(minutes=5))},
            {"id": self.next_id(), "user": {"login": "me", "id": 9}, "state": "PENDING",
             "body": "draft", "commit_id": "a" * 40, "html_url": "..."},  # no submitted_at
        ]
        return pr

    def _issue(self, repo: str, updated: datetime, number: int) -> dict:
        return {"id": self.next_id(), "number": number, "title": f"Issue {number}",
                "body": "It broke.", "state": "open", "state_reason": None,
                "user": {"login": "edsger", "id": 10}, "assignee": None, "labels": [],
                "comments": 1, "author_association": "NONE",
                "html_url": f"https://ghe.test/{repo}/issues/{number}",
                "created_at": iso(updated - timedelta(days=2)), "updated_at": iso(updated),
                "closed_at": None}

    def add_issue(self, repo: str, updated: datetime, number: int) -> dict:
        issue = self._issue(repo, updated, number)
        self.issues[repo].append(issue)
        return issue

    def add_issue_comment(self, repo: str, updated: datetime, number: int) -> dict:
        c = {"id": self.next_id(), "issue_url": f"{self.base}/repos/{repo}/issues/{number}",
             "user": {"login": "barbara", "id": 11}, "author_association": "MEMBER",
             "body": "Same here.", "html_url": "...",
             "created_at": iso(updated), "updated_at": iso(updated)}
        self.issue_comments[repo].append(c)
        return c

    def add_review_comment(self, repo: str, updated: datetime, number: int) -> dict:
        c = {"id": self.next_id(), "pull_request_url": f"{self.base}/repos/{repo}/pulls/{number}",
             "pull_request_review_id": 42, "in_reply_to_id": None,
             "user": {"login": "ken", "id": 12}, "author_association": "MEMBER",
             "body": "nit: rename", "path": "src/app.py", "line": 10, "commit_id": "c" * 40,
             "html_url": "...", "created_at": iso(updated), "updated_at": iso(updated)}
        self.review_comments[repo].append(c)
        return c

    def add_commit(self, repo: str, committed: datetime, sha: str) -> dict:
        c = {"sha": sha, "html_url": f"https://ghe.test/{repo}/commit/{sha}",
             "commit": {"message": f"commit {sha[:7]}",
                        "author": {"name": "Ada", "email": "ada@example.com",
                                   "date": iso(committed - timedelta(hours=1))},
                        "committer": {"name": "Ada", "email": "ada@example.com",
                                      "date": iso(committed)}},
             "author": {"login": "ada", "id": 7}, "committer": {"login": "web-flow", "id": 13},
             "parents": [{"sha": "0" * 40}]}
        self.commits[repo].append(c)
        return c

    def fail_once(self, path: str, fault: Fault) -> None:
        """Serve ``fault`` for the next request to ``path`` (after /api/v3, no query)."""
        self.faults.setdefault(path, []).append(fault)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    # ---------------------------------------------------------------------- serving
    def handle(self, path: str, query: dict[str, str], auth: str | None
               ) -> tuple[int, dict[str, str], Any]:
        headers = {}
        if self.rate_limits:
            headers = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4000",
                       "X-RateLimit-Used": "1000",
                       "X-RateLimit-Reset": str(int(time.time()) + 3600)}
        if auth != f"token {self.token}":
            return 401, headers, {"message": "Bad credentials",
                                  "documentation_url": "https://docs.github.com/rest"}
        if self.enforce_reset and time.time() < self.limit_reset_at:
            return 403, {**headers, "X-RateLimit-Remaining": "0",
                         "X-RateLimit-Reset": str(int(self.limit_reset_at))}, {
                "message": "API rate limit exceeded for user ID 7."}
        with self._lock:
            fault = self.faults.get(path, []) and self.faults[path].pop(0)
        if fault:
            if fault.use_up_limit_for is None:
                return fault.status, {**headers, **fault.headers}, fault.body
            self.limit_reset_at = time.time() + fault.use_up_limit_for
            headers = {**headers, "X-RateLimit-Remaining": "0",
                       "X-RateLimit-Reset": str(int(self.limit_reset_at))}
        return self.route(path, query, headers)

    def route(self, path: str, query: dict[str, str], headers: dict[str, str]
              ) -> tuple[int, dict[str, str], Any]:
        if path == "/rate_limit":
            if not self.rate_limits:
                return 404, headers, {"message": "Rate limiting is not enabled."}
            return 200, headers, {"resources": {"core": {"limit": 5000, "remaining": 4000}}}
        if m := re.fullmatch(r"/orgs/([^/]+)/repos", path):
            if m[1] not in self.orgs:
                return 404, headers, {"message": "Not Found"}
            return self.page(path, query, headers, [self.repos[r] for r in self.orgs[m[1]]])
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path):
            repo, rest = m[1], m[2] or ""
            if repo not in self.repos:
                return 404, headers, {"message": "Not Found"}
            return self.repo_route(repo, rest, path, query, headers)
        return 404, headers, {"message": "Not Found"}

    def repo_route(self, repo: str, rest: str, path: str, query: dict[str, str],
                   headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        q = query
        if rest == "":
            return 200, headers, self.repos[repo]
        if rest == "/pulls":
            items = self.sorted(self.pulls[repo], q, default="created", default_dir="desc")
            return self.page(path, q, headers, items)
        if rest == "/issues":
            items = self.since(self.issues[repo], q)
            return self.page(path, q, headers, self.sorted(items, q, "created", "desc"))
        if rest == "/issues/comments":
            items = self.since(self.issue_comments[repo], q)
            return self.page(path, q, headers, self.sorted(items, q, "created", "asc"))
        if rest == "/pulls/comments":
            items = self.since(self.review_comments[repo], q)
            return self.page(path, q, headers, self.sorted(items, q, "created", "asc"))
        if m := re.fullmatch(r"/pulls/(\d+)/reviews", rest):
            if (repo, int(m[1])) not in self.reviews:
                return 404, headers, {"message": "Not Found"}
            return self.page(path, q, headers, self.reviews[(repo, int(m[1]))])
        if rest == "/commits":
            if not self.commits[repo]:
                return 409, headers, {"message": "Git Repository is empty."}
            items = self.commits[repo]
            date = lambda c: parse(c["commit"]["committer"]["date"])  # noqa: E731
            if "since" in q:
                items = [c for c in items if date(c) >= parse(q["since"])]
            if "until" in q:
                items = [c for c in items if date(c) <= parse(q["until"])]
            return self.page(path, q, headers, sorted(items, key=date, reverse=True))
        return 404, headers, {"message": "Not Found"}

    @staticmethod
    def since(items: list[dict], q: dict[str, str]) -> list[dict]:
        if "since" not in q:
            return items
        return [i for i in items if parse(i["updated_at"]) >= parse(q["since"])]

    @staticmethod
    def sorted(items: list[dict], q: dict[str, str], default: str, default_dir: str
               ) -> list[dict]:
        key = {"updated": "updated_at", "created": "created_at"}[q.get("sort", default)]
        return sorted(items, key=lambda i: (i[key], i["id"]),
                      reverse=q.get("direction", default_dir) == "desc")

    def page(self, path: str, q: dict[str, str], headers: dict[str, str], items: list[dict]
             ) -> tuple[int, dict[str, str], Any]:
        size = min(int(q.get("per_page", 30)), self.page_size)
        page = int(q.get("page", 1))
        last = max(1, -(-len(items) // size))
        links = []
        for rel, n in (("next", page + 1), ("last", last)):
            if page < last:
                links.append(f'<{self.base}{path}?{urlencode({**q, "page": n})}>; rel="{rel}"')
        if links:
            headers = {**headers, "Link": ", ".join(links)}
        return 200, headers, items[(page - 1) * size: page * size]

    @contextmanager
    def serve(self) -> Iterator[GHES]:
        with http_server(_handler(self)) as root:
            self.base = root + "/api/v3"
            yield self


def _handler(ghes: GHES) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            parts = urlsplit(self.path)
            if not parts.path.startswith("/api/v3/"):
                status, headers, body = 404, {}, {"message": "Not Found"}
                path, query = parts.path, {}
            else:
                path = parts.path[len("/api/v3"):]
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                status, headers, body = ghes.handle(path, query, self.headers.get("Authorization"))
            with ghes._lock:
                ghes.seen.append(Seen(path, query, status))
            data = json.dumps(body).encode()
            self.send_response(status)  # adds Date, which the client uses for reset waits
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
