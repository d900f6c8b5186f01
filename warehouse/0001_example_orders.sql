-- The example job's table (jobs/example_orders.py), in Redshift form; `jankycron migrate`
-- derives the PostgreSQL and DuckDB form (see jankycron/migrate.py). Distributed on the merge
-- key (high-cardinality, never NULL), so the loader's DELETE ... USING is collocated; sorted on
-- the time analysts filter by.
CREATE TABLE IF NOT EXISTS example_orders (
    order_id     bigint        NOT NULL ENCODE az64,
    order_uuid   varchar(36)   NOT NULL ENCODE zstd,
    customer     varchar(100)  NOT NULL ENCODE zstd,
    amount       numeric(12,2) NOT NULL ENCODE az64,
    currency     char(3)       NOT NULL ENCODE zstd,
    status       varchar(20)            ENCODE zstd,
    note         varchar(200)           ENCODE zstd,
    ordered_at   timestamptz   NOT NULL ENCODE raw,
    ordered_on   date          NOT NULL ENCODE az64,
    attributes   varchar(1000)          ENCODE zstd
)
DISTKEY (order_id)
SORTKEY (ordered_at);
