"""Sends a crash left without an answer are not simply sent again: the provider is asked
first (Twilio's Messages list; SendGrid's own events), a message it has is recorded as
the attempt's acceptance, and one it may still report waits out a grace period."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from relaybook.notices.request import parse_notice
from relaybook.notices.store import NoticeStore
from relaybook.platform.kafka import Producer, Record
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System
from send_worker import worker as worker_module
from send_worker.providers import Listed, Twilio
from send_worker.unknown_outcomes import HELD, SKEW, Doubt, held_until, match
from send_worker.worker import ATTEMPTS
from tests.send_worker.test_worker import queued_jobs, sandbox_messages, send_worker
from tests.support import Deployable, notice, read_topic, until

T0 = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
A, B = uuid.UUID(int=1), uuid.UUID(int=2)
TEXT = "Your Q4 deposit call is available on the portal."


def text(sid: str, seconds: float, body: str = TEXT) -> Listed:
    return Listed(sid, body, T0 + dt.timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("doubts", "listed", "recorded", "found"),
    [
        pytest.param([Doubt(A, "+1", TEXT, T0)], [text("SM1", 1)], set(), {A: "SM1"}, id="found"),
        pytest.param([Doubt(A, "+1", TEXT, T0)], [], set(), {}, id="nothing-listed"),
        pytest.param(
            [Doubt(A, "+1", TEXT, T0)], [text("SM1", 1, "another text")], set(), {}, id="other-body"
        ),
        pytest.param(
            [Doubt(A, "+1", TEXT, T0)],
            [text("SM1", -SKEW.total_seconds() - 1)],
            set(),
            {},
            id="created-before-the-attempt",
        ),
        pytest.param(
            [Doubt(A, "+1", TEXT, T0)],
            [text("SM1", -1)],
            set(),
            {A: "SM1"},
            id="provider-clock-a-little-behind",
        ),
        pytest.param(
            [Doubt(A, "+1", TEXT, T0)],
            [text("SM1", -1), text("SM2", 2)],
            {"SM1"},
            {A: "SM2"},
            id="a-resends-earlier-message-is-another-deliverys",
        ),
        pytest.param(
            [Doubt(A, "+1", TEXT, T0)], [text("SM1", 1)], {"SM1"}, {}, id="only-recorded-ones"
        ),
        pytest.param(
            [Doubt(B, "+1", TEXT, T0 + dt.timedelta(seconds=1)), Doubt(A, "+1", TEXT, T0)],
            [text("SM2", 2), text("SM1", 1)],
            set(),
            {A: "SM1", B: "SM2"},
            id="a-shared-number-each-its-own",
        ),
    ],
)
def test_a_listed_text_is_a_deliverys_when_number_body_and_time_fit_and_nobody_has_it(
    doubts: list[Doubt], listed: list[Listed], recorded: set[str], found: dict[uuid.UUID, str]
) -> None:
    assert match(doubts, {"+1": listed}, recorded) == found


def test_a_delivery_in_doubt_waits_until_the_grace_is_over() -> None:
    """Held until its attempt's start plus the grace; then it goes (None). A number
    whose list could not be read waits a while even after the grace."""
    assert held_until(T0, 60, T0 + dt.timedelta(seconds=5)) == T0 + dt.timedelta(seconds=60)
    assert held_until(T0, 60, T0 + dt.timedelta(seconds=60)) is None
    late = T0 + dt.timedelta(seconds=100)
    assert held_until(T0, 60, late, unread=True) == late + dt.timedelta(seconds=30)
    assert held_until(T0, 5, late, unread=True) == late + dt.timedelta(seconds=5)


# --- a worker that finds attempts another one started and never finished


async def one_notice(pool: asyncpg.Pool, channel: str, **changes: Any) -> list[Record]:
    """A notice to one owner on ``channel``, its job."""
    body = notice(1, **changes)
    del body["sms" if channel == "email" else "email"]
    _, answer = await NoticeStore(pool).create(
        parse_notice(body, dt.datetime.now(dt.UTC)), "test", None
    )
    return await queued_jobs(pool, answer["id"])


async def crashed_in_flight(pool: asyncpg.Pool, jobs: list[Record]) -> dt.datetime:
    """As a worker killed during the provider call leaves it: the attempt started, no
    outcome. Returns when the attempt started."""
    [started] = await pool.fetch(
        ATTEMPTS["start_attempts"], [job.value["delivery_id"] for job in jobs]
    )
    assert started["attempt"] == 1
    return started["started_at"]  # type: ignore[no-any-return]


async def delivery(pool: asyncpg.Pool, jobs: list[Record]) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT status, provider_message_id, send_attempts, next_attempt_at, reason "
        "FROM deliveries WHERE id = $1::text::uuid",
        jobs[0].value["delivery_id"],
    )
    assert row is not None
    return row


def quick(settings: Settings, grace_s: float = 1.0) -> Settings:
    return dataclasses.replace(settings, unknown_outcome_grace_s=grace_s)


async def listed_as_sent(settings: Settings, to: str, count: int = 1) -> None:
    """Twilio lists a text as sent once it is (date_sent): a few tens of ms after."""
    twilio = Twilio(settings)
    try:

        async def sent() -> bool:
            found = await twilio.sent_to(to, dt.datetime.now(dt.UTC))
            return found is not None and len(found) >= count

        await until(sent, within=10)
    finally:
        await twilio.close()


async def text_went_through(settings: Settings, jobs: list[Record], to: str) -> str:
    """The crashed worker's text, reaching Twilio after all (it was a slow call)."""
    twilio = Twilio(settings)
    try:
        outcome = await twilio.send(jobs[0].value["delivery_id"], to, TEXT)
    finally:
        await twilio.close()
    assert outcome.message_id is not None
    await listed_as_sent(settings, to)
    return outcome.message_id


async def past(moment: dt.datetime) -> None:
    async def passed() -> bool:
        return dt.datetime.now(dt.UTC) > moment

    await until(passed, within=30)


async def accepted_events(settings: Settings, count: int) -> list[dict[str, Any]]:
    return [
        event
        for _, event in await read_topic(settings, "delivery-events", count)
        if event["type"] == "accepted"
    ]


OWNER_PHONE = "+33610000000"


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_a_text_twilio_lists_is_recorded_as_accepted_not_sent_again(
    system: System, sandbox: httpx.AsyncClient, pool: asyncpg.Pool, producer: Producer
) -> None:
    jobs = await one_notice(pool, "sms")
    await crashed_in_flight(pool, jobs)
    sid = await text_went_through(system.settings, jobs, OWNER_PHONE)
    async with send_worker(system.settings, pool, producer) as worker:
        await worker.handle(jobs)
    row = await delivery(pool, jobs)
    assert (row["status"], row["provider_message_id"], row["send_attempts"]) == ("sent", sid, 1)
    assert len(await sandbox_messages(sandbox, "twilio")) == 1, "not sent again"
    [event] = await accepted_events(system.settings, 1)
    assert event["event_id"] == f"relaybook:{jobs[0].value['delivery_id']}:1:accepted"
    assert event["provider_message_id"] == sid


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_a_personal_text_in_doubt_is_found_by_the_text_its_recipient_got(
    system: System, sandbox: httpx.AsyncClient, pool: asyncpg.Pool, producer: Producer
) -> None:
    """Twilio's list holds the text as rendered for its recipient, not the template: the
    worker renders it again (the same text: rendering is deterministic) to find it."""
    jobs = await one_notice(
        pool,
        "sms",
        sms={"text": "Appel de fonds {{ data.amount | money }}"},
        recipients=[{"id": "owner-0", "phone": OWNER_PHONE, "data": {"amount": "12.5"}}],
    )
    await crashed_in_flight(pool, jobs)
    twilio = Twilio(system.settings)
    try:
        went = await twilio.send(
            jobs[0].value["delivery_id"], OWNER_PHONE, "Appel de fonds 12,50 €"
        )
    finally:
        await twilio.close()
    await listed_as_sent(system.settings, OWNER_PHONE)
    async with send_worker(system.settings, pool, producer) as worker:
        await worker.handle(jobs)
    row = await delivery(pool, jobs)
    assert (row["status"], row["provider_message_id"]) == ("sent", went.message_id)
    assert len(await sandbox_messages(sandbox, "twilio")) == 1, "not sent again"


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_a_text_not_listed_yet_is_held_and_found_when_it_comes_again_after_the_grace(
    system: System, sandbox: httpx.AsyncClient, pool: asyncpg.Pool, producer: Producer
) -> None:
    """Twilio lists a text as sent only once it is (a queued one has no date_sent): not
    found, the delivery goes back on the retry queue, due at the attempt's start plus the
    grace, no attempt counted; looked up again then, the text is found."""
    settings = quick(system.settings)
    jobs = await one_notice(pool, "sms")
    started = await crashed_in_flight(pool, jobs)
    async with send_worker(settings, pool, producer) as worker:
        await worker.handle(jobs)
        row = await delivery(pool, jobs)
        assert (row["status"], row["send_attempts"], row["reason"]) == ("queued", 0, HELD)
        assert row["next_attempt_at"] == started + dt.timedelta(seconds=1)
        assert await sandbox_messages(sandbox, "twilio") == []

        sid = await text_went_through(settings, jobs, OWNER_PHONE)
        await past(row["next_attempt_at"])
        await worker.handle(jobs)
    row = await delivery(pool, jobs)
    assert (row["status"], row["provider_message_id"], row["send_attempts"]) == ("sent", sid, 1)
    assert row["reason"] is None
    assert len(await sandbox_messages(sandbox, "twilio")) == 1


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_a_text_still_not_found_after_the_grace_is_sent_again(
    system: System, sandbox: httpx.AsyncClient, pool: asyncpg.Pool, producer: Producer
) -> None:
    settings = quick(system.settings)
    jobs = await one_notice(pool, "sms")
    started = await crashed_in_flight(pool, jobs)
    async with send_worker(settings, pool, producer) as worker:
        await worker.handle(jobs)
        assert await sandbox_messages(sandbox, "twilio") == [], "held first"
        await past(started + dt.timedelta(seconds=1))
        await worker.handle(jobs)
    row = await delivery(pool, jobs)
    assert (row["status"], row["send_attempts"]) == ("sent", 2)
    [sent] = await sandbox_messages(sandbox, "twilio")
    assert sent["sid"] == row["provider_message_id"]


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_an_earlier_text_recorded_on_another_delivery_is_not_taken_for_this_one(
    system: System, sandbox: httpx.AsyncClient, pool: asyncpg.Pool, producer: Producer
) -> None:
    """A resend to the same person has the same text: the earlier delivery's message,
    listed by Twilio just before (within the clock-skew margin), is that delivery's, so
    the one in doubt is held, then sent, not matched to it."""
    settings = quick(system.settings)
    first = await one_notice(pool, "sms")
    async with send_worker(settings, pool, producer) as worker:
        await worker.handle(first)
        earlier = (await delivery(pool, first))["provider_message_id"]
        await listed_as_sent(settings, OWNER_PHONE)

        again = await one_notice(pool, "sms")  # the same owner, the same text
        started = await crashed_in_flight(pool, again)
        await worker.handle(again)
        row = await delivery(pool, again)
        assert (row["status"], row["provider_message_id"]) == ("queued", None), "held"
        await past(started + dt.timedelta(seconds=1))
        await worker.handle(again)
    row = await delivery(pool, again)
    assert row["status"] == "sent"
    assert row["provider_message_id"] not in {None, earlier}
    assert len(await sandbox_messages(sandbox, "twilio")) == 2


async def provider_event(
    pool: asyncpg.Pool, jobs: list[Record], kind: str, message_id: str
) -> None:
    """A SendGrid event about the delivery, as the tracker stores it."""
    now = dt.datetime.now(dt.UTC)
    await pool.execute(
        "INSERT INTO delivery_events (event_id, delivery_id, channel, provider, type, "
        "occurred_at, received_at, provider_message_id, address, payload) "
        "VALUES ($1, $2::text::uuid, 'email', 'sendgrid', $3, $4, $4, $5, "
        "'owner0@example.org', '{}')",
        f"sendgrid:{uuid.uuid4()}",
        jobs[0].value["delivery_id"],
        kind,
        now,
        message_id,
    )


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
@pytest.mark.parametrize("projected", [False, True])
async def test_an_email_sendgrid_reported_on_is_recorded_with_its_message_id(
    system: System,
    sandbox: httpx.AsyncClient,
    pool: asyncpg.Pool,
    producer: Producer,
    projected: bool,
) -> None:
    """SendGrid has no look-up: its own events settle it. A ``processed`` event for the
    delivery proves SendGrid took the email; its X-Message-Id is the sg_message_id up to
    the first '.'. The tracker may have moved the delivery on already (``projected``)."""
    jobs = await one_notice(pool, "email")
    await crashed_in_flight(pool, jobs)
    await provider_event(pool, jobs, "processed", "14c5d75ce93.filterdrecv-p3las1-1.1-0")
    if projected:
        await pool.execute(
            "UPDATE deliveries SET status = 'sent', sent_at = now() WHERE id = $1::text::uuid",
            jobs[0].value["delivery_id"],
        )
    async with send_worker(system.settings, pool, producer) as worker:
        await worker.handle(jobs)
    row = await delivery(pool, jobs)
    assert (row["status"], row["provider_message_id"], row["send_attempts"]) == (
        "sent",
        "14c5d75ce93",
        1,
    )
    assert await sandbox_messages(sandbox, "sendgrid") == []
    [event] = await accepted_events(system.settings, 1)
    assert (event["provider"], event["provider_message_id"]) == ("sendgrid", "14c5d75ce93")


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_an_email_waits_out_the_grace_for_sendgrids_events_then_goes_again(
    system: System, sandbox: httpx.AsyncClient, pool: asyncpg.Pool, producer: Producer
) -> None:
    """No event yet: held until the grace is over; still nothing then: sent again, as
    attempt 2."""
    settings = quick(system.settings)
    jobs = await one_notice(pool, "email")
    started = await crashed_in_flight(pool, jobs)
    async with send_worker(settings, pool, producer) as worker:
        await worker.handle(jobs)
        row = await delivery(pool, jobs)
        assert (row["status"], row["send_attempts"], row["reason"]) == ("queued", 0, HELD)
        assert row["next_attempt_at"] == started + dt.timedelta(seconds=1)
        assert await sandbox_messages(sandbox, "sendgrid") == []
        await past(started + dt.timedelta(seconds=1))
        await worker.handle(jobs)
    row = await delivery(pool, jobs)
    assert (row["status"], row["send_attempts"]) == ("sent", 2)
    assert len(await sandbox_messages(sandbox, "sendgrid")) == 1


async def moved_on(pool: asyncpg.Pool, jobs: list[Record]) -> None:
    """SendGrid's ``processed`` about the delivery, and the tracker moving it to ``sent``."""
    await provider_event(pool, jobs, "processed", "5d1ce4b0.filter-1")
    await pool.execute(  # as the tracker projects it
        "UPDATE deliveries SET status = 'sent', sent_at = now(), reason = NULL "
        "WHERE id = $1::text::uuid",
        jobs[0].value["delivery_id"],
    )


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
@pytest.mark.parametrize("holder_stopped", [False, True], ids=["same-worker", "holder-stopped"])
async def test_an_email_held_whose_events_move_it_on_is_recorded_by_a_worker_when_due(
    system: System,
    sandbox: httpx.AsyncClient,
    pool: asyncpg.Pool,
    producer: Producer,
    holder_stopped: bool,
) -> None:
    """The relay sends a held job again only while its delivery is queued; SendGrid's
    ``processed`` coming during the grace moves it to ``sent`` (the tracker), so a worker
    looks again itself when it is due and records the acceptance: the one that held it,
    or, that one stopped meanwhile, another (the due time is on the row)."""
    settings = quick(system.settings)
    jobs = await one_notice(pool, "email")
    await crashed_in_flight(pool, jobs)

    async def recorded() -> bool:
        return (await delivery(pool, jobs))["provider_message_id"] == "5d1ce4b0"

    async with send_worker(settings, pool, producer) as worker:
        await worker.handle(jobs)
        assert (await delivery(pool, jobs))["reason"] == HELD
        if not holder_stopped:
            await moved_on(pool, jobs)
            await until(recorded, within=10)
    if holder_stopped:
        await moved_on(pool, jobs)
        async with send_worker(settings, pool, producer):
            await until(recorded, within=10)
    [event] = await accepted_events(system.settings, 1)
    row = await delivery(pool, jobs)
    assert (row["status"], row["send_attempts"], row["next_attempt_at"]) == ("sent", 1, None)
    assert await sandbox_messages(sandbox, "sendgrid") == []
    assert event["provider_message_id"] == "5d1ce4b0"


async def due_out_of_the_queue(
    pool: asyncpg.Pool, jobs: list[Record], changes: str, *arguments: Any
) -> None:
    """The delivery of ``jobs`` with ``changes`` (SQL assignments, $2... ``arguments``),
    and its due time past: as a worker, the relay and the tracker may leave it."""
    await pool.execute(
        f"UPDATE deliveries SET {changes}, next_attempt_at = now() - interval '1 second' "  # noqa: S608 - the test's own SQL
        "WHERE id = $1::text::uuid",
        jobs[0].value["delivery_id"],
        *arguments,
    )


async def looked_at_once(settings: Settings, pool: asyncpg.Pool, producer: Producer) -> None:
    async with send_worker(settings, pool, producer) as worker:
        assert await worker.look_again() == 1, "the delivery is claimed"


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_a_look_again_cut_off_after_recording_is_announced_once_its_claim_runs_out(
    system: System, pool: asyncpg.Pool, producer: Producer
) -> None:
    """A worker that died between recording a moved-on delivery's acceptance and
    announcing it left its claim on the row: the next look after the claim announces
    the outcome as recorded, and lets the row go."""
    jobs = await one_notice(pool, "email")
    started = await crashed_in_flight(pool, jobs)
    await due_out_of_the_queue(
        pool,
        jobs,
        "status = 'sent', sent_at = now(), provider = 'sendgrid', "
        "provider_message_id = '5d1ce4b0', send_attempts = 1, attempt_started_at = $2, "
        "address = 'owner0@example.org'",
        started,
    )
    await looked_at_once(quick(system.settings), pool, producer)
    [event] = await accepted_events(system.settings, 1)
    assert event["provider_message_id"] == "5d1ce4b0"
    assert (await delivery(pool, jobs))["next_attempt_at"] is None


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_a_retry_whose_bounce_came_during_its_backoff_is_let_go_unannounced(
    system: System, pool: asyncpg.Pool, producer: Producer
) -> None:
    """A call that timed out although SendGrid took the email: the delivery waits for its
    retry, then the bounce moves it to failed (the tracker). Nothing is in doubt and the
    worker recorded no outcome: a look lets it go and announces nothing."""
    jobs = await one_notice(pool, "email")
    started = await crashed_in_flight(pool, jobs)
    await due_out_of_the_queue(  # as schedule_retry leaves it, then the tracker the bounce
        pool,
        jobs,
        "send_attempts = 1, attempt_started_at = $2, "
        "status = 'failed', failed_at = now(), reason = 'bounced'",
        started,
    )
    await looked_at_once(quick(system.settings), pool, producer)
    row = await delivery(pool, jobs)
    assert (row["status"], row["next_attempt_at"], row["reason"]) == ("failed", None, "bounced")


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_a_held_text_moved_on_stays_claimed_while_twilio_cannot_be_asked(
    system: System, pool: asyncpg.Pool, producer: Producer
) -> None:
    """Twilio's list could not be read: nothing is known of the text yet, so the look
    keeps its claim and the next look after it asks again."""
    jobs = await one_notice(pool, "sms")
    await crashed_in_flight(pool, jobs)
    # held, then moved on by Twilio's callback (the tracker)
    await due_out_of_the_queue(pool, jobs, "status = 'sent', sent_at = now()")
    away = dataclasses.replace(quick(system.settings), twilio_base_url="http://127.0.0.1:9")
    await looked_at_once(away, pool, producer)
    row = await delivery(pool, jobs)
    assert row["provider_message_id"] is None
    assert row["next_attempt_at"] > dt.datetime.now(dt.UTC), "still claimed"


#: a look's claim, as PostgreSQL shows it while a lock holds it up
HELD_UP_LOOKS = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE SKIP LOCKED%'"
)
#: a look's claim still running (or committing), held up or not; this query not counted
RUNNING_LOOKS = (
    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
    "AND query LIKE '%FOR UPDATE SKIP LOCKED%' AND pid <> pg_backend_pid()"
)


@pytest.mark.timing
@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_closing_waits_for_a_look_the_database_holds_up_its_grace_then_cuts_it_off(
    system: System, pool: asyncpg.Pool, producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look that PostgreSQL does not answer (here a lock another session keeps on the
    table; in production a server stalled or cut off) holds a stopping worker for the
    grace only: closing then cancels it, the statement with it, so the look claims
    nothing once the database answers again."""
    monkeypatch.setattr(worker_module, "LOOK_AGAIN_EVERY_S", 0.05)
    monkeypatch.setattr(worker_module, "STOP_TIMEOUT_S", 0.5)
    jobs = await one_notice(pool, "email")
    await crashed_in_flight(pool, jobs)
    await due_out_of_the_queue(pool, jobs, "status = 'sent', sent_at = now()")

    async def held_up() -> bool:
        return bool(await pool.fetchval(HELD_UP_LOOKS))

    async with pool.acquire() as locker:
        locking = locker.transaction()
        await locking.start()
        try:
            await locker.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
            async with send_worker(quick(system.settings), pool, producer):
                await until(held_up, within=10)
                closing = time.monotonic()
            closed_in = time.monotonic() - closing
        finally:
            await locking.rollback()
    assert 0.5 <= closed_in < 3, f"closed in {closed_in:.2f} s, the grace being 0.5 s"

    async def let_go() -> bool:  # ended: a claim left running would have committed by now
        return not await pool.fetchval(RUNNING_LOOKS)

    await until(let_go, within=10)
    due = (await delivery(pool, jobs))["next_attempt_at"]
    assert due is not None, "looked at and let go by a look that closing should have cut off"
    assert due < dt.datetime.now(dt.UTC), "claimed by a look cut off"


# --- the whole story: a worker killed with texts and emails in flight

RECIPIENTS = 200
#: SendGrid's answers are slowed to 2.5 s below: its events about the emails in flight
#: then have the rest of the grace to come through ingest, the broker and the tracker.
#: On three Kafka nodes sharing 2 cores with everything else (a tracker that misses a
#: heartbeat rejoins its group), 1.5 s of that was too little: the emails went twice;
#: 5.5 s (a grace of 8) failed once in four CI runs (67 of 131 in doubt went twice).
GRACE_S = 15.0


def delivery_of(message: dict[str, Any]) -> str:
    """The delivery a sandbox message was sent for: in custom_args, or in the status
    callback URL's query string."""
    if message["provider"] == "sendgrid":
        return str(message["custom_args"]["delivery_id"])
    return parse_qs(urlsplit(message["status_callback"]).query)["delivery_id"][0]


@pytest.mark.parametrize(
    "system_options", [{"only": {"sandbox", "dispatcher", "ingest", "tracker"}}]
)
@pytest.mark.parametrize("run", [1, 2, 3])
async def test_a_worker_killed_with_sends_in_flight_sends_nothing_twice_and_loses_nothing(
    system: System,
    api: httpx.AsyncClient,
    sandbox: httpx.AsyncClient,
    db: asyncpg.Connection,
    tmp_path: Path,
    run: int,
) -> None:
    """SIGKILL while a notice's emails and texts are at the (slowed) providers, restart:
    the attempts in flight are looked up (Twilio's list) or settled by SendGrid's events
    within the grace, so every delivery id reaches the provider exactly once, and every
    outcome is announced."""
    settings = system.settings
    workers = Deployable(
        "worker",
        settings,
        tmp_path,
        RELAYBOOK_SENDGRID_API_KEY=settings.sendgrid_api_key or "",
        RELAYBOOK_SENDGRID_BASE_URL=settings.sendgrid_base_url or "",
        RELAYBOOK_TWILIO_ACCOUNT_SID=settings.twilio_account_sid or "",
        RELAYBOOK_TWILIO_AUTH_TOKEN=settings.twilio_auth_token or "",
        RELAYBOOK_TWILIO_BASE_URL=settings.twilio_base_url or "",
        RELAYBOOK_TWILIO_FROM=settings.twilio_from or "",
        RELAYBOOK_PUBLIC_WEBHOOK_BASE_URL=settings.webhook_base_url,
        RELAYBOOK_SMS_YIELD_S="0",  # texts side by side with the slow emails
        RELAYBOOK_UNKNOWN_OUTCOME_GRACE_S=str(GRACE_S),
    )
    # every call answered late, but answered: the sends in flight at the kill go out
    await sandbox.post("/_sandbox/faults", json={"provider": "sendgrid", "delay_s": 2.5})
    await sandbox.post(
        "/_sandbox/faults", json={"provider": "twilio", "delay_s": 0.5, "count": 1000}
    )
    body = notice(
        0,
        recipients=[
            {"id": f"o{i}", "email": f"o{i}@example.org", "phone": f"+3362{i:07d}"}
            for i in range(RECIPIENTS)
        ],
    )
    created = (await api.post("/v1/notices", json=body)).json()
    worker = workers.start(f"first-{run}")

    async def in_flight_on_both_channels() -> bool:
        rows = await db.fetch(
            "SELECT d.channel, count(*) FILTER (WHERE a.attempt > d.send_attempts) AS open, "
            "count(*) FILTER (WHERE d.status <> 'queued') AS done "
            "FROM deliveries d JOIN send_attempts a ON a.delivery_id = d.id "
            "WHERE d.notice_id = $1::text::uuid GROUP BY d.channel",
            created["id"],
        )
        found = {row["channel"]: row for row in rows}
        return (
            found.keys() == {"email", "sms"}
            and found["email"]["open"] > 0
            and found["sms"]["open"] > 0
            and found["sms"]["done"] >= 20
        )

    try:
        await until(in_flight_on_both_channels, within=30)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    await sandbox.delete("/_sandbox/faults")
    in_doubt = await db.fetchval(
        "SELECT count(*) FROM deliveries d JOIN send_attempts a ON a.delivery_id = d.id "
        "WHERE d.notice_id = $1::text::uuid AND a.attempt > d.send_attempts",
        created["id"],
    )
    assert in_doubt > 0, "the kill came with sends in flight"

    worker = workers.start(f"second-{run}")

    async def final() -> bool:
        return not await db.fetchval(
            "SELECT count(*) FROM deliveries WHERE notice_id = $1::text::uuid "
            "AND (status = 'queued' OR provider_message_id IS NULL)",
            created["id"],
        )

    try:
        await until(final, within=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    rows = await db.fetch(
        "SELECT id, status FROM deliveries WHERE notice_id = $1::text::uuid", created["id"]
    )
    assert len(rows) == 2 * RECIPIENTS
    messages = [
        *await sandbox_messages(sandbox, "sendgrid"),
        *await sandbox_messages(sandbox, "twilio"),
    ]
    sent = Counter(delivery_of(message) for message in messages)
    ids = {str(row["id"]) for row in rows}
    twice = {delivery for delivery, count in sent.items() if count > 1}
    lost = ids - sent.keys()
    assert (len(twice), len(lost)) == (0, 0), f"{in_doubt} in doubt at the kill"
    assert sent.keys() == ids
    assert await announced(settings, ids) == ids, "every outcome announced"


async def announced(settings: Settings, ids: set[str]) -> set[str]:
    """The deliveries whose ``accepted`` event the workers published, read until all of
    ``ids`` are there (the providers' events share the topic) or 15 s passed."""
    consumer = AIOKafkaConsumer(
        settings.topic("delivery-events"),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: set[str] = set()
    try:
        deadline = time.monotonic() + 15
        while found != ids and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                for message in messages:
                    event = json.loads(message.value)
                    if event["event_id"].startswith("relaybook:") and event["type"] == "accepted":
                        found.add(event["delivery_id"])
    finally:
        await consumer.stop()
    return found
