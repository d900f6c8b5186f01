-- The example service-database table (jobs/service_payments_transactions.py: the payments
-- service's public.transactions, copied every 15 minutes by jankycron/sources/servicedb.py),
-- in Redshift form; `jankycron migrate` derives the PostgreSQL and DuckDB form. Merge key id
-- (the source's primary key). Distributed on id (unique, never NULL), so the loader's
-- delete-by-key is collocated; sorted on updated_at, the cursor the job reads by.
-- Columns mirror the source table; a source column with no column here is dropped and
-- counted on every run, so add columns here when the service adds them.
CREATE TABLE IF NOT EXISTS payments_transactions (
    id          BIGINT          NOT NULL ENCODE az64,
    account_id  BIGINT          NOT NULL ENCODE az64,
    amount      NUMERIC(18,2)   NOT NULL ENCODE az64,
    currency    CHAR(3)         NOT NULL ENCODE zstd,
    status      VARCHAR(32)     NOT NULL ENCODE zstd,
    metadata    SUPER                    ENCODE zstd,
    created_at  TIMESTAMPTZ     NOT NULL ENCODE az64,
    updated_at  TIMESTAMPTZ     NOT NULL ENCODE raw
)
DISTKEY (id)
SORTKEY (updated_at);
