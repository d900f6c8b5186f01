"""Settings: read once from a mapping (``Settings.from_env(os.environ)``), passed explicitly.

Tests build Settings from a plain dict; nothing in jankycron reads ``os.environ`` on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError
from .schedule import MaintenanceWindow
from .scrub import Scrubber, environ_secrets, redact, url_secrets

DEFAULTS = {
    "JANKYCRON_JOBS_PATH": "./jobs",
    "JANKYCRON_BROKER_URL": "redis://localhost:6379/0",
    "JANKYCRON_STORE_URL": "file://./var/store",
    "JANKYCRON_WAREHOUSE_URL": "duckdb:///./var/warehouse.duckdb",
    "JANKYCRON_STATE_URL": "sqlite:///./var/state.db",
    "JANKYCRON_STATEMENT_TIMEOUT": "15m",
    "JANKYCRON_PART_SIZE": "16MB",
    "JANKYCRON_LOCK_WAIT": "60s",
    # Redshift wants few, large commits: coalesce pending batches per table (see `load --due`).
    "JANKYCRON_LOAD_INTERVAL": "0",
    "JANKYCRON_LOAD_INTERVALS": "",
}

IMPORT_TIMEOUT = 10.0  # seconds one job file's import may take (JANKYCRON_IMPORT_TIMEOUT)

STORE_SCHEMES = ("s3", "file")
WAREHOUSE_SCHEMES = ("postgresql", "postgres", "duckdb", "redshift")
STATE_SCHEMES = ("postgresql", "postgres", "sqlite")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, None: 1}


def parse_duration(value: str | int | float, what: str = "duration",
                   allow_zero: bool = False) -> float:
    """``"30m"`` -> 1800.0 seconds; plain numbers are seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ConfigError(f"{what}: {value!r} is not a duration such as 90s, 30m, 2h")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(f"{what}: must be positive, got {value!r}")
    return seconds


def parse_intervals(text: str, what: str) -> dict[str, float]:
    """``"events=30m, orders=0"`` -> {"events": 1800.0, "orders": 0.0}."""
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        table, sep, value = item.partition("=")
        if not sep or not table.strip():
            raise ConfigError(f"{what}: {item!r} is not table=duration (e.g. events=30m)")
        out[table.strip()] = parse_duration(value.strip(), f"{what} for {table.strip()}",
                                            allow_zero=True)
    return out


def parse_size(value: str, what: str = "size") -> int:
    m = _SIZE.match(str(value))
    if not m:
        raise ConfigError(f"{what}: {value!r} is not a size such as 512KB or 64MB")
    size = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower() or None]
    if size < 1024:
        raise ConfigError(f"{what}: must be at least 1KB, got {value!r}")
    return size


def _check_scheme(name: str, url: str, schemes: tuple[str, ...]) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{name}={redact(url)!s}: expected one of {allowed}")
    return url


def _lock_url(environ: Mapping[str, str]) -> str | None:
    """``JANKYCRON_LOCK_URL``, else the broker when one is configured and is Redis: the
    embedded defaults run without any server, so no lock store is assumed."""
    url = environ.get("JANKYCRON_LOCK_URL") or environ.get("JANKYCRON_BROKER_URL") or None
    if url is None or url.lower() in ("none", "off"):
        return None
    if urlsplit(url).scheme not in ("redis", "rediss"):
        name = "JANKYCRON_LOCK_URL" if environ.get("JANKYCRON_LOCK_URL") else None
        if name:
            raise ConfigError(f"{name}={redact(url)}: expected redis:// or rediss://")
        return None  # a non-Redis broker: no lock store
    return url


def _port(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{name}={value!r}: expected a port number (1-65535)")
    return int(value)


def _webhook_url(name: str, value: str | None) -> str | None:
    # Never echo the value: for an incoming webhook the whole URL is the secret.
    parts = urlsplit(value or "")
    if value is not None and (parts.scheme not in ("https", "http") or not parts.hostname):
        raise ConfigError(f"{name}: expected the webhook's https:// URL (value not shown)")
    return value


@dataclass(frozen=True, repr=False)
class Settings:
    jobs_path: Path
    broker_url: str
    store_url: str
    warehouse_url: str
    state_url: str
    statement_timeout: float  # seconds, applied to every warehouse session
    part_size: int  # bytes of NDJSON before a staged part is rotated
    lock_url: str | None = None  # Redis for per-table load locks; None: no cross-host lock
    lock_wait: float = 60.0  # how long a loader waits for a table another loader holds
    load_interval: float = 0.0  # least seconds between two loads of a table (`load --due`)
    load_intervals: Mapping[str, float] = field(default_factory=dict)  # per-table overrides
    aws_endpoint_url: str | None = None
    aws_region: str | None = None
    # Credentials are optional: without them boto3 uses its standard chain (instance role...).
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    sentry_dsn: str | None = field(default=None, repr=False)
    redshift_iam_role: str | None = None
    redshift_region: str | None = None  # COPY's REGION, only if the bucket is in another one
    maintenance_window: MaintenanceWindow | None = None
    segment_secret: str | None = field(default=None, repr=False)
    # Alerting and metrics (jankycron/alerts.py, jankycron/metrics.py; see deploy/README.md).
    slack_webhook_url: str | None = field(default=None, repr=False)  # the URL is the secret
    smtp_url: str | None = None  # smtp://user:pass@host:587 (STARTTLS) or smtps://...:465
    alert_from: str = "jankycron@localhost"  # From: of alert e-mails
    metrics_port: int | None = None  # worker/beat: serve /metrics on this port
    # Celery operations (jankycron/celery_app.py, docs/operations.md): a running job's
    # heartbeat, also beat's housekeeping period; the first retry delay of a TransientError.
    heartbeat: float = 30.0
    retry_backoff: float = 30.0
    # Housekeeping (jankycron/housekeeping.py): how long after an unrecorded run ended its
    # staged objects are kept before they are removed (longer than any job's timeout).
    orphan_grace: float = 86400.0
    # Status page access (jankycron/status.py): HTTP basic auth and/or a header a trusted
    # reverse proxy sets (e.g. X-Forwarded-User); none set: the status page is open.
    status_user: str | None = None
    status_password: str | None = field(default=None, repr=False)
    status_auth_header: str | None = None
    # Segment webhook (jankycron/webhooks.py): the Redis holding its event stream (default: the
    # broker when it is Redis) and the largest request body taken (Actions batches: <= 4,000).
    webhook_redis_url: str | None = None
    webhook_max_body: int = 16 * 1024**2
    # Secret values of the environment Settings were built from, by name and in URLs
    # (scrub.environ_secrets): job settings such as GITHUB_TOKEN or MAILGUN_API_KEY, too.
    environ_secrets: tuple[str, ...] = field(default=(), repr=False)
    # Discovery (jankycron/discovery.py): the longest a job file's import may take before the
    # file is reported broken and skipped ("import did not finish within 10s").
    import_timeout: float = IMPORT_TIMEOUT

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; unset keys take the embedded defaults."""

        def get(name: str) -> str:
            value = environ.get(name)
            return value if value not in (None, "") else DEFAULTS[name]

        def opt(name: str) -> str | None:
            return environ.get(name) or None

        return cls(
            jobs_path=Path(get("JANKYCRON_JOBS_PATH")),
            broker_url=get("JANKYCRON_BROKER_URL"),
            store_url=_check_scheme(
                "JANKYCRON_STORE_URL", get("JANKYCRON_STORE_URL"), STORE_SCHEMES
            ),
            warehouse_url=_check_scheme(
                "JANKYCRON_WAREHOUSE_URL", get("JANKYCRON_WAREHOUSE_URL"), WAREHOUSE_SCHEMES
            ),
            state_url=_check_scheme(
                "JANKYCRON_STATE_URL", get("JANKYCRON_STATE_URL"), STATE_SCHEMES
            ),
            statement_timeout=parse_duration(
                get("JANKYCRON_STATEMENT_TIMEOUT"), "JANKYCRON_STATEMENT_TIMEOUT"
            ),
            part_size=parse_size(get("JANKYCRON_PART_SIZE"), "JANKYCRON_PART_SIZE"),
            lock_url=_lock_url(environ),
            lock_wait=parse_duration(get("JANKYCRON_LOCK_WAIT"), "JANKYCRON_LOCK_WAIT"),
            # Redshift: commit about every 10 minutes per table (DESIGN "warehouse rules").
            load_interval=parse_duration(
                environ.get("JANKYCRON_LOAD_INTERVAL") or (
                    "10m" if get("JANKYCRON_WAREHOUSE_URL").startswith("redshift://")
                    else DEFAULTS["JANKYCRON_LOAD_INTERVAL"]),
                "JANKYCRON_LOAD_INTERVAL", allow_zero=True),
            load_intervals=parse_intervals(environ.get("JANKYCRON_LOAD_INTERVALS", ""),
                                           "JANKYCRON_LOAD_INTERVALS"),
            aws_endpoint_url=opt("AWS_ENDPOINT_URL_S3") or opt("AWS_ENDPOINT_URL"),
            aws_region=opt("AWS_REGION") or opt("AWS_DEFAULT_REGION"),
            aws_access_key_id=opt("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=opt("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=opt("AWS_SESSION_TOKEN"),
            sentry_dsn=opt("SENTRY_DSN"),
            redshift_iam_role=opt("JANKYCRON_REDSHIFT_IAM_ROLE"),
            redshift_region=opt("JANKYCRON_REDSHIFT_COPY_REGION"),
            maintenance_window=MaintenanceWindow.parse(opt("JANKYCRON_MAINTENANCE_WINDOW"))
            if opt("JANKYCRON_MAINTENANCE_WINDOW") else None,
            segment_secret=opt("JANKYCRON_SEGMENT_SECRET"),
            slack_webhook_url=_webhook_url("JANKYCRON_SLACK_WEBHOOK_URL",
                                           opt("JANKYCRON_SLACK_WEBHOOK_URL")),
            smtp_url=_check_scheme("JANKYCRON_SMTP_URL", opt("JANKYCRON_SMTP_URL"),
                                   ("smtp", "smtps")) if opt("JANKYCRON_SMTP_URL") else None,
            alert_from=opt("JANKYCRON_ALERT_FROM") or "jankycron@localhost",
            metrics_port=_port("JANKYCRON_METRICS_PORT", opt("JANKYCRON_METRICS_PORT")),
            heartbeat=parse_duration(opt("JANKYCRON_HEARTBEAT") or "30s", "JANKYCRON_HEARTBEAT"),
            retry_backoff=parse_duration(opt("JANKYCRON_RETRY_BACKOFF") or "30s",
                                         "JANKYCRON_RETRY_BACKOFF"),
            orphan_grace=parse_duration(opt("JANKYCRON_ORPHAN_GRACE") or "1d",
                                        "JANKYCRON_ORPHAN_GRACE"),
            status_user=opt("JANKYCRON_STATUS_USER"),
            status_password=opt("JANKYCRON_STATUS_PASSWORD"),
            status_auth_header=opt("JANKYCRON_STATUS_AUTH_HEADER"),
            webhook_redis_url=_check_scheme("JANKYCRON_WEBHOOK_REDIS_URL",
                                            opt("JANKYCRON_WEBHOOK_REDIS_URL"), ("redis", "rediss"))
            if opt("JANKYCRON_WEBHOOK_REDIS_URL") else get("JANKYCRON_BROKER_URL")
            if urlsplit(get("JANKYCRON_BROKER_URL")).scheme in ("redis", "rediss") else None,
            webhook_max_body=parse_size(opt("JANKYCRON_WEBHOOK_MAX_BODY") or "16MB",
                                        "JANKYCRON_WEBHOOK_MAX_BODY"),
            environ_secrets=tuple(environ_secrets(environ)),
            import_timeout=parse_duration(opt("JANKYCRON_IMPORT_TIMEOUT") or IMPORT_TIMEOUT,
                                          "JANKYCRON_IMPORT_TIMEOUT"),
        )

    def load_interval_of(self, table: str) -> float:
        return self.load_intervals.get(table, self.load_interval)

    def __repr__(self) -> str:
        """Safe to log: passwords in URLs are redacted, secret fields are left out."""
        shown = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if isinstance(value, str) and "://" in value:
                value = redact(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def secrets(self) -> list[str]:
        """Every secret value held, so that output can be scrubbed of them (``scrub.Scrubber``):
        the secret settings, the credentials in every URL setting, and the environment's
        secrets (``environ_secrets``)."""
        values = [self.aws_secret_access_key, self.aws_session_token, self.sentry_dsn,
                  self.segment_secret, self.slack_webhook_url, self.status_password]
        if self.slack_webhook_url:  # the token is the path; errors may show it without the host
            values.append(urlsplit(self.slack_webhook_url).path.rstrip("/") or None)
        if self.sentry_dsn:  # the DSN's key is its user name
            values.append(urlsplit(self.sentry_dsn).username)
        for url in (self.store_url, self.warehouse_url, self.state_url, self.broker_url,
                    self.lock_url or "", self.smtp_url or "", self.webhook_redis_url or ""):
            values += url_secrets(url)
        values += self.environ_secrets
        return list(dict.fromkeys(v for v in values if v))

    def scrubber(self) -> Scrubber:
        """A ``Scrubber`` of these secrets, for logs, stored errors and pages."""
        return Scrubber(self.secrets())
