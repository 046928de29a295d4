"""The transactional outbox for events: rows written in the same transaction as the state
they announce, published to Kafka afterwards, then stamped. Whoever writes rows publishes
them at once (:meth:`Outbox.flush`); a background loop catches up with any left behind
by a crash or a broker outage. Publishing is at-least-once: consumers dedupe on ids.

A message is checked against its contract when it is written, so a broken one fails the
transaction that wrote it instead of blocking the outbox later; what is stored is
published as it is. Published rows are deleted once older than the retention (their
events stay in Kafka, and a delivery's in the journal), so the table does not grow with
every message ever sent."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from relaybook.platform import faults
from relaybook.platform.database import Connection
from relaybook.platform.kafka import Contracts, Producer
from relaybook.platform.logs import get_logger

log = get_logger(__name__)

_CLAIM = """
SELECT id, topic, key, payload, payload->>'agency' AS agency FROM outbox
WHERE published_at IS NULL
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""
_STAMP = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])"
# Oldest first along the primary key, up to the first row still kept (rows are published
# about in id order): the scan stops there instead of reading the whole table when there
# is nothing to delete. Replicas pruning at once skip each other's rows.
_PRUNE = """
WITH kept AS (
    SELECT id FROM outbox
    WHERE published_at IS NULL OR published_at >= now() - $1::interval
    ORDER BY id
    LIMIT 1
)
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE published_at < now() - $1::interval
      AND id < coalesce((SELECT id FROM kept), 9223372036854775807)
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED)
"""
#: rows deleted per statement, and how often the catch-up loop prunes
PRUNE_PAGE = 10_000
PRUNE_EVERY_S = 60.0
_INSERT = """
INSERT INTO outbox (topic, key, payload)
SELECT $1, key, payload::jsonb FROM unnest($2::text[], $3::text[]) AS m (key, payload)
"""


async def add(
    connection: Connection,
    topic: str,
    messages: Sequence[tuple[str | None, dict[str, Any]]],
    *,
    contracts: Contracts,
) -> None:
    """Adds messages for ``topic`` (unprefixed) inside the caller's transaction; raises
    the contracts' ``ValueError`` for one that breaks its contract."""
    for _, message in messages:
        contracts.validate(message)
    if messages:
        await connection.execute(
            _INSERT,
            topic,
            [key for key, _ in messages],
            [orjson.dumps(m).decode() for _, m in messages],
        )


class Outbox:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: Producer,
        page: int = 1000,
        retention: dt.timedelta | None = None,
    ) -> None:
        """``retention``: how long a published row is kept; None keeps them all."""
        self._pool = pool
        self._producer = producer
        self._page = page
        self._retention = retention
        self._task: asyncio.Task[None] | None = None

    async def flush(self) -> int:
        """Publishes what is pending, page by page; returns how many were published."""
        total = 0
        while True:
            async with self._pool.acquire() as connection, connection.transaction():
                rows = await connection.fetch(_CLAIM, self._page)
                if not rows:
                    return total
                by_topic: dict[str, list[tuple[str | None, bytes, list[tuple[str, bytes]]]]] = {}
                for row in rows:
                    by_topic.setdefault(row["topic"], []).append(
                        (
                            row["key"],
                            row["payload"].encode(),
                            self._producer.contracts.headers_for(row["topic"], row),
                        )
                    )
                for topic, records in by_topic.items():
                    await self._producer.send_encoded(topic, records)
                await connection.execute(_STAMP, [row["id"] for row in rows])
            total += len(rows)

    async def prune(self) -> int:
        """Deletes the published rows older than the retention; returns how many."""
        if self._retention is None:
            return 0
        total = 0
        while True:
            status = await self._pool.execute(_PRUNE, self._retention, PRUNE_PAGE)
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < PRUNE_PAGE:
                return total

    async def start(self, every_s: float = 2.0) -> None:
        async def catch_up() -> None:
            pruned_at = time.monotonic()
            while True:
                await asyncio.sleep(every_s)
                try:
                    await self.flush()
                    if time.monotonic() - pruned_at >= PRUNE_EVERY_S:
                        pruned_at = time.monotonic()
                        await self.prune()
                except Exception as problem:  # noqa: BLE001 - whatever it is, the loop goes on
                    faults.report_retried(log, "outbox catch-up failed; retrying", problem)

        self._task = asyncio.create_task(catch_up(), name="outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
