"""Publishing the records of concurrent callers (ingest's webhooks) in shared record
batches, with a bound on what waits for the broker."""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError
from prometheus_client import Counter

from relaybook.platform import faults
from relaybook.platform.kafka.connection import BrokerError
from relaybook.platform.kafka.contracts import Headers
from relaybook.platform.kafka.producer import PRODUCED, Producer, encode, partition_of


class OverloadedError(faults.UnavailableError):
    """More records in flight than the bound: refused whole, at once (retry later)."""


OVERLOADED = Counter(
    "relaybook_kafka_publish_refused_total",
    "Publications refused whole because too many records were in flight",
    ["topic"],
)


class SharedBatches:
    """Publishes the records of concurrent callers in shared record batches, one open per
    partition, and lets each caller wait only for the acknowledgement of its own records.

    A partition's lane hands its batches to the producer one after the other: while one
    waits for the broker, the records of every caller arriving meanwhile fill the next, so
    the batches grow with the load instead of each caller sending its own small ones and
    queueing behind the others' (aiokafka keeps one batch a partition in its queue). The
    order of one key's records is kept: a lane sends in the order records came.

    At most ``max_in_flight`` records wait for their acknowledgement: past that a call is
    refused whole with :class:`OverloadedError` before any of its records is placed.
    """

    def __init__(self, producer: Producer, max_in_flight: int) -> None:
        self._producer = producer
        self._max = max_in_flight
        self._in_flight = 0
        self._lanes: dict[tuple[str, int], _Lane] = {}

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def send_many(
        self, topic: str, messages: Sequence[tuple[str | None, dict[str, Any]]]
    ) -> None:
        """Like :meth:`Producer.send_many`; :class:`OverloadedError` at once past the
        bound."""
        contracts = self._producer.contracts
        for _, message in messages:
            contracts.validate(message)
        full_topic = self._producer.full_topic(topic)
        count = len(messages)
        # one call alone may be larger than the bound: it is never refused for its size
        if self._in_flight and self._in_flight + count > self._max:
            OVERLOADED.labels(full_topic).inc()
            raise OverloadedError(f"{self._in_flight} records in flight already")
        self._in_flight += count
        try:
            partitions = await self._producer.partitions(full_topic)
            waits = set()
            # no await from the first record placed to the last: a call is in or out whole
            for key, message in messages:
                encoded = key.encode() if key is not None else None
                partition = partition_of(encoded, partitions)
                lane = self._lanes.get((full_topic, partition))
                if lane is None:
                    lane = self._lanes[full_topic, partition] = _Lane(
                        self._producer, full_topic, partition
                    )
                waits.add(
                    lane.append(encoded, encode(message), contracts.headers_for(topic, message))
                )
            # asyncio.wait, not gather: a caller giving up must not cancel what others share
            await asyncio.wait(waits)
            for acknowledged in waits:
                acknowledged.result()
        finally:
            self._in_flight -= count
        PRODUCED.labels(full_topic).inc(count)


class _Lane:
    """One partition's open batch, the full ones waiting their turn, and the task handing
    them to the producer in order."""

    def __init__(self, producer: Producer, topic: str, partition: int) -> None:
        self._producer = producer
        self._topic = topic
        self._partition = partition
        self._open: Any = None
        self._open_done: asyncio.Future[None] | None = None
        self._full: collections.deque[tuple[Any, asyncio.Future[None]]] = collections.deque()
        self._sender: asyncio.Task[None] | None = None

    def append(self, key: bytes | None, value: bytes, headers: Headers) -> asyncio.Future[None]:
        """Places a record; the future is done once the broker acknowledged its batch."""
        record = {"key": key, "value": value, "timestamp": None, "headers": headers}
        if self._open is None or self._open.append(**record) is None:
            if self._open is not None:
                assert self._open_done is not None
                self._full.append((self._open, self._open_done))
            self._open = self._producer.create_batch()
            self._open_done = _acknowledgement()
            self._open.append(**record)  # the first record always fits
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name=f"lane {self._partition}")
        assert self._open_done is not None
        return self._open_done

    async def _send(self) -> None:
        while self._full or self._open is not None:
            if self._full:
                batch, done = self._full.popleft()
            else:
                assert self._open_done is not None
                batch, done = self._open, self._open_done
                self._open = self._open_done = None
            try:
                # returns once the batch is queued: the previous one has left for the broker
                sent = await self._producer.send_batch(batch, self._topic, self._partition)
            except KafkaError as error:
                done.set_exception(BrokerError(f"Kafka did not take {self._topic}: {error}"))
                continue
            sent.add_done_callback(functools.partial(_settle, done, self._topic))


def _acknowledgement() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    # retrieved even when every caller waiting for it gave up (no "never retrieved" noise)
    done.add_done_callback(lambda f: f.cancelled() or f.exception())
    return done


def _settle(done: asyncio.Future[None], topic: str, sent: asyncio.Future[Any]) -> None:
    if done.done():
        return
    if sent.cancelled():
        done.set_exception(BrokerError(f"Kafka did not acknowledge {topic}: cancelled"))
    elif (error := sent.exception()) is not None:
        done.set_exception(BrokerError(f"Kafka did not acknowledge {topic}: {error}"))
    else:
        done.set_result(None)
