"""Ingest's publisher: the records of concurrent calls share record batches (far fewer
batches than calls), each call returns once its own records are acknowledged, one key's
records stay in order, and past the bound a call is refused whole and at once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import schemas
from relaybook.platform.kafka import OverloadedError, Producer, SharedBatches
from relaybook.tooling.settings import Settings
from schemas import CONTRACTS
from tests.support import read_topic


def event(n: int, key: str) -> dict[str, Any]:
    example = schemas.example("delivery-event.v1.json")
    return example | {"event_id": f"test:{uuid.uuid4()}", "provider_code": str(n),
                      "address": key}  # fmt: skip


class CountingProducer(Producer):
    """Counts the record batches handed to the broker."""

    batches = 0

    async def send_batch(self, batch: Any, full_topic: str, partition: int) -> Any:
        CountingProducer.batches += 1
        return await super().send_batch(batch, full_topic, partition)


@pytest.fixture
async def counting(settings: Settings) -> Any:
    producer = CountingProducer(settings, CONTRACTS)
    await producer.start()
    CountingProducer.batches = 0
    yield producer
    await producer.stop()


async def test_concurrent_calls_share_batches_and_keep_each_keys_order(
    settings: Settings, counting: CountingProducer
) -> None:
    publisher = SharedBatches(counting, max_in_flight=100_000)
    keys = [f"owner-{i}" for i in range(5)]
    calls = [
        [(keys[(c + n) % 5], event(c * 10 + n, keys[(c + n) % 5])) for n in range(10)]
        for c in range(200)
    ]
    await asyncio.gather(*(publisher.send_many("delivery-events", call) for call in calls))
    assert publisher.in_flight == 0
    assert CountingProducer.batches < len(calls) / 4, "calls share their batches"
    found = await read_topic(settings, "delivery-events", 2000)
    assert len(found) == 2000, "each record once"
    for key in keys:
        codes = [int(value["provider_code"]) for k, value in found if k == key]
        assert codes == sorted(codes), "one key's records in the order they were placed"


async def test_past_the_bound_a_call_is_refused_whole_and_at_once(
    settings: Settings, producer: Producer
) -> None:
    publisher = SharedBatches(producer, max_in_flight=10)
    first = [(f"a-{n}", event(n, f"a-{n}")) for n in range(8)]
    second = [(f"b-{n}", event(n, f"b-{n}")) for n in range(5)]
    placed = asyncio.create_task(publisher.send_many("delivery-events", first))
    refused = asyncio.create_task(publisher.send_many("delivery-events", second))
    with pytest.raises(OverloadedError):
        await asyncio.wait_for(refused, 0.5)  # at once, not after a timeout
    await placed
    alone = [(f"c-{n}", event(n, f"c-{n}")) for n in range(25)]
    await publisher.send_many("delivery-events", alone)  # larger than the bound, but alone
    found = await read_topic(settings, "delivery-events", 33)
    assert sorted(k for k, _ in found if k) == sorted(
        [k for k, _ in first] + [k for k, _ in alone]
    ), "nothing of the refused call"
