"""The floor the benchmarks compare relaybook's publishing with: the fastest plain way to
produce the same messages with a bare aiokafka producer (acks=all), record batches filled
per partition, each key on the partition the Java client's partitioner gives it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2


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
