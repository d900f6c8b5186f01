"""Service database, every 15 minutes: the payments service's transactions table.

Copies rows of ``public.transactions`` changed since the previous run (by ``updated_at``,
re-reading the last 10 minutes for transactions that committed late) into the warehouse table
``payments_transactions`` (warehouse/0005_service_example.sql), merged by ``id``.

Setting (the job's environment, read when the job runs): ``PAYMENTS_DB_URL``, a DSN of a
read-only user, e.g. ``postgresql://jankycron_ro:***@payments-replica.internal:5432/payments``.
How rows are chosen, and what this cannot see (hard deletes, changes that do not touch
``updated_at``): jankycron/sources/servicedb.py and the README's "Service databases".
"""

from jankycron.sources.servicedb import postgres_table

job = postgres_table(
    name="payments_transactions",
    dsn_env="PAYMENTS_DB_URL",
    table="public.transactions",
    target="payments_transactions",
    key="id",
    cursor="updated_at",
    lookback="10m",  # longer than the longest transaction that writes the table
    schedule="*/15 * * * *",
    columns=("id", "account_id", "amount", "currency", "status", "metadata", "created_at",
             "updated_at"),
    owner="data-eng",
)
