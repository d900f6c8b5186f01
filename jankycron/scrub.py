"""What never leaves the process as written: secrets, unsafe text, customer values on pages.

One home for three policies (see README "Secrets and stored text"):

- ``redact(url)``: a URL with its credentials replaced by ``***``: the password in the userinfo
  (everything up to the *last* ``@`` before the host is userinfo, so an unencoded ``@`` in a
  password is covered) and the values of query parameters whose names look secret
  (``password``, ``sslpassword``, ``token``, ``secret``, ``key``, ``api_key``, signatures...).
- ``Scrubber``: knows the configured secrets (``Settings.secrets()``: the Settings values plus
  the environment's, by the rule in ``secret_name``) and replaces them, their percent-encoded
  forms and any URL credentials in any text with ``***``. Every log record passes through one
  (``ScrubFilter``, installed by the CLI, the Celery worker and beat, and the web app), and so
  does every text the ledger stores (``Ledger._text``) and every alert.
- ``safe_text``: text any store and terminal can hold: NUL and lone surrogates escaped
  (``\\x00``, ``\\ud800``), bounded in length with a visible marker.
- ``mask_values``: warehouse error messages with the values they quote replaced by ``…`` (the
  status pages show reasons and errors, never customer values).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus, unquote, unquote_plus

MASK = "***"

# Environment variables whose values are secrets, by name: the name ends with one of these
# (PGPASSWORD, GITHUB_TOKEN, JANKYCRON_SEGMENT_SECRET, MAILGUN_API_KEY, SENTRY_DSN,
# AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, JANKYCRON_SLACK_WEBHOOK_URL...). Besides, the
# password and secret query parameters of every URL-valued variable are secrets.
SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIALS?|DSN|PRIVATE_KEY|SECRET_KEY|"
    r"ACCESS_KEY|API_?KEY|AUTH_KEY|SIGNING_KEY|ENCRYPTION_KEY|WEBHOOK_URL|_AUTH)$")
# Query parameters whose values are secrets (case-insensitive): libpq's password and
# sslpassword, tokens, secrets, keys, signatures (S3 presigned URLs), credentials.
_SECRET_PARAM = re.compile(
    r"(?:password|passwd|passphrase|secret|token|credential)|(?:^|[_.-])(?:pwd|pass|key|"
    r"apikey|sig|signature|auth)$", re.IGNORECASE)
# Shorter values are not treated as secrets: replacing "id" in every text helps nobody.
MIN_SECRET = 4

# Values of secret-named variables that are switches, not secrets (CI_JOB_TOKEN=true...).
_NOT_SECRET = {"true", "false", "none", "null", "unset", "yes", "no", "on", "off", "enabled",
               "disabled"}
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>`]+")
_CONNINFO = re.compile(r"(?:^|\s)(\w+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|([^\s']+))")
_QUERY_PARAM = re.compile(r"(^|[?&;])([^=&;#?]+)=([^&;#]*)")


def secret_name(name: str) -> bool:
    """Does an environment variable of this name hold a secret? (the README's rule)"""
    return bool(SECRET_NAME.search(name.upper()))


def _split(url: str) -> tuple[str, str, str, str] | None:
    """``scheme://``, userinfo (up to the last ``@`` of the authority), host part, rest."""
    m = re.match(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)([^/?#]*)(.*)\Z", url, re.DOTALL)
    if not m:
        return None
    scheme, authority, rest = m.groups()
    userinfo, at, host = authority.rpartition("@")
    return scheme, (userinfo + at), host, rest


def redact(url: str) -> str:
    """The URL with its password and secret query parameters replaced by ``***`` (safe for
    logs and error messages)::

        >>> redact("postgresql://u:p@ss@db/x?sslmode=require&password=S")
        'postgresql://u:***@db/x?sslmode=require&password=***'
    """
    parts = _split(url)
    if parts is None:
        return url
    scheme, userinfo, host, rest = parts
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + f":{MASK}@"
    query, hash_, fragment = rest.partition("#")
    if "?" in query:
        path, _, q = query.partition("?")
        q = _QUERY_PARAM.sub(lambda m: m.group(1) + m.group(2) + "=" + (
            MASK if _SECRET_PARAM.search(unquote_plus(m.group(2))) else m.group(3)), q)
        query = f"{path}?{q}"
    return f"{scheme}{userinfo}{host}{query}{hash_}{fragment}"


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL, as written and decoded: the userinfo's password and the
    values of secret query parameters. A password with an unencoded ``@`` also yields each
    part after an ``@`` followed by ``@`` (libpq splits at the first ``@`` and names the rest
    in its errors as the host: ``could not translate host name "ss@db"``)."""
    parts = _split(url or "")
    if parts is None:
        return []
    out = []
    userinfo, rest = parts[1], parts[3]
    if ":" in userinfo[:-1]:
        password = userinfo[:-1].split(":", 1)[1]
        out += [password, unquote(password)]
        pieces = password.split("@")
        out += ["@".join(pieces[i:]) + "@" for i in range(1, len(pieces))]
    query = rest.partition("#")[0].partition("?")[2]
    for m in _QUERY_PARAM.finditer(query):
        if _SECRET_PARAM.search(unquote_plus(m.group(2))) and m.group(3):
            out += [m.group(3), unquote_plus(m.group(3))]
    return [s for s in out if s]


def environ_secrets(environ: Mapping[str, str]) -> list[str]:
    """The secret values of an environment: variables whose names look secret
    (``secret_name``), and the secret parts of every value that is a URL."""
    out = []
    for name, value in environ.items():
        if not value:
            continue
        if secret_name(name) and value.lower() not in _NOT_SECRET:
            out.append(value)
        if "://" in value:
            out += url_secrets(value)
        elif "=" in value:  # a libpq keyword DSN: "host=db user=u password=S"
            out += [m.group(2) or m.group(3) for m in _CONNINFO.finditer(value)
                    if _SECRET_PARAM.search(m.group(1))]
    return out


class Scrubber:
    """Replaces known secrets (and their percent-encoded forms) and URL credentials in text.

    ``Scrubber(settings.secrets())(text)``; an empty Scrubber still redacts URLs.
    """

    def __init__(self, secrets: Iterable[str | None] = ()):
        variants = set()
        for s in secrets:
            if not s:
                continue
            for v in (s, quote(s, safe=""), quote(s), quote_plus(s), unquote(s)):
                # a fragment ending in "@" (see url_secrets) is specific even when short
                if (len(v) >= MIN_SECRET or (v.endswith("@") and len(v) > 1)) and v != MASK:
                    variants.add(v)
        # Longest first: a whole URL before its path, a password before its fragments.
        ordered = sorted(variants, key=lambda v: (-len(v), v))
        self.secrets = tuple(ordered)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self._pattern is not None:
            text = self._pattern.sub(
                lambda m: MASK + "@" if m.group(0).endswith("@") else MASK, text)
        if "://" in text:
            text = _URL.sub(lambda m: redact(m.group(0)), text)
        return text

    def __repr__(self) -> str:
        return f"Scrubber({len(self.secrets)} secret form(s))"


def scrub(text: str, secrets: Iterable[str] | Scrubber = ()) -> str:
    """``text`` without the given secrets or URL credentials."""
    scrubber = secrets if isinstance(secrets, Scrubber) else Scrubber(secrets)
    return scrubber(text)


# ------------------------------------------------------------------------- safe text
TEXT_LIMIT = 20_000  # characters of an error stored in the ledger


def safe_text(text: str, limit: int | None = TEXT_LIMIT) -> str:
    """Text every store holds and every terminal shows: NUL (which PostgreSQL's text refuses)
    and lone surrogates (which UTF-8 cannot encode) escaped as ``\\x00`` / ``\\ud800``, and at
    most ``limit`` characters, the cut marked ``… [N more characters]``."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if limit is not None and len(text) > limit:
        keep = max(0, limit - 40)  # room for the marker
        text = text[:keep] + f"… [{len(text) - keep:,} more characters]"
    return text


# ------------------------------------------------------------------------- logging
class ScrubFilter(logging.Filter):
    """A handler filter that scrubs every record: its message (formatted, args dropped), the
    traceback text of ``exc_info`` and ``stack_info``. Idempotent, so it may sit on several
    handlers a record passes through."""

    def __init__(self, scrubber: Scrubber):
        super().__init__()
        self.scrubber = scrubber
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format: keep the template, drop the args
            message = str(record.msg)
        record.msg, record.args = safe_text(self.scrubber(message), None), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrubber(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrubber(record.stack_info)
        return True


def install_log_filter(scrubber: Scrubber, *loggers: logging.Logger | str) -> ScrubFilter:
    """Put one ``ScrubFilter`` on every handler of the root logger, of ``loggers`` and on
    ``logging.lastResort`` (replacing an earlier jankycron filter: the newest settings win)."""
    f = ScrubFilter(scrubber)
    handlers = list(logging.getLogger().handlers)
    for lg in loggers:
        handlers += (logging.getLogger(lg) if isinstance(lg, str) else lg).handlers
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for h in handlers:
        for old in [x for x in h.filters if isinstance(x, ScrubFilter)]:
            h.removeFilter(old)
        h.addFilter(f)
    return f


# ------------------------------------------------------------------------- masking values
# A quoted span is an identifier (kept) after these words, a value (masked) anywhere else.
_IDENT_BEFORE = re.compile(
    r"(?:column|columns|relation|table|constraint|index|schema|type|function|database|role|"
    r"sequence|view|trigger|operator|extension|field|collation|domain|catalog|file|name|"
    r"user|server|host|option|setting|parameter|cursor|statement|key column)\s*$",
    re.IGNORECASE)
_QUOTED = re.compile(r"\"(?:[^\"]|\"\")*\"|'(?:[^']|'')*'")
_DETAIL = re.compile(r"(\b(?:DETAIL|HINT|CONTEXT|LINE \d+)\s*:)[^\n]*")
_KEY_VALUES = re.compile(r"(\bKey \([^)]*\)=\().*?(\)(?= already| is | conflicts|\.|,|$|\s))",
                         re.MULTILINE)
_ROW = re.compile(r"(\bFailing row contains \().*(\))")
# jankycron's own reasons that end with the value (load/warehouse.py).
_OWN_VALUE = re.compile(r"((?:is not a decimal with at most \d+ places|is not a date "
                        r"\(YYYY-MM-DD\)): ).*$", re.MULTILINE)
HIDDEN = "…"


def mask_values(text: str) -> str:
    """A warehouse error message without the customer values it quotes, for the status pages::

        >>> mask_values('invalid input syntax for type integer: "4111111111111111"')
        'invalid input syntax for type integer: "…"'
        >>> mask_values('duplicate key value violates unique constraint "t_pkey"\\n'
        ...             'DETAIL:  Key (id)=(42) already exists.')
        'duplicate key value violates unique constraint "t_pkey"\\nDETAIL: …'

    Identifiers quoted after a word such as ``column``, ``relation`` or ``constraint`` stay;
    DETAIL/HINT/CONTEXT lines, ``Key (...)=(...)`` values, failing rows, every other quoted
    span (PostgreSQL's ``"..."``, DuckDB's and Redshift's ``'...'``) and the values that end
    jankycron's own reasons are replaced by ``…``.
    """
    if not text:
        return text
    text = _DETAIL.sub(lambda m: f"{m.group(1)} {HIDDEN}", text)
    text = _KEY_VALUES.sub(lambda m: f"{m.group(1)}{HIDDEN}{m.group(2)}", text)
    text = _ROW.sub(lambda m: f"{m.group(1)}{HIDDEN}{m.group(2)}", text)
    text = _OWN_VALUE.sub(lambda m: f"{m.group(1)}{HIDDEN}", text)

    def quoted(m: re.Match) -> str:
        if _IDENT_BEFORE.search(text[max(0, m.start() - 40):m.start()]):
            return m.group(0)
        q = m.group(0)[0]
        return f"{q}{HIDDEN}{q}"

    return _QUOTED.sub(quoted, text)
