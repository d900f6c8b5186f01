-- Email provider events (jobs/email_events.py; rows built in jankycron/sources/email.py), in
-- Redshift form; `jankycron migrate` derives the PostgreSQL and DuckDB form. Merge key
-- (provider, id): the provider's own event id. Distributed on id (unique, never NULL), so the
-- loader's delete-by-key is collocated; sorted on the event time analysts filter by.
-- Widths are bytes: an address is at most 320 ASCII bytes (more with SMTPUTF8), a Message-ID
-- header line at most 998. SMTP replies and user agents get room for multi-line replies and
-- long UA strings; nothing is cut, and a value that does not fit is a dead letter.
CREATE TABLE IF NOT EXISTS email_events (
    id                VARCHAR(64)    NOT NULL ENCODE zstd,
    provider          VARCHAR(16)    NOT NULL ENCODE zstd,
    occurred_at       TIMESTAMP      NOT NULL ENCODE raw,
    event             VARCHAR(16)    NOT NULL ENCODE zstd,
    provider_event    VARCHAR(32)    NOT NULL ENCODE zstd,
    domain            VARCHAR(255)            ENCODE zstd,
    recipient         VARCHAR(512)            ENCODE zstd,
    recipient_domain  VARCHAR(255)            ENCODE zstd,
    message_id        VARCHAR(1024)           ENCODE zstd,
    severity          VARCHAR(16)             ENCODE zstd,
    reason            VARCHAR(64)             ENCODE zstd,
    delivery_code     INTEGER                 ENCODE az64,
    delivery_message  VARCHAR(16384)          ENCODE zstd,
    url               VARCHAR(8192)           ENCODE zstd,
    ip                VARCHAR(45)             ENCODE zstd,
    country           VARCHAR(64)             ENCODE zstd,
    region            VARCHAR(128)            ENCODE zstd,
    city              VARCHAR(256)            ENCODE zstd,
    client_type       VARCHAR(64)             ENCODE zstd,
    client_os         VARCHAR(128)            ENCODE zstd,
    client_name       VARCHAR(128)            ENCODE zstd,
    device_type       VARCHAR(64)             ENCODE zstd,
    user_agent        VARCHAR(4096)           ENCODE zstd,
    tags              SUPER                   ENCODE zstd,
    user_variables    SUPER                   ENCODE zstd
)
DISTKEY (id)
SORTKEY (occurred_at);
