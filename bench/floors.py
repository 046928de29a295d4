"""The floor the benchmarks compare relaybook's publishing with: the fastest plain way to
produce the same messages with a bare aiokafka producer, record batches filled per
partition, each key on the partition the Java client's partitioner gives it; on the same
broker, with the same durability as relaybook's producer (``acks=all``, the idempotent
producer when relaybook's is on) and to a topic of the same shape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from relaybook.platform.kafka import MAX_BATCH_BYTES, client_options, ensure_topics
from relaybook.tooling.settings import Settings


def floor_producer(settings: Settings) -> AIOKafkaProducer:
    """A bare producer as durable as relaybook's on the broker ``settings`` name: acks=all
    and the idempotent producer when relaybook's is on; no linger and batches of up to
    512 KiB, as relaybook's."""
    return AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=0,
        max_batch_size=MAX_BATCH_BYTES,
    )


async def floor_topic(settings: Settings) -> str:
    """The floor's topic, created as relaybook creates its own: the same partitions and
    replicas (the embedded Apache Kafka does not create topics on first use, and Tansu
    would give it partitions of its choosing)."""
    await ensure_topics(settings, ["floor"])
    return settings.topic("floor")


async def until_led(producer: AIOKafkaProducer, topic: str) -> None:
    """Waits until every partition of ``topic`` has a leader: to be called before the
    clock starts, which must not time the floor topic's creation (relaybook's topics were
    created at start-up, well before its figures are taken)."""
    partitions = await producer.partitions_for(topic)
    deadline = time.monotonic() + 60
    while producer.client.cluster.available_partitions_for_topic(topic) != partitions:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: partitions without a leader after 60 s")
        await producer.client.force_metadata_update()
        await asyncio.sleep(0.1)


async def produce_in_batches(
    producer: AIOKafkaProducer, topic: str, records: Iterable[tuple[bytes, bytes]]
) -> None:
    """Produces ``(key, value)`` records and returns once the broker acknowledged all."""
    partitions = sorted(await producer.partitions_for(topic))
    batches: dict[int, Any] = {}
    acknowledged = []
    for key, value in records:
        partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        batch = batches.get(partition)
        if batch is None or batch.append(key=key, value=value, timestamp=None) is None:
            if batch is not None:
                acknowledged.append(await producer.send_batch(batch, topic, partition=partition))
            batch = batches[partition] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    for partition, batch in batches.items():
        acknowledged.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*acknowledged)
