"""`relaybook tracker` killed with SIGKILL mid-stream and started again: every event
stored once, every message's journal row projected as if nothing had happened."""

from __future__ import annotations

import datetime as dt
import signal
import uuid
from pathlib import Path

import asyncpg

from relaybook.notices.request import parse_notice
from relaybook.notices.store import NoticeStore
from relaybook.platform.kafka import Producer
from relaybook.tooling.settings import Settings
from schemas import CONTRACTS
from tests.support import Deployable, notice, until

OWNERS = 1500


async def test_a_tracker_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    body = notice(OWNERS)
    del body["sms"]
    now = dt.datetime.now(dt.UTC)
    _, answer = await NoticeStore(pool).create(parse_notice(body, now), "test", None)
    await db.execute(
        "UPDATE deliveries SET status = 'sent', sent_at = $2, provider_message_id = 'm' "
        "WHERE notice_id = $1",
        uuid.UUID(answer["id"]),
        now,
    )
    deliveries = [row["id"] for row in await db.fetch("SELECT id FROM deliveries")]
    events = []
    for step, kind in enumerate(("delivered", "opened", "clicked"), start=1):
        stamp = (now + dt.timedelta(seconds=step)).isoformat().replace("+00:00", "Z")
        events += [
            {
                "schema": "delivery-event/v1",
                "event_id": f"sendgrid:{delivery}-{kind}",
                "type": kind,
                "channel": "email",
                "provider": "sendgrid",
                "occurred_at": stamp,
                "received_at": stamp,
                "delivery_id": str(delivery),
                "machine_open": False if kind == "opened" else None,
            }
            for delivery in deliveries
        ]
    events += events[::10]  # the provider's duplicates
    producer = Producer(settings, CONTRACTS)
    await producer.start()
    try:
        await producer.send_many("delivery-events", [(e["delivery_id"], e) for e in events])
    finally:
        await producer.stop()

    async def stored() -> int:
        value: int = await db.fetchval("SELECT count(*) FROM delivery_events")
        return value

    tracker = Deployable("tracker", settings, tmp_path)
    first = tracker.start("first")
    try:
        await until(lambda: _in_a_batch(db), within=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert await stored() < 3 * OWNERS, "the kill came mid-stream"

    second = tracker.start("second")
    try:
        await until(lambda: _at_least(stored, 3 * OWNERS), within=120)
        await until(lambda: _all_clicked(db), within=60)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    assert await stored() == 3 * OWNERS
    counts = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'clicked') AS clicked, "
        "count(*) FILTER (WHERE opened_at IS NOT NULL AND delivered_at IS NOT NULL) AS seen "
        "FROM deliveries"
    )
    assert (counts["clicked"], counts["seen"]) == (OWNERS, OWNERS)


async def _at_least(count: object, floor: int) -> bool:
    assert callable(count)
    return bool(await count() >= floor)


async def _all_clicked(db: asyncpg.Connection) -> bool:
    return bool(
        await db.fetchval("SELECT count(*) FROM deliveries WHERE status = 'clicked'") >= OWNERS
    )


async def _in_a_batch(db: asyncpg.Connection) -> bool:
    """The tracker is inside a batch's transaction: storing and projecting."""
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
            "AND query ILIKE '%delivery%'"
        )
    )
