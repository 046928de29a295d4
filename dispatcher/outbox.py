"""The outbox relay and the scheduler, background tasks of every dispatcher replica.

The relay publishes a send job for each due, queued delivery whose job is not published
yet, then stamps it: claim a page (``FOR UPDATE SKIP LOCKED``, so replicas share the work),
produce it with ``acks=all``, stamp it, commit. A crash between produce and commit
republishes that page (at-least-once; workers ignore a job whose delivery is no longer
queued). It wakes on ``NOTIFY relaybook_outbox`` and polls once a second anyway, which
also picks up retries whose ``next_attempt_at`` came due.

The scheduler releases scheduled notices whose ``send_at`` has come, also with
``SKIP LOCKED``, so two replicas never release the same notice twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram

from dispatcher.store import OUTBOX_CHANNEL, Q
from relaybook.kafka import Producer
from relaybook.logs import get_logger
from relaybook.timestamps import now_iso

log = get_logger(__name__)

PAGE = 5000
POLL_S = 1.0
#: pages in flight at once per replica (SKIP LOCKED gives each its own rows): one claims
#: while another waits for the broker's acknowledgements and a third stamps
RELAY_LANES = 3

JOBS_PUBLISHED = Counter("relaybook_send_jobs_published_total", "Send jobs published by the relay")
RELAY_PAGE_SECONDS = Histogram(
    "relaybook_outbox_page_seconds", "Claim, publish and stamp one page of send jobs"
)
RELEASED = Counter("relaybook_notices_released_total", "Notices released", ["by"])


class Relay:
    def __init__(self, pool: asyncpg.Pool, producer: Producer, dsn: str) -> None:
        self._pool = pool
        self._producer = producer
        self._dsn = dsn
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncpg.Connection | None = None

    async def start(self) -> None:
        self._listener = await asyncpg.connect(self._dsn)
        await self._listener.add_listener(OUTBOX_CHANNEL, self._notified)
        self._tasks = [
            asyncio.create_task(
                self._forever(self.publish_due, "relay", self._wake), name=f"relay-{lane}"
            )
            for lane in range(RELAY_LANES)
        ]
        self._tasks.append(
            asyncio.create_task(
                self._forever(self.release_due, "scheduler", asyncio.Event()), name="scheduler"
            )
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            await self._listener.close()

    def _notified(self, *_args: Any) -> None:
        self._wake.set()

    async def _forever(self, step: Any, name: str, wake: asyncio.Event) -> None:
        """Runs ``step`` again at once while it has more to do, else on ``wake`` or after
        ``POLL_S``. A failing step (database or broker away) is logged and tried again."""
        while True:
            try:
                busy = await step()
            except (asyncpg.PostgresError, OSError, RuntimeError) as problem:
                log.warning("background step failed; retrying", step=name, error=str(problem))
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), POLL_S)
                wake.clear()

    async def publish_due(self) -> bool:
        """Publishes one page of due send jobs; True when a full page was found (more may
        be waiting)."""
        with RELAY_PAGE_SECONDS.time():
            async with self._pool.acquire() as connection, connection.transaction():
                rows = await connection.fetch(Q["claim_unpublished_jobs"], PAGE)
                if not rows:
                    return False
                now = now_iso()
                jobs = [
                    (
                        row["recipient_id"],
                        {
                            "schema": "send-job/v1",
                            "job_id": str(row["id"]),
                            "delivery_id": str(row["id"]),
                            "notice_id": str(row["notice_id"]),
                            "recipient_id": row["recipient_id"],
                            "channel": row["channel"],
                            "attempt": row["attempt"],
                            "resend_id": str(row["resend_id"]) if row["resend_id"] else None,
                            "created_at": now,
                        },
                    )
                    for row in rows
                ]
                await self._producer.send_many("send-jobs", jobs)
                await connection.execute(Q["mark_jobs_published"], [row["id"] for row in rows])
        JOBS_PUBLISHED.inc(len(rows))
        return len(rows) == PAGE

    async def release_due(self) -> bool:
        """Releases the scheduled notices whose time has come."""
        async with self._pool.acquire() as connection, connection.transaction():
            due = await connection.fetch(Q["due_scheduled_notices"])
            for row in due:
                await connection.execute(Q["release_notice"], row["id"])
                await connection.execute(Q["settle_notice"], row["id"])
            if due:
                await connection.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
        if due:
            RELEASED.labels("scheduler").inc(len(due))
            log.info("scheduled notices released", count=len(due))
        return False
