"""Sources for the bundled jobs: the parts that talk to third-party APIs.

- ``http``: a small ``requests`` client shared by the sources (timeouts, retries of 5xx and
  network errors, rate-limit waits, one-line errors without secrets).
- ``github``: GitHub Enterprise Server (and github.com): everything that happened in an
  interval, as rows for the ``github_*`` tables.

Nothing here reads the environment or opens a connection at import.
"""
