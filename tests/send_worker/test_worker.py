"""Send workers against the sandbox: every recipient reached once per channel, emails
batched, transient errors retried with backoff, permanent ones failed at once with the
provider's code, preferences re-checked at send time, outcomes announced as events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY

from relaybook.notices.request import parse_notice
from relaybook.notices.store import NoticeStore
from relaybook.platform.kafka import BrokerError, Producer, Record
from relaybook.platform.outbox import Outbox
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System
from send_worker.providers import SendGrid, Twilio
from send_worker.worker import ATTEMPTS, DELIVERIES, Precedence, Q, SendWorker
from tests.support import notice, read_topic, until

SENT_OR_LATER = {"sent", "delivered", "opened", "clicked"}


async def sandbox_messages(sandbox: httpx.AsyncClient, provider: str) -> list[dict[str, Any]]:
    return (await sandbox.get("/_sandbox/messages", params={"provider": provider})).json()[
        "messages"
    ]


def calls(provider: str, call: str, code: str) -> float:
    labels = {"provider": provider, "call": call, "code": code}
    return REGISTRY.get_sample_value("relaybook_provider_calls_total", labels) or 0.0


async def settled(db: asyncpg.Connection, notice_id: str) -> bool:
    return not await db.fetchval(
        "SELECT count(*) FROM deliveries WHERE notice_id = $1::text::uuid AND status = 'queued'",
        notice_id,
    )


async def test_a_notice_to_300_recipients_reaches_each_once_per_channel(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    created = (await api.post("/v1/notices", json=notice(300))).json()
    await until(lambda: settled(db, created["id"]))
    emails = await sandbox_messages(sandbox, "sendgrid")
    sms = await sandbox_messages(sandbox, "twilio")
    assert Counter(m["to"] for m in emails) == Counter(f"owner{i}@example.org" for i in range(300))
    assert Counter(m["to"] for m in sms) == Counter(f"+3361{i:07d}" for i in range(300))
    requests = {m["message_id"] for m in emails}
    assert len(requests) < 20, "emails are batched into few requests"
    rows = await db.fetch(
        "SELECT id, channel, status, provider, provider_message_id, send_attempts "
        "FROM deliveries WHERE notice_id = $1::text::uuid",
        created["id"],
    )
    assert {r["status"] for r in rows} <= SENT_OR_LATER  # the tracker may be further along
    assert {r["send_attempts"] for r in rows} == {1}
    by_delivery = {m["custom_args"]["delivery_id"]: m for m in emails}
    for row in rows:
        if row["channel"] == "email":
            assert row["provider"] == "sendgrid"
            assert by_delivery[str(row["id"])]["message_id"] == row["provider_message_id"]
            assert by_delivery[str(row["id"])]["custom_args"]["notice_id"] == created["id"]
        else:
            assert row["provider"] == "twilio"
            assert row["provider_message_id"].startswith("SM")
    callbacks = {m["status_callback"] for m in sms}
    assert all("/webhooks/twilio?delivery_id=" in url for url in callbacks)
    stats = (await api.get(f"/v1/notices/{created['id']}")).json()["stats"]
    assert stats["email"]["sent"] == stats["sms"]["sent"] == 300


async def test_transient_errors_are_retried_until_the_provider_accepts(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    answers = [
        ("sendgrid", "mail_send", "503"), ("sendgrid", "mail_send", "202"),
        ("twilio", "messages_create", "500"), ("twilio", "messages_create", "201"),
    ]  # fmt: skip
    before = [calls(*answer) for answer in answers]
    await sandbox.post("/_sandbox/faults", json={"provider": "sendgrid", "status": 503, "count": 1})
    await sandbox.post("/_sandbox/faults", json={"provider": "sendgrid", "status": 429})
    await sandbox.post("/_sandbox/faults", json={"provider": "twilio", "status": 500, "count": 2})
    created = (await api.post("/v1/notices", json=notice(3))).json()
    await until(lambda: settled(db, created["id"]), within=60)
    counted = [calls(*answer) - was for answer, was in zip(answers, before, strict=True)]
    assert counted[0] >= 1, "each provider answer is counted by its code"
    assert counted[1] >= 1
    assert counted[2] >= 2
    assert counted[3] >= 3
    rows = await db.fetch(
        "SELECT channel, status, send_attempts, reason FROM deliveries "
        "WHERE notice_id = $1::text::uuid",
        created["id"],
    )
    assert {r["status"] for r in rows} <= SENT_OR_LATER
    assert max(r["send_attempts"] for r in rows if r["channel"] == "email") >= 2
    assert max(r["send_attempts"] for r in rows if r["channel"] == "sms") >= 2
    assert {r["reason"] for r in rows} == {None}, "a later success clears the retry reason"
    assert len(await sandbox_messages(sandbox, "sendgrid")) == 3, "each email went out once"


async def test_permanent_refusals_fail_the_delivery_at_once_with_the_providers_code(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = notice(
        0,
        recipients=[
            {"id": "invalid", "phone": "+15005550001"},
            {"id": "stopped", "phone": "+15005550004"},
            {"id": "landline", "phone": "+15005550009"},
            {"id": "fine", "phone": "+33612345678"},
        ],
        email=None,
    )
    created = (await api.post("/v1/notices", json=body)).json()
    await until(lambda: settled(db, created["id"]))
    rows = await db.fetch(
        "SELECT recipient_id, status, provider_code, reason, send_attempts, "
        "failed_at IS NOT NULL AS stamped FROM deliveries "
        "WHERE notice_id = $1::text::uuid",
        created["id"],
    )
    found = {r["recipient_id"]: (r["status"], r["provider_code"]) for r in rows}
    # The accepted message may already have its sandbox callback read: sent, then delivered.
    assert found.pop("fine") in {("sent", None), ("delivered", None)}
    assert found == {
        "invalid": ("failed", "21211"),
        "stopped": ("failed", "21610"),
        "landline": ("failed", "21614"),
    }
    assert all(r["send_attempts"] == 1 for r in rows)
    assert all(r["stamped"] for r in rows if r["status"] == "failed")
    assert "unsubscribed" in next(r["reason"] for r in rows if r["recipient_id"] == "stopped")


@pytest.mark.parametrize("system_options", [{"email_from": "not-an-address"}])
async def test_a_sendgrid_400_fails_the_emails_with_its_errors(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    created = (await api.post("/v1/notices", json=notice(2, sms=None))).json()
    await until(lambda: settled(db, created["id"]))
    rows = await db.fetch(
        "SELECT status, provider_code, reason FROM deliveries WHERE notice_id = $1::text::uuid",
        created["id"],
    )
    assert {(r["status"], r["provider_code"]) for r in rows} == {("failed", "400")}
    assert all("from.email" in r["reason"] for r in rows)


async def test_preferences_are_checked_again_at_send_time(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    draft = (await api.post("/v1/notices", json=notice(2, send=False))).json()
    await db.execute("UPDATE recipients SET sms_wants = 'no' WHERE id = 'owner-0'")
    await db.execute(
        "INSERT INTO suppressions (channel, address, rule, reason) "
        "VALUES ('email', 'owner1@example.org', 'complaint', 'spam report')"
    )
    await api.post(f"/v1/notices/{draft['id']}/send")
    await until(lambda: settled(db, draft["id"]))
    rows = await db.fetch(
        "SELECT recipient_id || '/' || channel AS key, status, reason "
        "FROM deliveries WHERE notice_id = $1::text::uuid",
        draft["id"],
    )
    found = {r["key"]: (r["status"], r["reason"]) for r in rows}
    assert found["owner-0/sms"] == ("skipped", "opted_out")
    assert found["owner-1/email"] == ("skipped", "opted_out")  # the owner complained
    assert {found["owner-0/email"][0], found["owner-1/sms"][0]} <= SENT_OR_LATER
    assert len(await sandbox_messages(sandbox, "sendgrid")) == 1


async def test_each_outcome_is_announced_on_delivery_events(
    system: System, api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = notice(
        0,
        email=None,
        recipients=[{"id": "ok", "phone": "+33612345678"}, {"id": "bad", "phone": "+15005550001"}],
    )
    created = (await api.post("/v1/notices", json=body)).json()
    await until(lambda: settled(db, created["id"]))
    consumer = AIOKafkaConsumer(
        system.settings.topic("delivery-events"),
        bootstrap_servers=system.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    events: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 15
        while len(events) < 2 and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                # the workers' own; the providers' webhooks arrive on this topic too
                events += [
                    event
                    for m in messages
                    if (event := json.loads(m.value))["event_id"].startswith("relaybook:")
                ]
    finally:
        await consumer.stop()
    by_type = {event["type"]: event for event in events}
    ids = {
        r["recipient_id"]: str(r["id"])
        for r in await db.fetch(
            "SELECT recipient_id, id FROM deliveries WHERE notice_id = $1::text::uuid",
            created["id"],
        )
    }
    accepted, failed = by_type["accepted"], by_type["failed"]
    assert accepted["delivery_id"] == ids["ok"]
    assert accepted["provider_message_id"].startswith("SM")
    assert accepted["event_id"] == f"relaybook:{ids['ok']}:1:accepted"
    assert (failed["delivery_id"], failed["provider_code"]) == (ids["bad"], "21211")
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def queued_jobs(pool: asyncpg.Pool, notice_id: str) -> list[Record]:
    """The send jobs of a notice's queued deliveries, as a worker consumes them."""
    return [
        Record("send-jobs", 0, offset, row["recipient_id"], dict(row))
        for offset, row in enumerate(
            await pool.fetch(
                "SELECT id::text AS delivery_id, notice_id::text, recipient_id, channel "
                "FROM deliveries WHERE notice_id = $1::text::uuid AND status = 'queued'",
                notice_id,
            )
        )
    ]


@contextlib.asynccontextmanager
async def send_worker(
    settings: Settings, pool: asyncpg.Pool, producer: Producer, publisher: Producer | None = None
) -> AsyncIterator[SendWorker]:
    """A worker calling the sandbox, its outcomes published by ``publisher`` (by default
    ``producer``, which the outbox of its skips uses)."""
    sendgrid, twilio = SendGrid(settings), Twilio(settings)
    worker = SendWorker(
        settings,
        pool,
        events=Outbox(pool, producer),
        producer=publisher or producer,
        sendgrid=sendgrid,
        twilio=twilio,
    )
    worker.start()
    try:
        yield worker
    finally:
        await worker.close()
        await sendgrid.close()
        await twilio.close()


class BrokerAway:
    """A producer whose broker takes nothing; it keeps what it was asked to publish."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    async def send_many(self, topic: str, messages: list[tuple[str, dict[str, Any]]]) -> None:
        self.asked += [message for _, message in messages]
        raise BrokerError(f"Kafka did not acknowledge {topic}")


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_an_outcome_recorded_but_not_published_is_announced_when_its_job_comes_again(
    system: System,
    sandbox: httpx.AsyncClient,
    pool: asyncpg.Pool,
    producer: Producer,
) -> None:
    """An outcome's event is published after the outcome is committed and before the
    job's offset is: when the broker fails in between, the batch fails, its jobs come
    again, and the same events are published without calling the providers again."""
    settings = system.settings
    body = notice(3)
    body["recipients"].append({"id": "bad", "phone": "+15005550001"})  # refused: 21211
    _, answer = await NoticeStore(pool).create(
        parse_notice(body, dt.datetime.now(dt.UTC)), "test", None
    )
    jobs = await queued_jobs(pool, answer["id"])
    assert len(jobs) == 7
    away = BrokerAway()
    async with send_worker(settings, pool, producer, publisher=cast(Producer, away)) as worker:
        with pytest.raises(BrokerError):
            await worker.handle(jobs)
    async with send_worker(settings, pool, producer) as worker:
        await worker.handle(jobs)  # the batch again: no error now

    statuses = Counter(
        row["status"]
        for row in await pool.fetch(
            "SELECT status FROM deliveries WHERE notice_id = $1::text::uuid", answer["id"]
        )
    )
    assert statuses == {"sent": 6, "failed": 1, "skipped": 1}  # "bad" has no email
    assert len(await sandbox_messages(sandbox, "sendgrid")) == 3, "no email sent twice"
    assert len(await sandbox_messages(sandbox, "twilio")) == 3, "no text sent twice"
    published = [event for _, event in await read_topic(settings, "delivery-events", 7)]
    assert len(published) == len(away.asked) == 7
    assert sorted(published, key=_event_id) == sorted(away.asked, key=_event_id), (
        "the same events as first built"
    )
    assert Counter(e["type"] for e in published) == {"accepted": 6, "failed": 1}


def _event_id(event: dict[str, Any]) -> str:
    return str(event["event_id"])


async def test_a_batch_is_read_and_recorded_by_key_even_without_table_statistics(
    pool: asyncpg.Pool,
) -> None:
    """Right after a large fan-out the planner has no statistics on the new rows: the
    worker must still look each delivery, recipient and attempt up by its key, not scan
    and hash whole tables for every batch (send_worker/queries.sql)."""
    body = notice(3000)
    del body["sms"]
    _, answer = await NoticeStore(pool).create(
        parse_notice(body, dt.datetime.now(dt.UTC)), "test", None
    )
    ids = [
        row["id"]
        for row in await pool.fetch(
            "SELECT id FROM deliveries WHERE notice_id = $1 LIMIT 1000", uuid.UUID(answer["id"])
        )
    ]
    starting = await pool.fetch("EXPLAIN " + ATTEMPTS["start_attempts"], ids)
    await pool.execute(ATTEMPTS["start_attempts"], ids)
    loading = await pool.fetch("EXPLAIN " + Q["load_deliveries"], ids)
    recording = await pool.fetch(
        "EXPLAIN " + DELIVERIES["record_accepted"],
        ids,
        [1] * len(ids),
        [dt.datetime.now(dt.UTC)] * len(ids),
        ["a@example.org"] * len(ids),
        ["fr"] * len(ids),
        ["0" * 64] * len(ids),
        [None] * len(ids),
        ["m"] * len(ids),
        "sendgrid",
    )
    scans = [row[0] for row in [*starting, *loading, *recording] if "Seq Scan" in row[0]]
    assert not [scan for scan in scans if "recipients" in scan or "send_attempts" in scan]
    reads = [
        row[0] for row in [*loading, *starting] if "Scan" in row[0] and " on deliveries" in row[0]
    ]
    assert reads
    assert all("using deliveries_pkey" in line for line in reads), reads


async def jobs_of_a_slow_email_request(
    pool: asyncpg.Pool, sandbox: httpx.AsyncClient
) -> tuple[str, dict[str, list[Record]]]:
    """A notice to 4 recipients on both channels, its jobs by channel; SendGrid will take
    1 s to answer the next request."""
    _, answer = await NoticeStore(pool).create(
        parse_notice(notice(4), dt.datetime.now(dt.UTC)), "test", None
    )
    jobs: dict[str, list[Record]] = {"email": [], "sms": []}
    for job in await queued_jobs(pool, answer["id"]):
        jobs[job.value["channel"]].append(job)
    await sandbox.post("/_sandbox/faults", json={"provider": "sendgrid", "delay_s": 1.0})
    return answer["id"], jobs


async def emails_out(pool: asyncpg.Pool, notice_id: str) -> None:
    """Returns once the notice's email request is out: the worker records each attempt,
    and commits it, just before it calls the provider (start_attempts)."""

    async def started() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT count(*) = 4 FROM send_attempts a JOIN deliveries d ON d.id = a.delivery_id"
                " WHERE d.notice_id = $1::text::uuid AND d.channel = 'email'",
                notice_id,
            )
        )

    await until(started, within=10)


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
@pytest.mark.parametrize("yield_s", [5.0, 0.0])
async def test_texts_wait_while_the_same_worker_sends_emails(
    system: System,
    sandbox: httpx.AsyncClient,
    pool: asyncpg.Pool,
    producer: Producer,
    yield_s: float,
) -> None:
    """Emails first: while the email lane's request is out (SendGrid slow to answer here),
    the text lane's texts wait for it, unless ``sms_yield_s`` is 0."""
    settings = dataclasses.replace(system.settings, sms_yield_s=yield_s)
    notice_id, jobs = await jobs_of_a_slow_email_request(pool, sandbox)
    async with send_worker(settings, pool, producer) as worker:

        async def email_lane() -> float:
            await worker.lane("email")(jobs["email"])
            return time.time()

        emailing = asyncio.create_task(email_lane())
        await emails_out(pool, notice_id)
        await worker.lane("sms")(jobs["sms"])
        texted = time.time()
        emailed = await emailing
    texts = await sandbox_messages(sandbox, "twilio")
    assert len(texts) == 4
    assert len(await sandbox_messages(sandbox, "sendgrid")) == 4
    if yield_s:
        assert min(text["created_at"] for text in texts) > emailed, "no text before the emails"
        assert texted > emailed
    else:
        assert texted < emailed - 0.3, "the texts went while the emails' request was out"


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_texts_that_waited_for_the_emails_are_checked_again_after_the_wait(
    system: System,
    sandbox: httpx.AsyncClient,
    pool: asyncpg.Pool,
    producer: Producer,
) -> None:
    """Preferences are re-checked when a text is sent, not before it waits for the emails:
    an opt-out that comes during the wait stops the text."""
    notice_id, jobs = await jobs_of_a_slow_email_request(pool, sandbox)
    async with send_worker(system.settings, pool, producer) as worker:
        emailing = asyncio.create_task(worker.lane("email")(jobs["email"]))
        await emails_out(pool, notice_id)
        texting = asyncio.create_task(worker.lane("sms")(jobs["sms"]))
        await asyncio.sleep(0)  # the text lane runs up to its wait: it waits before any read
        await pool.execute("UPDATE recipients SET sms_wants = 'no' WHERE id = 'owner-0'")
        assert not emailing.done(), "the opt-out came while the email request was out"
        assert not texting.done()
        await asyncio.gather(emailing, texting)
    status, reason = await pool.fetchrow(
        "SELECT status, reason FROM deliveries WHERE notice_id = $1::text::uuid"
        " AND recipient_id = 'owner-0' AND channel = 'sms'",
        notice_id,
    )
    assert (status, reason) == ("skipped", "opted_out")
    assert len(await sandbox_messages(sandbox, "twilio")) == 3


@pytest.mark.timing
async def test_texts_go_on_when_emails_never_stop() -> None:
    """The wait is bounded: texts are slowed by a stream of emails, not starved; once the
    emails stop, they wait for the gap between two batches only."""
    emails_first = Precedence(patience_s=0.3, gap_s=0.2)
    async with emails_first.going():
        started = time.monotonic()
        await emails_first.wait()
        assert 0.3 <= time.monotonic() - started < 0.5
    started = time.monotonic()
    await emails_first.wait()
    assert 0.15 <= time.monotonic() - started < 0.3
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await emails_first.wait()
    assert time.monotonic() - started < 0.01


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
async def test_a_batch_of_several_notices_sends_each_its_own_content(
    system: System,
    sandbox: httpx.AsyncClient,
    pool: asyncpg.Pool,
    producer: Producer,
) -> None:
    """The notices' content is read once per notice, not with each delivery: a batch
    mixing two notices still sends each recipient the content of their own."""
    settings = system.settings
    jobs: list[Record] = []
    for number in (1, 2):
        body = notice(3, sms={"text": f"Text of notice {number}"})
        body["email"]["subject"] = f"Subject of notice {number}"
        for recipient in body["recipients"]:
            recipient["id"] += f"-{number}"
            recipient["phone"] = recipient["phone"][:-1] + str(number)
            recipient["email"] = f"{number}.{recipient['email']}"
        _, answer = await NoticeStore(pool).create(
            parse_notice(body, dt.datetime.now(dt.UTC)), "test", None
        )
        jobs += await queued_jobs(pool, answer["id"])
    async with send_worker(settings, pool, producer) as worker:
        await worker.handle(jobs)
    emails = await sandbox_messages(sandbox, "sendgrid")
    texts = await sandbox_messages(sandbox, "twilio")
    assert len(emails) == len(texts) == 6
    assert {(e["to"][0], e["subject"]) for e in emails} == {
        (str(n), f"Subject of notice {n}") for n in (1, 2)
    }
    assert {(t["to"][-1], t["body"]) for t in texts} == {
        (str(n), f"Text of notice {n}") for n in (1, 2)
    }
