"""The outbox relay: every queued delivery's send job published, keyed by recipient, in
pages shared by replicas; a crash before a page is stamped republishes that page only;
a draft's pages wait for its release; retries that came due are published once."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import Counter
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

import schemas
from dispatcher.outbox import RELAY_LANES, Relay
from relaybook.notices.request import parse_notice
from relaybook.notices.store import PAGE_RECIPIENTS, NoticeStore
from relaybook.platform.kafka import Producer
from relaybook.tooling.settings import Settings
from tests.support import notice, read_topic

#: a fan-out of three pages; the last one's recipients have no phone (skipped texts)
RECIPIENTS = 2 * PAGE_RECIPIENTS + 100


def relay(pool: asyncpg.Pool, producer: Producer, settings: Settings) -> Relay:
    assert settings.database_url is not None
    return Relay(pool, producer, settings.database_url)


async def create(pool: asyncpg.Pool, **changes: Any) -> uuid.UUID:
    body = notice(RECIPIENTS, **changes)
    for person in body["recipients"][2 * PAGE_RECIPIENTS :]:
        person["phone"] = None
    request = parse_notice(json.loads(json.dumps(body)), dt.datetime.now(dt.UTC))
    _, answer = await NoticeStore(pool).create(request, "test", None)
    return uuid.UUID(answer["id"])


async def drain(*relays: Relay) -> None:
    """Runs the relays' steps side by side until none finds anything to do."""
    while True:
        busy = [await r.publish_due() for r in relays]
        if not any(busy):
            return


async def queued(db: asyncpg.Connection) -> dict[str, str]:
    rows = await db.fetch("SELECT id, recipient_id FROM deliveries WHERE status = 'queued'")
    return {str(row["id"]): row["recipient_id"] for row in rows}


async def jobs(settings: Settings, count: int) -> list[tuple[str | None, dict[str, Any]]]:
    return await read_topic(settings, "send-jobs", count, within=30)


async def published(settings: Settings, count: int) -> Counter[str]:
    """How many times each delivery's job was published (at least ``count`` jobs), each
    checked against the contract (the relay checks one a page: PostgreSQL writes them)."""
    found = await jobs(settings, count)
    for _, job in found:
        schemas.validate(job)
    return Counter(job["delivery_id"] for _, job in found)


async def test_each_queued_delivery_is_published_once_keyed_by_its_recipient(
    pool: asyncpg.Pool, producer: Producer, settings: Settings, db: asyncpg.Connection
) -> None:
    notice_id = await create(pool)
    expected = await queued(db)
    assert len(expected) == 2 * RECIPIENTS - 100  # the phoneless recipients' texts: skipped
    assert await db.fetchval("SELECT count(*) FROM job_pages") == 3
    await drain(relay(pool, producer, settings))
    published = await jobs(settings, len(expected))
    assert Counter(job["delivery_id"] for _, job in published) == Counter(expected.keys())
    assert all(key == expected[job["delivery_id"]] for key, job in published)
    assert {job["notice_id"] for _, job in published} == {str(notice_id)}
    assert await db.fetchval("SELECT count(*) FROM job_pages WHERE published_at IS NULL") == 0


async def test_two_replicas_share_the_pages_and_publish_each_job_once(
    pool: asyncpg.Pool, producer: Producer, settings: Settings, db: asyncpg.Connection
) -> None:
    await create(pool)
    expected = await queued(db)
    await drain(relay(pool, producer, settings), relay(pool, producer, settings))
    assert await published(settings, len(expected)) == Counter(expected.keys())


async def test_a_crash_before_a_page_is_stamped_republishes_that_page_only(
    pool: asyncpg.Pool, producer: Producer, settings: Settings, db: asyncpg.Connection
) -> None:
    await create(pool)
    expected = await queued(db)
    crashing = relay(pool, producer, settings)
    published_before_crash: list[str] = []

    async def publish_then_crash(rows: list[asyncpg.Record]) -> None:
        await Relay._publish(crashing, rows)
        published_before_crash.extend(json.loads(row["job"])["delivery_id"] for row in rows)
        raise ConnectionResetError("the relay died before stamping the page")

    crashing._publish = publish_then_crash  # type: ignore[method-assign]
    with pytest.raises(ConnectionResetError):
        await crashing.publish_due()
    assert await db.fetchval("SELECT count(*) FROM job_pages WHERE published_at IS NULL") == 3
    await drain(relay(pool, producer, settings))
    twice = Counter(published_before_crash)
    total = len(expected) + len(published_before_crash)
    assert await published(settings, total) == Counter(expected.keys()) + twice
    assert len(published_before_crash) == 2 * PAGE_RECIPIENTS  # one page, nothing more


async def test_a_drafts_jobs_wait_for_its_release(
    pool: asyncpg.Pool, producer: Producer, settings: Settings, db: asyncpg.Connection
) -> None:
    notice_id = await create(pool, send=False)
    assert not await relay(pool, producer, settings).publish_due()
    assert await NoticeStore(pool).release(notice_id)
    await drain(relay(pool, producer, settings))
    expected = await queued(db)
    assert await published(settings, len(expected)) == Counter(expected.keys())


async def test_a_retry_is_published_once_when_it_comes_due(
    pool: asyncpg.Pool, producer: Producer, settings: Settings, db: asyncpg.Connection
) -> None:
    await create(pool)
    expected = await queued(db)
    await drain(relay(pool, producer, settings))
    assert len(await jobs(settings, len(expected))) == len(expected)
    due, later = list(expected)[:2]
    for delivery, delay in ((due, dt.timedelta(seconds=-1)), (later, dt.timedelta(hours=1))):
        await db.execute(
            "UPDATE deliveries SET next_attempt_at = now() + $2::interval WHERE id = $1::uuid",
            delivery,
            delay,
        )
    await drain(relay(pool, producer, settings))
    retried = Counter(expected.keys()) + Counter([due])
    assert await published(settings, len(expected) + 1) == retried
    assert (
        await db.fetchval("SELECT next_attempt_at FROM deliveries WHERE id = $1::uuid", due) is None
    )


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_the_backlog_gauges_say_what_waits_and_for_how_long(
    pool: asyncpg.Pool, producer: Producer, settings: Settings, db: asyncpg.Connection
) -> None:
    draft = await create(pool, send=False)
    watcher = relay(pool, producer, settings)
    await watcher.measure_backlog()
    assert gauge("relaybook_outbox_backlog", kind="send_job_pages") == 0, "a draft waits apart"
    assert gauge("relaybook_oldest_queued_delivery_age_seconds") == 0
    assert await NoticeStore(pool).release(draft)
    await db.execute("UPDATE job_pages SET created_at = now() - interval '1 minute'")
    await db.execute("UPDATE deliveries SET created_at = now() - interval '1 minute'")
    await db.execute("UPDATE notices SET released_at = now() - interval '30 seconds'")
    await watcher.measure_backlog()
    assert gauge("relaybook_outbox_backlog", kind="send_job_pages") == 3
    assert 59 < (gauge("relaybook_outbox_oldest_age_seconds", kind="send_job_pages") or 0) < 90
    assert 29 < (gauge("relaybook_oldest_queued_delivery_age_seconds") or 0) < 60
    await drain(watcher)
    some = await db.fetchval("SELECT id FROM deliveries WHERE status = 'queued' LIMIT 1")
    await db.execute(
        "UPDATE deliveries SET next_attempt_at = now() - interval '10 seconds' WHERE id = $1",
        some,
    )
    await watcher.measure_backlog()
    assert gauge("relaybook_outbox_backlog", kind="send_job_pages") == 0
    assert gauge("relaybook_outbox_backlog", kind="retries") == 1
    assert 9 < (gauge("relaybook_outbox_oldest_age_seconds", kind="retries") or 0) < 40


async def test_a_step_failing_for_an_unexpected_reason_is_logged_and_tried_again(
    pool: asyncpg.Pool,
    producer: Producer,
    settings: Settings,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not only a server away: whatever a step raises (a bug, a client library's surprise)
    is logged with its traceback and the step runs again. A relay loop that ended on it
    published nothing more, in silence, until the process restarted."""
    await create(pool)
    expected = await queued(db)
    running = relay(pool, producer, settings)
    publish_due = running.publish_due
    calls = 0

    async def failing_first() -> bool:
        nonlocal calls
        calls += 1
        if calls <= RELAY_LANES:  # every lane's first step
            raise ZeroDivisionError("integer division or modulo by zero")
        return await publish_due()

    monkeypatch.setattr(running, "publish_due", failing_first)
    with capture_logs() as logged:
        await running.start()
        try:
            assert await published(settings, len(expected)) == Counter(expected.keys())
        finally:
            await running.stop()
    failed = [entry for entry in logged if entry["event"] == "background step failed; retrying"]
    assert len(failed) == RELAY_LANES
    assert {entry["log_level"] for entry in failed} == {"error"}
