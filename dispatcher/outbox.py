"""The outbox relay and the scheduler, background tasks of every dispatcher replica.

A fan-out (a notice's, or a resend's) is written with its job pages, each a range of its
recipients (:func:`relaybook.notices.store.add_job_pages`). The relay claims a due page
(``FOR UPDATE SKIP LOCKED``, so replicas share the work), produces the send jobs of its
queued deliveries with ``acks=all``, stamps the page and commits: no row is written per
job. When no page is
due it does the same with a page of retries (deliveries a send worker put back with a
``next_attempt_at``), clearing their due time. A crash between produce and commit
republishes that page (at-least-once; workers ignore a job whose delivery is no longer
queued). It wakes on ``NOTIFY relaybook_outbox`` and polls once a second anyway, which
also picks up retries that came due.

The scheduler releases scheduled notices whose ``send_at`` has come, also with
``SKIP LOCKED``, so two replicas never release the same notice twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from prometheus_client import Counter, Gauge, Histogram

import schemas
from relaybook.notices.store import OUTBOX_CHANNEL
from relaybook.platform import faults, sql
from relaybook.platform.kafka import Headers, Producer, UnacknowledgedError
from relaybook.platform.logs import get_logger
from relaybook.platform.timestamps import now_iso

log = get_logger(__name__)

#: send jobs per page of retries (a fan-out's pages: relaybook.notices.store.PAGE_RECIPIENTS)
PAGE = 5000
POLL_S = 1.0
#: pages in flight at once per replica (SKIP LOCKED gives each its own rows): one claims
#: while another waits for the broker's acknowledgements and a third stamps
RELAY_LANES = 3
#: how long the jobs of a page the broker did not take are sent again, alone, before the
#: page is given up (a leader's election after a node is lost takes seconds)
PATIENCE_S = 60.0
RETRY_S = 1.0

JOBS_PUBLISHED = Counter("relaybook_send_jobs_published_total", "Send jobs published by the relay")
RELAY_PAGE_SECONDS = Histogram(
    "relaybook_outbox_page_seconds", "Claim, publish and stamp one page of send jobs"
)
RELEASED = Counter("relaybook_notices_released_total", "Notices released", ["by"])
#: how often the backlog's gauges are read again
WATCH_S = 5.0
BACKLOG = Gauge(
    "relaybook_outbox_backlog",
    "Work waiting to be published: send-job pages due, event-outbox rows, retries due",
    ["kind"],
)
BACKLOG_AGE = Gauge(
    "relaybook_outbox_oldest_age_seconds",
    "How long the oldest of each kind of waiting work has waited (0: none waits)",
    ["kind"],
)
QUEUED_AGE = Gauge(
    "relaybook_oldest_queued_delivery_age_seconds",
    "Age of the oldest delivery still queued of a notice being sent (0: none)",
)
Q = sql.load("dispatcher")
#: what the scheduler does to a notice: release it, settle it (the notices' own statements)
NOTICES = sql.load("relaybook.notices")
DELIVERIES = sql.load("relaybook.deliveries")
_BACKLOG = sql.load("dispatcher", "backlog.sql")["backlog"]


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
        self._tasks.append(asyncio.create_task(self._watch(), name="backlog"))

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
            except Exception as problem:  # noqa: BLE001 - whatever it is, the loop goes on
                faults.report_retried(log, "background step failed; retrying", problem, step=name)
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), POLL_S)
                wake.clear()

    async def publish_due(self) -> bool:
        """Publishes one due page of send jobs, a fan-out's or else retries; True when
        there may be more."""
        with RELAY_PAGE_SECONDS.time():
            async with self._pool.acquire() as connection, connection.transaction():
                page = await connection.fetchrow(Q["claim_job_page"])
                if page is not None:
                    rows = await connection.fetch(
                        Q["page_jobs"],
                        now_iso(),
                        page["notice_id"],
                        page["resend_id"],
                        page["first_recipient"],
                        page["last_recipient"],
                    )
                    await self._publish(rows)
                    await connection.execute(Q["mark_page_published"], page["id"])
                    return True
                rows = await connection.fetch(Q["claim_due_retries"], now_iso(), PAGE)
                if not rows:
                    return False
                await self._publish(rows)
                await connection.execute(
                    DELIVERIES["clear_retries_due"], [row["id"] for row in rows]
                )
        return len(rows) == PAGE

    async def _publish(self, rows: list[asyncpg.Record]) -> None:
        """Produces the send jobs of ``rows`` (SEND_JOB in queries.sql): the first is
        checked against the contract, the others are the same statement's.

        While a node is lost some partitions have no leader for a few seconds: the jobs
        the broker did not take are sent again, alone, for up to ``PATIENCE_S`` with the
        page still claimed; only past that is the page given up and published again
        whole (the jobs taken already then twice, which workers ignore)."""
        if not rows:
            return
        schemas.validate(orjson.loads(rows[0]["job"]))
        records: Sequence[tuple[str | None, bytes, Headers]] = [
            (
                row["key"],
                row["job"].encode(),
                self._producer.contracts.headers_for("send-jobs", row),
            )
            for row in rows
        ]
        deadline = time.monotonic() + PATIENCE_S
        while True:
            try:
                await self._producer.send_encoded("send-jobs", records)
                break
            except UnacknowledgedError as partly:
                if time.monotonic() >= deadline:
                    raise
                JOBS_PUBLISHED.inc(len(records) - len(partly.records))
                records = partly.records
                log.warning(
                    "send jobs not acknowledged; sending them again",
                    count=len(records),
                    error=str(partly),
                )
                await asyncio.sleep(RETRY_S)
        JOBS_PUBLISHED.inc(len(records))

    async def _watch(self) -> None:
        """Keeps the backlog's gauges current (a failed read keeps the last figures)."""
        while True:
            try:
                await self.measure_backlog()
            except Exception as problem:
                if not faults.is_transient(problem):  # an outage is said elsewhere already
                    log.exception("measuring the backlog failed", exc_info=problem)
            await asyncio.sleep(WATCH_S)

    async def measure_backlog(self) -> None:
        row = await self._pool.fetchrow(_BACKLOG)
        assert row is not None
        for kind, count, age in (
            ("send_job_pages", row["pages"], row["oldest_page_s"]),
            ("events", row["events"], row["oldest_event_s"]),
            ("retries", row["retries"], row["oldest_retry_s"]),
        ):
            BACKLOG.labels(kind).set(count)
            BACKLOG_AGE.labels(kind).set(max(0.0, float(age or 0)))
        QUEUED_AGE.set(max(0.0, float(row["oldest_queued_s"] or 0)))

    async def release_due(self) -> bool:
        """Releases the scheduled notices whose time has come."""
        async with self._pool.acquire() as connection, connection.transaction():
            due = await connection.fetch(Q["due_scheduled_notices"])
            for row in due:
                await connection.execute(NOTICES["release_notice"], row["id"])
                await connection.execute(NOTICES["settle_notice"], row["id"])
            if due:
                await connection.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
        if due:
            RELEASED.labels("scheduler").inc(len(due))
            log.info("scheduled notices released", count=len(due))
        return False
