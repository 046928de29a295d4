"""`relaybook bounce-policy` killed with SIGKILL mid-stream and started again: every
failure counted once, every address suppressed once, every recipient unsubscribed and
audited once."""

from __future__ import annotations

import datetime as dt
import signal
from pathlib import Path

import asyncpg

from relaybook.platform import sql
from relaybook.platform.kafka import Producer
from relaybook.tooling.settings import Settings
from schemas import CONTRACTS
from tests.support import Deployable, until

ADDRESSES = 1500


async def test_a_policy_killed_mid_stream_counts_nothing_twice(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(
        "INSERT INTO recipients (id, email) SELECT 'o' || i, 'o' || i || '@example.org' "
        "FROM generate_series(1, $1) i",
        ADDRESSES,
    )
    now = dt.datetime.now(dt.UTC).isoformat()
    events = [
        {
            "schema": "delivery-event/v1",
            "event_id": f"sendgrid:{i}-{bounce}",
            "type": "bounced",
            "channel": "email",
            "provider": "sendgrid",
            "occurred_at": now,
            "received_at": now,
            "address": f"o{i}@example.org",
            "provider_code": "5.1.1",
            "bounce_type": "bounce",
        }
        for bounce in range(3)
        for i in range(1, ADDRESSES + 1)
    ]
    events += events[::10]  # the provider's duplicates
    producer = Producer(settings, CONTRACTS)
    await producer.start()
    try:
        await producer.send_many("delivery-events", [(e["address"], e) for e in events])
    finally:
        await producer.stop()

    policy = Deployable("bounce-policy", settings, tmp_path)

    async def counted() -> int:
        value: int = await db.fetchval("SELECT count(*) FROM address_events")
        return value

    first = policy.start("first")
    try:
        await until(lambda: _in_a_batch(db), within=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert await counted() < 3 * ADDRESSES, "the kill came mid-stream"

    second = policy.start("second")
    try:
        await until(lambda: _more_than(counted, 3 * ADDRESSES - 1), within=120)
        await until(lambda: _suppressed(db, ADDRESSES), within=60)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    assert await counted() == 3 * ADDRESSES
    assert await db.fetchval("SELECT count(*) FROM suppressions") == ADDRESSES
    assert await db.fetchval("SELECT count(*) FROM audit_log") == ADDRESSES
    assert await db.fetchval(sql.load("relaybook.reachability")["count_off"], "email") == (
        ADDRESSES
    )
    announced = await db.fetchval("SELECT count(*) FROM outbox WHERE topic = 'recipient-events'")
    assert announced == ADDRESSES


async def _more_than(count: object, floor: int) -> bool:
    assert callable(count)
    return bool(await count() > floor)


async def _in_a_batch(db: asyncpg.Connection) -> bool:
    """The policy is inside a batch's transaction: counting, deciding, acting."""
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
            "AND query ILIKE '%address%'"
        )
    )


async def _suppressed(db: asyncpg.Connection, expected: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM suppressions") >= expected)
