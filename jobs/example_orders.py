"""Example job: synthetic shop orders, so a fresh checkout shows a real run with no network.

Each interval yields the same orders every time it runs (the random generator is seeded with
the interval's start), so a rerun replaces rows instead of adding them. One order per day has
an amount in fractions of a cent, which the table's numeric(12,2) cannot hold exactly: it goes
to the dead-letter store with the reason instead of being rounded.
"""

import random
import uuid
from datetime import timedelta
from decimal import Decimal

from jankycron import job

CUSTOMERS = ["Ada Lovelace", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov",
             "Ken Thompson", "Frances Allen", "Zoë Ångström", "渡辺 健"]


@job(
    schedule="0 2 * * *",  # nightly at 02:00 UTC; the run covers the previous 24 hours
    table="example_orders",
    key="order_id",
    retries=2,
    timeout="10m",
    owner="data-eng",
)
def example_orders(run):
    rng = random.Random(run.start.isoformat())
    seconds = int((run.end - run.start).total_seconds())
    day_number = int(run.start.timestamp()) // 86400
    count = rng.randint(400, 600)
    for i in range(count):
        ordered_at = run.start + timedelta(seconds=rng.randrange(seconds))
        amount = Decimal(rng.randint(100, 500_00)) / 100
        if i == 0:
            amount = amount + Decimal("0.005")  # an upstream bug: half a cent
        yield {
            "order_id": day_number * 10_000 + i,
            "order_uuid": uuid.UUID(int=rng.getrandbits(128), version=4),
            "customer": rng.choice(CUSTOMERS),
            "amount": amount,
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "status": rng.choice(["paid", "paid", "paid", "refunded", None]),
            "ordered_at": ordered_at,
            "ordered_on": ordered_at.date(),
            "attributes": {"gift": rng.random() < 0.1, "items": rng.randint(1, 5)},
            "internal_score": rng.random(),  # no such column: dropped and counted
        }
    run.state["last_interval_end"] = run.end.isoformat()
    run.log.info("yielded %d orders", count)
