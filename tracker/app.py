"""The journal-tracker deployable: a member of consumer group ``relaybook-tracker`` on
``delivery-events``. Replicas share the partitions; events are keyed by delivery (by
address when the provider named none), so a delivery's events are handled by one
replica, but for a bounce matched by its address."""

from __future__ import annotations

from relaybook.platform.deployable import Deployable
from relaybook.platform.kafka import Consumer
from relaybook.platform.runtime import Infrastructure
from relaybook.platform.settings import section
from schemas import CONTRACTS
from tracker.journal import Journal
from tracker.settings import TrackerSettings

GROUP = "relaybook-tracker"


def build(infra: Infrastructure) -> Deployable:
    journal = Journal(infra.pool)
    # big batches (waiting up to 100 ms to fill them), and the events of one message often
    # land in the same one; each batch in several transactions at once (tracker_lanes),
    # split by key, so that PostgreSQL, where most of the tracker's work is, uses more
    # than one core: the lag after a burst is worked off in about half the time
    # (BENCHMARKS.md, issue 22's fifth sitting). Events keyed by their delivery share a
    # lane; one matched by address or message id may land in another, so two lanes can
    # touch one delivery: `project` locks rows in id order and settle_notices locks
    # notices after them, so lanes wait on each other, never in a circle.
    consumer = Consumer(
        infra.settings,
        ["delivery-events"],
        GROUP,
        dead_letters=infra.dead_letters(),
        contracts=CONTRACTS,
        max_batch=5000,
        gather_ms=100,
        lanes=section(infra.settings, TrackerSettings).tracker_lanes,
    )

    async def start() -> None:
        await consumer.start_running(journal.handle, "tracker")

    return Deployable(
        app=infra.consumer_app("tracker", [consumer]), start=start, stop=consumer.stop
    )
