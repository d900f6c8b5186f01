-- Tables of the Segment job (jobs/segment_events.py; rows built in jankycron/sources/segment.py),
-- in Redshift form; `jankycron migrate` derives the PostgreSQL and DuckDB form.
--
-- As in Segment's own warehouses: one table per call type, key `id` = messageId (the merge
-- key: Segment's retries replace, never duplicate), snake_case columns, times in UTC
-- `timestamp` columns, sorted on received_at (Segment's server clock; use `timestamp` for
-- chronology). Unlike Segment, track events are not also split into one table per event name
-- and properties/traits are not flattened into columns: that needs DDL per new event or
-- property at load time, and here tables come from migrations. They are SUPER instead
-- (`properties.total`, `traits.email` in Redshift's PartiQL; jsonb / JSON locally).
--
-- Distributed on id: high-cardinality, never NULL, and the loader's merge joins on it, so the
-- staging join stays on each slice. Never user_id: anonymous events have none, and every NULL
-- lands on one slice. Widths are bytes on Redshift; a longer value is a dead letter, never
-- truncated: messageId is at most 100 characters, URLs and user agents get room.

CREATE TABLE IF NOT EXISTS segment_tracks (
    id                       varchar(400)   NOT NULL ENCODE zstd,
    received_at              timestamp      NOT NULL ENCODE raw,
    anonymous_id             varchar(1024)           ENCODE zstd,
    user_id                  varchar(1024)           ENCODE zstd,
    event                    varchar(1024)           ENCODE zstd,
    event_text               varchar(1024)           ENCODE zstd,
    properties               super ENCODE zstd,
    sent_at                  timestamp               ENCODE az64,
    "timestamp"              timestamp               ENCODE az64,
    original_timestamp       timestamp               ENCODE az64,
    uuid_ts                  timestamp               ENCODE az64,
    context_ip               varchar(64)             ENCODE zstd,
    context_locale           varchar(64)             ENCODE zstd,
    context_timezone         varchar(128)            ENCODE zstd,
    context_user_agent       varchar(4096)           ENCODE zstd,
    context_library_name     varchar(256)            ENCODE zstd,
    context_library_version  varchar(256)            ENCODE zstd,
    context_page_path        varchar(8192)           ENCODE zstd,
    context_page_referrer    varchar(8192)           ENCODE zstd,
    context_page_search      varchar(8192)           ENCODE zstd,
    context_page_title       varchar(4096)           ENCODE zstd,
    context_page_url         varchar(8192)           ENCODE zstd,
    context_campaign_source  varchar(1024)           ENCODE zstd,
    context_campaign_medium  varchar(1024)           ENCODE zstd,
    context_campaign_name    varchar(1024)           ENCODE zstd,
    context_campaign_term    varchar(1024)           ENCODE zstd,
    context_campaign_content varchar(1024)           ENCODE zstd,
    context_app_name         varchar(1024)           ENCODE zstd,
    context_app_version      varchar(256)            ENCODE zstd,
    context_device_type      varchar(256)            ENCODE zstd,
    context_os_name          varchar(256)            ENCODE zstd,
    context_os_version       varchar(256)            ENCODE zstd,
    context                  super ENCODE zstd
)
DISTKEY (id)
SORTKEY (received_at);

CREATE TABLE IF NOT EXISTS segment_identifies (
    id                       varchar(400)   NOT NULL ENCODE zstd,
    received_at              timestamp      NOT NULL ENCODE raw,
    anonymous_id             varchar(1024)           ENCODE zstd,
    user_id                  varchar(1024)           ENCODE zstd,
    traits                   super ENCODE zstd,
    sent_at                  timestamp               ENCODE az64,
    "timestamp"              timestamp               ENCODE az64,
    original_timestamp       timestamp               ENCODE az64,
    uuid_ts                  timestamp               ENCODE az64,
    context_ip               varchar(64)             ENCODE zstd,
    context_locale           varchar(64)             ENCODE zstd,
    context_timezone         varchar(128)            ENCODE zstd,
    context_user_agent       varchar(4096)           ENCODE zstd,
    context_library_name     varchar(256)            ENCODE zstd,
    context_library_version  varchar(256)            ENCODE zstd,
    context_page_path        varchar(8192)           ENCODE zstd,
    context_page_referrer    varchar(8192)           ENCODE zstd,
    context_page_search      varchar(8192)           ENCODE zstd,
    context_page_title       varchar(4096)           ENCODE zstd,
    context_page_url         varchar(8192)           ENCODE zstd,
    context_campaign_source  varchar(1024)           ENCODE zstd,
    context_campaign_medium  varchar(1024)           ENCODE zstd,
    context_campaign_name    varchar(1024)           ENCODE zstd,
    context_campaign_term    varchar(1024)           ENCODE zstd,
    context_campaign_content varchar(1024)           ENCODE zstd,
    context_app_name         varchar(1024)           ENCODE zstd,
    context_app_version      varchar(256)            ENCODE zstd,
    context_device_type      varchar(256)            ENCODE zstd,
    context_os_name          varchar(256)            ENCODE zstd,
    context_os_version       varchar(256)            ENCODE zstd,
    context                  super ENCODE zstd
)
DISTKEY (id)
SORTKEY (received_at);

CREATE TABLE IF NOT EXISTS segment_pages (
    id                       varchar(400)   NOT NULL ENCODE zstd,
    received_at              timestamp      NOT NULL ENCODE raw,
    anonymous_id             varchar(1024)           ENCODE zstd,
    user_id                  varchar(1024)           ENCODE zstd,
    name                     varchar(4096)           ENCODE zstd,
    category                 varchar(1024)           ENCODE zstd,
    path                     varchar(8192)           ENCODE zstd,
    referrer                 varchar(8192)           ENCODE zstd,
    search                   varchar(8192)           ENCODE zstd,
    title                    varchar(4096)           ENCODE zstd,
    url                      varchar(8192)           ENCODE zstd,
    properties               super ENCODE zstd,
    sent_at                  timestamp               ENCODE az64,
    "timestamp"              timestamp               ENCODE az64,
    original_timestamp       timestamp               ENCODE az64,
    uuid_ts                  timestamp               ENCODE az64,
    context_ip               varchar(64)             ENCODE zstd,
    context_locale           varchar(64)             ENCODE zstd,
    context_timezone         varchar(128)            ENCODE zstd,
    context_user_agent       varchar(4096)           ENCODE zstd,
    context_library_name     varchar(256)            ENCODE zstd,
    context_library_version  varchar(256)            ENCODE zstd,
    context_page_path        varchar(8192)           ENCODE zstd,
    context_page_referrer    varchar(8192)           ENCODE zstd,
    context_page_search      varchar(8192)           ENCODE zstd,
    context_page_title       varchar(4096)           ENCODE zstd,
    context_page_url         varchar(8192)           ENCODE zstd,
    context_campaign_source  varchar(1024)           ENCODE zstd,
    context_campaign_medium  varchar(1024)           ENCODE zstd,
    context_campaign_name    varchar(1024)           ENCODE zstd,
    context_campaign_term    varchar(1024)           ENCODE zstd,
    context_campaign_content varchar(1024)           ENCODE zstd,
    context_app_name         varchar(1024)           ENCODE zstd,
    context_app_version      varchar(256)            ENCODE zstd,
    context_device_type      varchar(256)            ENCODE zstd,
    context_os_name          varchar(256)            ENCODE zstd,
    context_os_version       varchar(256)            ENCODE zstd,
    context                  super ENCODE zstd
)
DISTKEY (id)
SORTKEY (received_at);

CREATE TABLE IF NOT EXISTS segment_screens (
    id                       varchar(400)   NOT NULL ENCODE zstd,
    received_at              timestamp      NOT NULL ENCODE raw,
    anonymous_id             varchar(1024)           ENCODE zstd,
    user_id                  varchar(1024)           ENCODE zstd,
    name                     varchar(4096)           ENCODE zstd,
    properties               super ENCODE zstd,
    sent_at                  timestamp               ENCODE az64,
    "timestamp"              timestamp               ENCODE az64,
    original_timestamp       timestamp               ENCODE az64,
    uuid_ts                  timestamp               ENCODE az64,
    context_ip               varchar(64)             ENCODE zstd,
    context_locale           varchar(64)             ENCODE zstd,
    context_timezone         varchar(128)            ENCODE zstd,
    context_user_agent       varchar(4096)           ENCODE zstd,
    context_library_name     varchar(256)            ENCODE zstd,
    context_library_version  varchar(256)            ENCODE zstd,
    context_page_path        varchar(8192)           ENCODE zstd,
    context_page_referrer    varchar(8192)           ENCODE zstd,
    context_page_search      varchar(8192)           ENCODE zstd,
    context_page_title       varchar(4096)           ENCODE zstd,
    context_page_url         varchar(8192)           ENCODE zstd,
    context_campaign_source  varchar(1024)           ENCODE zstd,
    context_campaign_medium  varchar(1024)           ENCODE zstd,
    context_campaign_name    varchar(1024)           ENCODE zstd,
    context_campaign_term    varchar(1024)           ENCODE zstd,
    context_campaign_content varchar(1024)           ENCODE zstd,
    context_app_name         varchar(1024)           ENCODE zstd,
    context_app_version      varchar(256)            ENCODE zstd,
    context_device_type      varchar(256)            ENCODE zstd,
    context_os_name          varchar(256)            ENCODE zstd,
    context_os_version       varchar(256)            ENCODE zstd,
    context                  super ENCODE zstd
)
DISTKEY (id)
SORTKEY (received_at);

CREATE TABLE IF NOT EXISTS segment_groups (
    id                       varchar(400)   NOT NULL ENCODE zstd,
    received_at              timestamp      NOT NULL ENCODE raw,
    anonymous_id             varchar(1024)           ENCODE zstd,
    user_id                  varchar(1024)           ENCODE zstd,
    group_id                 varchar(1024)           ENCODE zstd,
    traits                   super ENCODE zstd,
    sent_at                  timestamp               ENCODE az64,
    "timestamp"              timestamp               ENCODE az64,
    original_timestamp       timestamp               ENCODE az64,
    uuid_ts                  timestamp               ENCODE az64,
    context_ip               varchar(64)             ENCODE zstd,
    context_locale           varchar(64)             ENCODE zstd,
    context_timezone         varchar(128)            ENCODE zstd,
    context_user_agent       varchar(4096)           ENCODE zstd,
    context_library_name     varchar(256)            ENCODE zstd,
    context_library_version  varchar(256)            ENCODE zstd,
    context_page_path        varchar(8192)           ENCODE zstd,
    context_page_referrer    varchar(8192)           ENCODE zstd,
    context_page_search      varchar(8192)           ENCODE zstd,
    context_page_title       varchar(4096)           ENCODE zstd,
    context_page_url         varchar(8192)           ENCODE zstd,
    context_campaign_source  varchar(1024)           ENCODE zstd,
    context_campaign_medium  varchar(1024)           ENCODE zstd,
    context_campaign_name    varchar(1024)           ENCODE zstd,
    context_campaign_term    varchar(1024)           ENCODE zstd,
    context_campaign_content varchar(1024)           ENCODE zstd,
    context_app_name         varchar(1024)           ENCODE zstd,
    context_app_version      varchar(256)            ENCODE zstd,
    context_device_type      varchar(256)            ENCODE zstd,
    context_os_name          varchar(256)            ENCODE zstd,
    context_os_version       varchar(256)            ENCODE zstd,
    context                  super ENCODE zstd
)
DISTKEY (id)
SORTKEY (received_at);

CREATE TABLE IF NOT EXISTS segment_aliases (
    id                       varchar(400)   NOT NULL ENCODE zstd,
    received_at              timestamp      NOT NULL ENCODE raw,
    anonymous_id             varchar(1024)           ENCODE zstd,
    user_id                  varchar(1024)           ENCODE zstd,
    previous_id              varchar(1024)           ENCODE zstd,
    sent_at                  timestamp               ENCODE az64,
    "timestamp"              timestamp               ENCODE az64,
    original_timestamp       timestamp               ENCODE az64,
    uuid_ts                  timestamp               ENCODE az64,
    context_ip               varchar(64)             ENCODE zstd,
    context_locale           varchar(64)             ENCODE zstd,
    context_timezone         varchar(128)            ENCODE zstd,
    context_user_agent       varchar(4096)           ENCODE zstd,
    context_library_name     varchar(256)            ENCODE zstd,
    context_library_version  varchar(256)            ENCODE zstd,
    context_page_path        varchar(8192)           ENCODE zstd,
    context_page_referrer    varchar(8192)           ENCODE zstd,
    context_page_search      varchar(8192)           ENCODE zstd,
    context_page_title       varchar(4096)           ENCODE zstd,
    context_page_url         varchar(8192)           ENCODE zstd,
    context_campaign_source  varchar(1024)           ENCODE zstd,
    context_campaign_medium  varchar(1024)           ENCODE zstd,
    context_campaign_name    varchar(1024)           ENCODE zstd,
    context_campaign_term    varchar(1024)           ENCODE zstd,
    context_campaign_content varchar(1024)           ENCODE zstd,
    context_app_name         varchar(1024)           ENCODE zstd,
    context_app_version      varchar(256)            ENCODE zstd,
    context_device_type      varchar(256)            ENCODE zstd,
    context_os_name          varchar(256)            ENCODE zstd,
    context_os_version       varchar(256)            ENCODE zstd,
    context                  super ENCODE zstd
)
DISTKEY (id)
SORTKEY (received_at);
