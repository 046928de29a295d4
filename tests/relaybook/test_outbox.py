"""The event outbox: messages are checked when written, published as written, stamped once
published, and kept for a later flush when the broker does not take them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import pytest

import schemas
from relaybook.platform import outbox
from relaybook.platform.kafka import BrokerError, Producer
from relaybook.tooling.settings import Settings
from schemas import CONTRACTS
from tests.support import read_topic


def event(n: int, **changes: Any) -> dict[str, Any]:
    example = schemas.example("delivery-event.v1.json")
    return example | {"event_id": f"test:{n}"} | changes


async def pending(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    return count


async def test_a_message_that_breaks_its_contract_is_refused_when_written(
    pool: asyncpg.Pool,
) -> None:
    with pytest.raises(schemas.MessageError, match="type"):
        async with pool.acquire() as connection, connection.transaction():
            await outbox.add(
                connection,
                "delivery-events",
                [("a", event(1)), ("b", event(2, type=7))],
                contracts=CONTRACTS,
            )
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_messages_are_published_once_as_written_then_stamped(
    pool: asyncpg.Pool, producer: Producer, settings: Settings
) -> None:
    written = [(f"d{n}", event(n)) for n in range(30)]
    async with pool.acquire() as connection, connection.transaction():
        await outbox.add(connection, "delivery-events", written, contracts=CONTRACTS)
    events = outbox.Outbox(pool, producer, page=7)
    assert await events.flush() == 30
    assert await events.flush() == 0
    assert await pending(pool) == 0
    published = await read_topic(settings, "delivery-events", 30)
    assert sorted(published, key=lambda m: m[1]["event_id"]) == sorted(
        written, key=lambda m: m[1]["event_id"]
    )


async def test_what_the_broker_did_not_take_stays_for_the_next_flush(
    pool: asyncpg.Pool, producer: Producer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await outbox.add(
            connection, "delivery-events", [("a", event(1)), ("b", event(2))], contracts=CONTRACTS
        )

    async def refuse(*_args: Any) -> None:
        raise BrokerError("Kafka did not acknowledge")

    with monkeypatch.context() as patched:
        patched.setattr(producer, "send_encoded", refuse)
        with pytest.raises(BrokerError):
            await outbox.Outbox(pool, producer).flush()
    assert await pending(pool) == 2
    assert await outbox.Outbox(pool, producer).flush() == 2
    assert len(await read_topic(settings, "delivery-events", 2)) == 2


async def test_published_rows_older_than_the_retention_are_pruned(
    pool: asyncpg.Pool, producer: Producer
) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await outbox.add(
            connection,
            "delivery-events",
            [(f"d{n}", event(n)) for n in range(6)],
            contracts=CONTRACTS,
        )
    events = outbox.Outbox(pool, producer, page=4, retention=dt.timedelta(days=7))
    assert await events.flush() == 6
    await pool.execute(  # four published long ago, two just now
        "UPDATE outbox SET published_at = now() - interval '8 days' WHERE id IN"
        " (SELECT id FROM outbox ORDER BY id LIMIT 4)"
    )
    async with pool.acquire() as connection, connection.transaction():
        # not published
        await outbox.add(connection, "delivery-events", [("late", event(7))], contracts=CONTRACTS)
    assert await events.prune() == 4
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 3
    assert await pending(pool) == 1
    # the first row still kept ends the pruning: an old one after it waits its turn
    await pool.execute(
        "UPDATE outbox SET published_at = now() - interval '8 days' WHERE id ="
        " (SELECT max(id) FROM outbox WHERE published_at IS NOT NULL)"
    )
    assert await events.prune() == 0
    assert await outbox.Outbox(pool, producer).prune() == 0, "no retention: all kept"
