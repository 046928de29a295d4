"""The status precedence, table-driven, as the tracker applies it
(relaybook/deliveries/queries.sql, ``project_events``, one statement a batch) after the
worker recorded its own outcomes (``record_accepted``, ``record_failed``, ``skip``):
whatever order events come in, in one batch or several, and however often, a journal
row ends the same, and never climbs down."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import asyncpg
import pytest

from relaybook.notices.request import parse_notice
from relaybook.notices.store import NoticeStore
from tests.support import notice
from tracker.journal import DELIVERIES, _project

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
FIELDS = (
    "status",
    "sent_at",
    "delivered_at",
    "opened_at",
    "clicked_at",
    "failed_at",
    "reason",
    "provider_code",
)


def event(kind: str, provider: str = "sendgrid", **fields: Any) -> dict[str, Any]:
    """``provider="relaybook"``: a send outcome reported by the worker."""
    source = "relaybook:d:1" if provider == "relaybook" else provider
    return {
        "event_id": f"{source}:{kind}",
        "type": kind,
        "provider": provider,
        "reason": None,
        "provider_code": None,
        **fields,
    }


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def row(status: str, **fields: Any) -> dict[str, Any]:
    return dict.fromkeys(FIELDS) | {"status": status} | fields


BOUNCE = event("bounced", reason="550 5.1.1 no such user", provider_code="5.1.1")


@pytest.fixture
async def delivery(pool: asyncpg.Pool) -> tuple[str, uuid.UUID]:
    """One email delivery, and its notice."""
    body = notice(1)
    del body["sms"]
    _, answer = await NoticeStore(pool).create(
        parse_notice(body, dt.datetime.now(dt.UTC)), "test", None
    )
    notice_id = uuid.UUID(answer["id"])
    found = await pool.fetchval("SELECT id FROM deliveries WHERE notice_id = $1", notice_id)
    return str(found), notice_id


class JournalRow:
    """A journal row, set as a test says, and batches of events applied to it."""

    def __init__(self, pool: asyncpg.Pool, delivery: str) -> None:
        self.pool, self.delivery = pool, delivery
        self.settled: list[uuid.UUID] = []

    async def set(self, start: dict[str, Any]) -> None:
        if start["status"] == "skipped":
            start = start | {"reason": start["reason"] or "opted_out"}
        await self.pool.execute(
            "UPDATE deliveries SET status = $2, sent_at = $3, delivered_at = $4, "
            "opened_at = $5, clicked_at = $6, failed_at = $7, reason = $8, provider_code = $9 "
            "WHERE id = $1::uuid",
            self.delivery,
            *(start[name] for name in FIELDS),
        )

    async def recorded_by_the_worker(self, outcome: dict[str, Any], when: dt.datetime) -> None:
        """A worker's outcome, recorded as the worker does before announcing it (its
        transition), at ``when`` instead of the clock's now."""
        one = [uuid.UUID(self.delivery)]
        started = [[1], [when], ["a@example.org"], [None], [None], [None]]
        if outcome["type"] == "accepted":
            await self.pool.execute(DELIVERIES["record_accepted"], one, *started, ["m"], "sendgrid")
        elif outcome["type"] == "failed":
            await self.pool.execute(
                DELIVERIES["record_failed"],
                one,
                *started,
                [outcome["reason"] or outcome["type"]],
                [outcome["provider_code"]],
                "twilio",
            )
        else:
            await self.pool.execute(DELIVERIES["skip"], one, ["opted_out"])
        await self.pool.execute(
            "UPDATE deliveries"
            " SET sent_at = CASE WHEN sent_at IS NOT NULL THEN $2::timestamptz END,"
            " failed_at = CASE WHEN failed_at IS NOT NULL THEN $2::timestamptz END"
            " WHERE id = $1",
            one[0],
            when,
        )

    async def apply(self, *batch: tuple[dict[str, Any], dt.datetime]) -> dict[str, Any]:
        """The row after one batch of ``(event, when)``; a worker's outcome is recorded
        first, by the worker."""
        for incoming, when in batch:
            if incoming["provider"] == "relaybook":
                await self.recorded_by_the_worker(incoming, when)
        fresh = [incoming | {"occurred_at": when.isoformat()} for incoming, when in batch]
        async with self.pool.acquire() as connection, connection.transaction():
            self.settled = await _project(
                connection, fresh, {e["event_id"]: self.delivery for e in fresh}
            )
        found = await self.pool.fetchrow(
            f"SELECT {', '.join(FIELDS)} FROM deliveries WHERE id = $1::uuid",  # noqa: S608
            self.delivery,
        )
        assert found is not None
        return dict(found)


@pytest.fixture
def journal(pool: asyncpg.Pool, delivery: tuple[str, uuid.UUID]) -> JournalRow:
    return JournalRow(pool, delivery[0])


@pytest.mark.parametrize(
    ("start", "incoming", "status"),
    [
        ("sent", event("processed"), "sent"),
        ("sent", event("delivered"), "delivered"),
        ("sent", event("opened", machine_open=False), "opened"),
        ("sent", event("opened", machine_open=True), "delivered"),
        ("sent", event("clicked"), "clicked"),
        ("sent", BOUNCE, "failed"),
        ("sent", event("dropped", reason="Bounced Address"), "failed"),
        ("sent", event("deferred"), "sent"),
        ("sent", event("spam_reported"), "delivered"),
        ("sent", event("unsubscribed"), "sent"),
        ("sent", event("a_type_nobody_knows"), "sent"),
        ("sent", event("delivered", "twilio"), "delivered"),
        ("sent", event("undelivered", "twilio", provider_code="30005"), "failed"),
        ("sent", event("read", "twilio"), "opened"),
        ("queued", event("accepted", "relaybook"), "sent"),
        ("queued", event("failed", "relaybook"), "failed"),
        ("delivered", event("processed"), "delivered"),
        ("opened", event("delivered"), "opened"),
        ("clicked", event("opened", machine_open=False), "clicked"),
        ("delivered", BOUNCE, "failed"),
        ("failed", event("delivered"), "failed"),
        ("failed", event("deferred"), "failed"),
        ("failed", event("clicked"), "failed"),
        ("skipped", event("delivered"), "skipped"),
    ],
)
async def test_one_event_moves_the_status_only_upwards(
    journal: JournalRow, start: str, incoming: dict[str, Any], status: str
) -> None:
    await journal.set(row(start))
    assert (await journal.apply((incoming, T0)))["status"] == status


async def test_the_same_events_in_any_order_and_repeated_give_the_same_row(
    journal: JournalRow,
) -> None:
    """Every order of the story in one batch, then two of them again in another; and a few
    orders event by event, a batch each."""
    story = [
        (event("processed"), at(0)),
        (event("delivered"), at(5)),
        (event("opened", machine_open=True), at(6)),
        (event("opened", machine_open=False), at(60)),
        (event("clicked"), at(90)),
        (event("deferred"), at(2)),
    ]
    start = row("sent", sent_at=at(-1))
    outcomes = []
    for order in itertools.permutations(story):
        await journal.set(start)
        await journal.apply(*order)
        outcomes.append(await journal.apply(*order[:2]))
    for order in list(itertools.permutations(story))[::120]:
        await journal.set(start)
        for step in [*order, *order[:2]]:
            final = await journal.apply(step)
        outcomes.append(final)
    assert {tuple(outcome.values()) for outcome in outcomes} == {
        tuple(
            row(
                "clicked",
                sent_at=at(-1),
                delivered_at=at(5),
                opened_at=at(60),
                clicked_at=at(90),
            ).values()
        )
    }


async def test_a_click_alone_implies_opened_and_delivered_at_its_time(journal: JournalRow) -> None:
    await journal.set(row("sent", sent_at=at(0)))
    clicked = await journal.apply((event("clicked"), at(30)))
    assert (clicked["delivered_at"], clicked["opened_at"], clicked["clicked_at"]) == (
        at(30),
        at(30),
        at(30),
    )
    later = await journal.apply((event("delivered"), at(10)))  # the delivery, reported late
    assert (later["status"], later["delivered_at"], later["opened_at"]) == (
        "clicked",
        at(10),
        at(30),
    )


async def test_a_machine_open_proves_delivery_but_not_reading(journal: JournalRow) -> None:
    await journal.set(row("sent"))
    opened = await journal.apply((event("opened", machine_open=True), at(3)))
    assert (opened["status"], opened["delivered_at"], opened["opened_at"]) == (
        "delivered",
        at(3),
        None,
    )


@pytest.mark.parametrize("batches", ["one batch each", "all in one batch"])
async def test_a_bounce_keeps_its_reason_and_code_whatever_comes_after(
    journal: JournalRow, batches: str
) -> None:
    await journal.set(row("delivered", delivered_at=at(1)))
    story = [
        (BOUNCE, at(9)),
        (event("dropped", reason="Bounced Address"), at(10)),
        (event("delivered"), at(11)),
    ]
    if batches == "all in one batch":
        final = await journal.apply(*story)
    else:
        for step in story:
            final = await journal.apply(step)
    assert (final["status"], final["reason"], final["provider_code"], final["failed_at"]) == (
        "failed",
        "550 5.1.1 no such user",
        "5.1.1",
        at(9),
    )


async def test_leaving_the_queue_clears_a_retry_note(journal: JournalRow) -> None:
    await journal.set(row("queued", reason="retrying: 503 from SendGrid"))
    sent = await journal.apply((event("accepted", "relaybook"), at(0)))
    assert (sent["status"], sent["reason"], sent["provider_code"], sent["sent_at"]) == (
        "sent",
        None,
        None,
        at(0),
    )


async def test_a_refusal_by_the_provider_api_is_not_a_send(journal: JournalRow) -> None:
    await journal.set(row("queued"))
    refused = event("failed", "relaybook", reason="invalid number", provider_code="21211")
    failed = await journal.apply((refused, at(0)))
    assert (failed["status"], failed["sent_at"], failed["failed_at"], failed["reason"]) == (
        "failed",
        None,
        at(0),
        "invalid number",
    )


@pytest.mark.parametrize(
    ("start", "incoming", "settles"),
    [
        pytest.param("queued", event("accepted", "relaybook"), True, id="a-send-outcome"),
        pytest.param("skipped", event("skipped", "relaybook"), True, id="a-skip"),
        pytest.param("sent", BOUNCE, True, id="newly-failed"),
        pytest.param("failed", BOUNCE, False, id="failed-already"),
        pytest.param("sent", event("delivered"), False, id="a-provider-event"),
    ],
)
async def test_a_notice_is_settled_after_a_send_outcome_or_a_new_failure(
    journal: JournalRow,
    delivery: tuple[str, uuid.UUID],
    start: str,
    incoming: dict[str, Any],
    settles: bool,
) -> None:
    await journal.set(row(start))
    await journal.apply((incoming, T0))
    assert journal.settled == ([delivery[1]] if settles else [])


@pytest.mark.parametrize(
    ("start", "batch", "expected"),
    [
        pytest.param(
            row("queued", reason="retrying: 503 from SendGrid"),
            [(event("accepted", "relaybook"), at(0)), (BOUNCE, at(5))],
            {"status": "failed", "reason": "550 5.1.1 no such user", "sent_at": at(0)},
            id="out-of-the-queue-and-bounced-in-one-batch",
        ),
        pytest.param(
            row("queued"),
            [(event("failed", "relaybook"), at(0)), (event("delivered"), at(3))],
            {"status": "failed", "sent_at": at(3), "failed_at": at(0), "reason": "failed"},
            id="refused-and-delivered-in-one-batch",
        ),
        pytest.param(
            row("queued"),
            [(BOUNCE, at(7))],
            {"status": "failed", "sent_at": at(7), "failed_at": at(7)},
            id="a-bounce-implies-it-was-sent",
        ),
        pytest.param(
            row("sent", sent_at=at(0)),
            [(event("dropped", reason="Bounced Address"), at(10)), (BOUNCE, at(5))],
            {"status": "failed", "reason": "Bounced Address", "failed_at": at(5)},
            id="the-first-failure-to-arrive-names-it-the-earliest-dates-it",
        ),
    ],
)
async def test_several_events_of_one_delivery_in_one_batch(
    journal: JournalRow,
    start: dict[str, Any],
    batch: list[tuple[dict[str, Any], dt.datetime]],
    expected: dict[str, Any],
) -> None:
    await journal.set(start)
    final = await journal.apply(*batch)
    assert {name: final[name] for name in expected} == expected


async def test_a_batch_moves_each_of_its_deliveries_and_skips_those_it_does_not_know(
    pool: asyncpg.Pool,
) -> None:
    body = notice(2)
    del body["sms"]
    _, answer = await NoticeStore(pool).create(
        parse_notice(body, dt.datetime.now(dt.UTC)), "test", None
    )
    first, second = [
        str(found["id"])
        for found in await pool.fetch(
            "SELECT id FROM deliveries WHERE notice_id = $1 ORDER BY recipient_id",
            uuid.UUID(answer["id"]),
        )
    ]
    await pool.execute(
        "UPDATE deliveries SET status = 'sent' WHERE notice_id = $1", uuid.UUID(answer["id"])
    )
    fresh = [
        event("delivered", event_id="a") | {"occurred_at": at(1).isoformat()},
        event("clicked", event_id="b") | {"occurred_at": at(2).isoformat()},
        event("opened", machine_open=False, event_id="c") | {"occurred_at": at(3).isoformat()},
    ]
    nowhere = str(uuid.uuid4())  # correlated to a delivery this database does not have
    async with pool.acquire() as connection, connection.transaction():
        settled = await _project(connection, fresh, {"a": first, "b": second, "c": nowhere})
    statuses = await pool.fetch(
        "SELECT id::text, status FROM deliveries WHERE notice_id = $1", uuid.UUID(answer["id"])
    )
    assert dict(statuses) == {first: "delivered", second: "clicked"}
    assert settled == []
