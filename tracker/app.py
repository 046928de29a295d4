"""The journal-tracker deployable: two members of consumer group ``relaybook-tracker`` on
``delivery-events``. Replicas share the partitions; events are keyed by delivery, so one
delivery's events are always handled by one replica."""

from __future__ import annotations

from relaybook.deployable import Deployable
from relaybook.kafka import Consumer
from relaybook.runtime import Infrastructure
from tracker.journal import Journal

GROUP = "relaybook-tracker"
#: members of the group in one tracker process
MEMBERS = 2


def build(infra: Infrastructure) -> Deployable:
    journal = Journal(infra.pool)
    # Two members of the group in one process: while one waits for PostgreSQL to store its
    # batch, the other decodes and prepares the next (a member alone leaves the process
    # idle for two thirds of each batch: bench/ingest.py's tracker went from 15,500-17,000
    # to 17,500-21,000 events/s). Big batches (waiting up to 100 ms to fill them): one
    # transaction per batch, and the events of one message often land in the same one.
    consumers = [
        Consumer(
            infra.settings,
            ["delivery-events"],
            GROUP,
            dead_letters=infra.dead_letters(),
            max_batch=5000,
            gather_ms=100,
        )
        for _ in range(MEMBERS)
    ]

    async def start() -> None:
        for number, consumer in enumerate(consumers):
            await consumer.start_running(journal.handle, f"tracker-{number}")

    async def stop() -> None:
        for consumer in consumers:
            await consumer.stop()

    return Deployable(app=infra.consumer_app("tracker", consumers), start=start, stop=stop)
