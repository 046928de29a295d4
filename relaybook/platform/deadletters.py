"""Dead letters: messages a consumer could not handle, set aside so the rest flows.

A message lands here when it breaks its contract, or when handling it fails for good
(:func:`relaybook.platform.faults.is_transient` says no) once the consumer has isolated it from
its batch. It is kept as it was consumed (bytes, key, headers, where it came from) in the
``dead_letters`` table and also published to the ``dead-letters`` topic with its origin
in the headers. ``relaybook dead-letters list`` shows them; ``relaybook dead-letters
replay`` publishes them again to their topic once the cause is fixed (consumers are
idempotent, so a replay never counts anything twice).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
import orjson
from prometheus_client import Counter

from relaybook.platform.logs import get_logger

log = get_logger(__name__)

DEAD_LETTERED = Counter(
    "relaybook_dead_letters_total",
    "Messages a consumer set aside, by source topic and reason",
    ["topic", "reason"],
)

_INSERT = """
INSERT INTO dead_letters (source_topic, source_partition, source_offset, consumer_group,
                          reason, error, key, value, headers)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
ON CONFLICT (consumer_group, source_topic, source_partition, source_offset) DO NOTHING
RETURNING id
"""
_LIST = """
SELECT id, source_topic, source_partition, source_offset, consumer_group, reason, error,
       key, value, headers, created_at, replayed_at, replayed_by
FROM dead_letters
WHERE ($1 OR replayed_at IS NULL) AND (cardinality($2::bigint[]) = 0 OR id = ANY($2))
ORDER BY id
LIMIT $3
"""
_MARK_REPLAYED = """
UPDATE dead_letters SET replayed_at = now(), replayed_by = $2 WHERE id = ANY($1::bigint[])
"""
#: the longest error text kept (a traceback's last line is enough to act on)
MAX_ERROR = 2000


class Publisher(Protocol):
    """What dead letters are published with (:class:`relaybook.platform.kafka.Producer`)."""

    async def send_raw(
        self, full_topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None: ...


@dataclasses.dataclass(frozen=True)
class Letter:
    """One dead letter as stored."""

    id: int
    source_topic: str
    source_partition: int
    source_offset: int
    consumer_group: str
    reason: str
    error: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    created_at: dt.datetime
    replayed_at: dt.datetime | None
    replayed_by: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Letter:
        headers = [(name, base64.b64decode(value)) for name, value in orjson.loads(row["headers"])]
        return cls(**{**dict(row), "headers": headers})


class DeadLetters:
    """Records dead letters of one process's consumers, lists and replays them."""

    def __init__(
        self, pool: asyncpg.Pool, producer: Publisher | None, dead_letters_topic: str
    ) -> None:
        """``producer``: None to list only."""
        self._pool = pool
        self._producer = producer
        self._topic = dead_letters_topic

    async def record(self, message: Any, group: str, reason: str, error: str) -> None:
        """Sets ``message`` (an aiokafka ``ConsumerRecord``) aside: stored, then published
        to the dead-letters topic. Raises what the database or the broker raised, so the
        batch is consumed again and nothing is lost."""
        # the text PostgreSQL and the headers can hold: no NUL, no lone surrogate
        error = error[:MAX_ERROR].encode("utf-8", "backslashreplace").decode()
        error = error.replace("\x00", "\\x00")
        headers = [(name, value or b"") for name, value in message.headers or ()]
        stored = await self._pool.fetchval(
            _INSERT,
            message.topic,
            message.partition,
            message.offset,
            group,
            reason,
            error,
            message.key,
            message.value or b"",
            orjson.dumps(
                [[name, base64.b64encode(value).decode()] for name, value in headers]
            ).decode(),
        )
        assert self._producer is not None
        await self._producer.send_raw(
            self._topic,
            message.value or b"",
            key=message.key,
            headers=[
                *headers,
                ("source_topic", message.topic.encode()),
                ("source_partition", str(message.partition).encode()),
                ("source_offset", str(message.offset).encode()),
                ("consumer_group", group.encode()),
                ("reason", reason.encode()),
                ("error", error.encode()),
            ],
        )
        if stored is not None:  # a batch consumed again counts its dead letters once
            DEAD_LETTERED.labels(message.topic, reason).inc()
        log.warning(
            "message set aside in the dead letters",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            group=group,
            reason=reason,
            error=error[:300],
        )

    async def list(
        self, *, ids: Sequence[int] = (), include_replayed: bool = False, limit: int = 100
    ) -> list[Letter]:
        """The dead letters, oldest first: those not replayed yet, unless
        ``include_replayed``; only ``ids`` when given."""
        rows = await self._pool.fetch(_LIST, include_replayed, list(ids), limit)
        return [Letter.from_row(row) for row in rows]

    async def replay(self, letters: Sequence[Letter], by: str) -> int:
        """Publishes ``letters`` again to the topics they came from, as they were, and
        marks them replayed; returns how many."""
        assert self._producer is not None
        for letter in letters:
            await self._producer.send_raw(
                letter.source_topic, letter.value, key=letter.key, headers=letter.headers
            )
        await self._pool.execute(_MARK_REPLAYED, [letter.id for letter in letters], by)
        return len(letters)
