-- The example job's table (jobs/example_orders.py). Portable SQL: runs on DuckDB and
-- PostgreSQL as written; a Redshift form adds ENCODE/DISTKEY/SORTKEY (see README).
CREATE TABLE example_orders (
    order_id     bigint        NOT NULL,
    order_uuid   varchar(36)   NOT NULL,
    customer     varchar(100)  NOT NULL,
    amount       numeric(12,2) NOT NULL,
    currency     char(3)       NOT NULL,
    status       varchar(20),
    note         varchar(200),
    ordered_at   timestamptz   NOT NULL,
    ordered_on   date          NOT NULL,
    attributes   varchar(1000)
)
