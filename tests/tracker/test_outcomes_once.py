"""Each outcome is written once (issue 34): the worker records its own (sent, failed,
retry, skipped) in the transaction that sent it; the tracker stores the worker's event in
the journal and settles its notice, but does not write the delivery a second time. The
providers' outcomes are the tracker's to write."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg

from relaybook.notices.request import parse_notice
from relaybook.notices.store import NoticeStore
from relaybook.platform.kafka import Record
from relaybook.platform.timestamps import iso
from tests.support import notice
from tracker.journal import DELIVERIES, Journal


async def queued(pool: asyncpg.Pool) -> tuple[uuid.UUID, uuid.UUID]:
    """A sending email notice to one owner: its delivery, queued, and the notice."""
    body = notice(1)
    del body["sms"]
    _, answer = await NoticeStore(pool).create(
        parse_notice(body, dt.datetime.now(dt.UTC)), "test", None
    )
    notice_id = uuid.UUID(answer["id"])
    delivery = await pool.fetchval("SELECT id FROM deliveries WHERE notice_id = $1", notice_id)
    return delivery, notice_id


def worker_event(outcome: asyncpg.Record, **changed: Any) -> Record:
    """The event a worker announces for an outcome it recorded (send_worker.worker)."""
    value = {
        "schema": "delivery-event/v1",
        "event_id": f"relaybook:{outcome['id']}:{outcome['send_attempts']}:{outcome['outcome']}",
        "type": outcome["outcome"],
        "channel": outcome["channel"],
        "provider": "relaybook",
        "occurred_at": iso(outcome["outcome_at"]),
        "received_at": iso(outcome["outcome_at"]),
        "delivery_id": str(outcome["id"]),
        "provider_message_id": outcome["provider_message_id"],
        "address": outcome["sent_to"],
        "reason": outcome["reason"],
        "provider_code": outcome["provider_code"],
        "attempt": outcome["send_attempts"],
        **changed,
    }
    return Record("delivery-events", 0, 0, value["delivery_id"], value)


async def version(pool: asyncpg.Pool, delivery: uuid.UUID) -> tuple[str, dict[str, Any]]:
    """The row version (xmin: a new one for every write) and the row."""
    row = await pool.fetchrow("SELECT xmin::text AS v, * FROM deliveries WHERE id = $1", delivery)
    assert row is not None
    return row["v"], dict(row)


async def record(pool: asyncpg.Pool, delivery: uuid.UUID, kind: str) -> asyncpg.Record:
    """The worker's transition for an outcome, as the worker runs it."""
    now = dt.datetime.now(dt.UTC)
    if kind == "accepted":
        [outcome] = await pool.fetch(
            DELIVERIES["record_accepted"],
            [delivery],
            [1],
            [now],
            ["owner0@example.org"],
            [None],
            [None],
            [None],
            ["msg-1"],
            "sendgrid",
        )
    else:
        [outcome] = await pool.fetch(
            DELIVERIES["record_failed"],
            [delivery],
            [1],
            [now],
            ["owner0@example.org"],
            [None],
            [None],
            [None],
            ["invalid address"],
            ["400"],
            "sendgrid",
        )
    return outcome


async def test_the_tracker_does_not_write_again_an_outcome_the_worker_recorded(
    pool: asyncpg.Pool,
) -> None:
    delivery, notice_id = await queued(pool)
    outcome = await record(pool, delivery, "accepted")
    recorded, row = await version(pool, delivery)
    event = worker_event(outcome)
    await Journal(pool).handle([event])
    assert await version(pool, delivery) == (recorded, row)  # the same row version
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM delivery_events WHERE event_id = $1", event.value["event_id"]
        )
        == 1
    )  # the journal keeps it
    assert await pool.fetchval("SELECT status FROM notices WHERE id = $1", notice_id) == "sent"


async def test_a_worker_event_that_disagrees_with_its_row_changes_nothing(
    pool: asyncpg.Pool,
) -> None:
    """Not projected at all, not merely projected to the same values: the row is the
    worker's record, whatever its event says."""
    delivery, notice_id = await queued(pool)
    outcome = await record(pool, delivery, "failed")
    recorded, row = await version(pool, delivery)
    earlier = iso(outcome["outcome_at"] - dt.timedelta(hours=1))
    await Journal(pool).handle([worker_event(outcome, occurred_at=earlier, reason="other")])
    assert await version(pool, delivery) == (recorded, row)
    assert await pool.fetchval("SELECT status FROM notices WHERE id = $1", notice_id) == "failed"


async def test_a_providers_outcome_is_written_by_the_tracker(pool: asyncpg.Pool) -> None:
    delivery, _ = await queued(pool)
    outcome = await record(pool, delivery, "accepted")
    recorded, _ = await version(pool, delivery)
    delivered = worker_event(outcome).value | {
        "event_id": f"sendgrid:{uuid.uuid4().hex}",
        "type": "delivered",
        "provider": "sendgrid",
    }
    await Journal(pool).handle([Record("delivery-events", 0, 0, str(delivery), delivered)])
    changed, row = await version(pool, delivery)
    assert changed != recorded
    assert (row["status"], row["delivered_at"]) == ("delivered", outcome["outcome_at"])
