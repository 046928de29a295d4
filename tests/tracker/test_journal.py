"""The tracker's batches against the real database: each event stored once, projected
once, correlated without our id when the provider dropped it, notices settled; a batch
that fails half-way leaves nothing behind and counts once when it comes again."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest

from relaybook.notices.request import parse_notice
from relaybook.notices.store import NoticeStore
from relaybook.platform.kafka import Record
from tests.support import notice, until, waiting_on_locks
from tracker import journal as journal_module
from tracker.journal import DELIVERIES, Journal

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def now() -> None:
    """Event times close to the test's own rows, whenever the test runs."""
    global NOW  # noqa: PLW0603 - read by the helpers below
    NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
async def sent(pool: asyncpg.Pool) -> dict[str, Any]:
    """A 3-owner email notice whose emails the provider accepted: ``{recipient: id}`` of
    the deliveries, and the notice id."""
    body = notice(3)
    del body["sms"]
    _, answer = await NoticeStore(pool).create(parse_notice(body, NOW), "test", None)
    await pool.execute(
        "UPDATE deliveries SET status = 'sent', sent_at = $2, provider_message_id = 'm' "
        "WHERE notice_id = $1",
        uuid.UUID(answer["id"]),
        NOW,
    )
    rows = await pool.fetch("SELECT id, recipient_id FROM deliveries ORDER BY recipient_id")
    return {"notice": answer["id"], **{row["recipient_id"]: row["id"] for row in rows}}


def event(kind: str, delivery: uuid.UUID | None, seconds: int = 1, **fields: Any) -> Record:
    stamp = (NOW + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    value = {
        "schema": "delivery-event/v1",
        "event_id": f"sendgrid:{uuid.uuid4().hex}",
        "type": kind,
        "channel": "email",
        "provider": "sendgrid",
        "occurred_at": stamp,
        "received_at": stamp,
        "delivery_id": str(delivery) if delivery else None,
        "provider_message_id": None,
        "address": None,
        "reason": None,
        "provider_code": None,
        **fields,
    }
    return Record("delivery-events", 0, 0, value["delivery_id"], value)


async def journal_row(pool: asyncpg.Pool, delivery: uuid.UUID) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM deliveries WHERE id = $1", delivery)
    assert row is not None
    return row


async def test_a_batch_seen_twice_is_stored_and_projected_once(
    pool: asyncpg.Pool, sent: dict[str, Any]
) -> None:
    owner = sent["owner-0"]
    batch = [event("delivered", owner, 1), event("opened", owner, 2, machine_open=False)]
    batch.append(batch[0])  # a duplicate inside the batch too
    tracker = Journal(pool)

    await tracker.handle(batch)
    await tracker.handle(batch)  # redelivered: the offsets were not committed

    assert await pool.fetchval("SELECT count(*) FROM delivery_events") == 2
    row = await journal_row(pool, owner)
    assert row["status"] == "opened"
    assert row["delivered_at"] == NOW + dt.timedelta(seconds=1)


async def test_a_batch_failing_half_way_leaves_nothing_and_counts_once_when_retried(
    pool: asyncpg.Pool, sent: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = sent["owner-1"]
    batch = [event("bounced", owner, reason="550 no such user", provider_code="5.1.1")]
    real_project = journal_module._project

    async def crash(*_args: Any) -> set[uuid.UUID]:
        raise ConnectionError("the database went away mid-batch")

    monkeypatch.setattr(journal_module, "_project", crash)
    with pytest.raises(ConnectionError):
        await Journal(pool).handle(batch)
    assert await pool.fetchval("SELECT count(*) FROM delivery_events") == 0
    assert (await journal_row(pool, owner))["status"] == "sent"

    monkeypatch.setattr(journal_module, "_project", real_project)
    await Journal(pool).handle(batch)
    row = await journal_row(pool, owner)
    assert (row["status"], row["reason"], row["provider_code"]) == (
        "failed",
        "550 no such user",
        "5.1.1",
    )
    assert await pool.fetchval("SELECT count(*) FROM delivery_events") == 1


async def test_an_asynchronous_bounce_is_matched_on_the_address(
    pool: asyncpg.Pool, sent: dict[str, Any]
) -> None:
    bounce = event(
        "bounced", None, address="OWNER2@example.org", reason="550 gone", provider_code="5.1.1"
    )
    stranger = event("bounced", None, address="nobody@example.org")

    await Journal(pool).handle([bounce, stranger])

    assert (await journal_row(pool, sent["owner-2"]))["status"] == "failed"
    stored = await pool.fetch("SELECT event_id, delivery_id FROM delivery_events")
    matched = {row["event_id"]: row["delivery_id"] for row in stored}
    assert matched[bounce.value["event_id"]] == sent["owner-2"]
    assert matched[stranger.value["event_id"]] is None  # kept, for the bounce policy


async def test_an_asynchronous_bounce_goes_to_the_latest_message_sent_not_one_still_queued(
    pool: asyncpg.Pool, sent: dict[str, Any]
) -> None:
    """Only a message the provider took can bounce: a newer notice to the same address,
    still queued (or skipped), is not the one the bounce is about."""
    body = notice(3, send=False)
    del body["sms"]
    await NoticeStore(pool).create(parse_notice(body, NOW), "test", None)
    bounce = event("bounced", None, address="owner1@example.org", reason="550 gone")

    await Journal(pool).handle([bounce])

    matched = await pool.fetchval("SELECT delivery_id FROM delivery_events")
    assert matched == sent["owner-1"]
    assert (await journal_row(pool, sent["owner-1"]))["status"] == "failed"


async def test_the_notice_settles_once_nothing_is_queued(
    pool: asyncpg.Pool, sent: dict[str, Any]
) -> None:
    notice_id = uuid.UUID(sent["notice"])
    await pool.execute("UPDATE deliveries SET status = 'queued' WHERE id = $1", sent["owner-0"])
    tracker = Journal(pool)
    await tracker.handle([event("delivered", sent["owner-1"])])
    status = "SELECT status FROM notices WHERE id = $1"
    assert await pool.fetchval(status, notice_id) == "sending"  # owner-0 still queued

    # the worker records its outcome (relaybook.deliveries: record_accepted), then
    # announces it: the tracker settles the notice
    await pool.execute(
        DELIVERIES["record_accepted"],
        [sent["owner-0"]],
        [1],
        [NOW],
        ["owner0@example.org"],
        [None],
        [None],
        [None],
        ["m0"],
        "sendgrid",
    )
    accepted = event("accepted", sent["owner-0"])
    accepted.value["event_id"] = f"relaybook:{sent['owner-0']}:1:accepted"
    await tracker.handle([accepted])
    assert await pool.fetchval(status, notice_id) == "sent"

    await tracker.handle([event("bounced", sent["owner-2"], 5)])  # a late bounce
    assert await pool.fetchval(status, notice_id) == "partially_failed"


async def test_two_trackers_settling_one_notice_at_once_leave_it_settled(
    pool: asyncpg.Pool, sent: dict[str, Any]
) -> None:
    """Two replicas each record the last outcome of one message of the same notice, in
    transactions that overlap: each sees the other's message still queued when it
    settles. The later settler must wait for the earlier and see its message, or the
    notice would stay 'sending' for good."""
    notice_id = uuid.UUID(sent["notice"])
    queued = [sent["owner-0"], sent["owner-1"]]
    await pool.execute("UPDATE deliveries SET status = 'queued' WHERE id = ANY($1)", queued)
    sent_now = "UPDATE deliveries SET status = 'sent' WHERE id = $1"
    settle = "SELECT settle_notices($1::uuid[])"
    async with pool.acquire() as first, pool.acquire() as second:
        one, two = first.transaction(), second.transaction()
        await one.start()
        await two.start()
        await first.execute(sent_now, queued[0])
        await second.execute(sent_now, queued[1])
        await first.execute(settle, [notice_id])
        late = asyncio.create_task(second.execute(settle, [notice_id]))

        async def waits_for_the_first() -> bool:
            return second.get_server_pid() in await waiting_on_locks(pool)

        await until(waits_for_the_first, within=10)  # without a lock it never would
        assert not late.done()
        await one.commit()
        await late
        await two.commit()
    assert await pool.fetchval("SELECT status FROM notices WHERE id = $1", notice_id) == "sent"
