"""The bounce policy under load (issue 6).

A realistic stream of canonical delivery events (95 % successes: delivered, opened,
clicked; 5 % failures: hard and soft bounces, sender-side blocks, a few spam reports and
permanent SMS errors, concentrated on a few hundred bad addresses, so that thresholds
are crossed and recipients unsubscribed along the way) is produced to
``delivery-events``. Measured in one run: the raw consume rate of that topic (a bare
aiokafka consumer reading and decoding every message) and the bounce policy's rate
(classify, record, count, decide, act; offsets committed after each transaction).

    .venv/bin/python bench/bounce.py [--events 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import time
import uuid
from typing import Any

import asyncpg
import temporary
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from relaybook.platform import database, logs
from relaybook.platform.deadletters import DeadLetters
from relaybook.platform.kafka import (
    Consumer,
    Producer,
    Record,
    client_options,
    encode,
    ensure_topics,
)
from relaybook.reachability.decisions import BouncePolicy
from relaybook.reachability.policy import Policy
from relaybook.tooling.embedded import EmbeddedBroker, EmbeddedPostgres
from relaybook.tooling.settings import Settings
from schemas import CONTRACTS, TOPICS

PEOPLE = 20_000
BAD = 400


def stream(count: int, draw: random.Random) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    events = []
    for index in range(count):
        person = draw.randrange(PEOPLE)
        sms = draw.random() < 0.2
        failure = draw.random() < 0.05
        if failure:
            person = draw.randrange(BAD)
        address = f"+336{person:08d}" if sms else f"owner{person}@example.org"
        event: dict[str, Any] = {
            "schema": "delivery-event/v1",
            "event_id": f"bench:{index}",
            "channel": "sms" if sms else "email",
            "provider": "twilio" if sms else "sendgrid",
            "occurred_at": (now - dt.timedelta(seconds=count - index)).isoformat(),
            "received_at": now.isoformat(),
            "delivery_id": str(uuid.uuid4()),
            "address": address,
        }
        if not failure:
            event["type"] = draw.choice(["delivered", "delivered", "opened", "clicked"])
        elif sms:
            event |= {
                "type": "undelivered",
                "provider_code": draw.choice(["30005", "30003", "30007"]),
            }
        else:
            event |= draw.choice(
                [
                    {"type": "bounced", "provider_code": "5.1.1", "bounce_type": "bounce"},
                    {"type": "bounced", "provider_code": "5.2.2", "bounce_type": "bounce"},
                    {
                        "type": "bounced",
                        "provider_code": "5.7.1",
                        "bounce_type": "blocked",
                        "bounce_classification": "reputation",
                    },
                    {"type": "spam_reported"},
                ]
            )
        events.append(event)
    return events


async def raw_consume(settings: Settings, count: int) -> float:
    consumer = AIOKafkaConsumer(
        settings.topic("delivery-events"),
        **client_options(settings),
        group_id="bench-raw",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    await consumer.start()
    seen = 0
    started: float | None = None
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for messages in batches.values():
                if started is None:
                    started = time.perf_counter()
                for message in messages:
                    json.loads(message.value)
                seen += sum(len(m) for m in batches.values())
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
    assert started is not None
    return time.perf_counter() - started


async def policy_consume(
    settings: Settings, pool: asyncpg.Pool, producer: Producer, count: int
) -> float:
    policy = BouncePolicy(pool, Policy.from_settings(settings))
    consumer = Consumer(
        settings,
        ["delivery-events"],
        "bench-policy",
        dead_letters=DeadLetters(pool, producer, settings.topic("dead-letters")),
        contracts=CONTRACTS,
        max_batch=5000,
        gather_ms=100,
    )
    seen = 0
    started: float | None = None
    done = asyncio.Event()

    async def handle(records: list[Record]) -> None:
        nonlocal seen, started
        if started is None:
            started = time.perf_counter()
        await policy.handle(records)
        seen += len(records)
        if seen >= count:
            done.set()

    await consumer.start()
    task = asyncio.create_task(consumer.run(handle))
    await done.wait()
    finished = time.perf_counter()
    await consumer.stop()
    await task
    assert started is not None
    return finished - started


async def run(count: int) -> None:
    logs.configure("WARNING", "console")
    scratch = temporary.directory("relaybook-bench-")
    postgres = EmbeddedPostgres(scratch)
    database_url = await asyncio.to_thread(postgres.start)
    broker = EmbeddedBroker()
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=broker.start(),
        data_dir=scratch,
        kafka_session_timeout_ms=2000,
    )
    try:
        await database.migrate(database_url)
        await ensure_topics(settings, TOPICS)
        pool = await database.create_pool(database_url, max_size=4)
        await pool.execute(
            "INSERT INTO recipients (id, email, phone) SELECT 'owner-' || i, "
            "'owner' || i || '@example.org', '+336' || lpad(i::text, 8, '0') "
            "FROM generate_series(0, $1 - 1) i",
            PEOPLE,
        )
        events = stream(count, random.Random(6))  # noqa: S311 - test data
        producer = AIOKafkaProducer(**client_options(settings), acks="all")
        await producer.start()
        topic = settings.topic("delivery-events")
        await asyncio.gather(
            *[await producer.send(topic, encode(e), key=e["delivery_id"].encode()) for e in events]
        )
        await producer.stop()

        raw_s = await raw_consume(settings, count)
        ours = Producer(settings, CONTRACTS)
        await ours.start()
        try:
            policy_s = await policy_consume(settings, pool, ours, count)
        finally:
            await ours.stop()
        failures = await pool.fetchval("SELECT count(*) FROM address_events")
        suppressions = await pool.fetch(
            "SELECT rule, count(*) FROM suppressions GROUP BY rule ORDER BY rule"
        )
        unsubscribed = await pool.fetchval(
            "SELECT count(*) FROM recipients WHERE email_wants = 'no' OR sms_wants = 'no'"
        )
        await pool.close()
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; date {time.strftime('%Y-%m-%d %H:%M %Z')}"
        )
        print(f"events: {count} ({failures} failures and complaints recorded)")
        print(f"raw consume (bare aiokafka consumer, JSON decoded): {count / raw_s:,.0f} events/s")
        print(
            f"bounce policy (classified, recorded, counted, applied): "
            f"{count / policy_s:,.0f} events/s"
        )
        print(f"ratio policy / raw: {100 * raw_s / policy_s:.0f} %")
        print("suppressions: " + ", ".join(f"{r['rule']} {r['count']}" for r in suppressions))
        print(f"recipients unsubscribed: {unsubscribed}")
    finally:
        broker.stop()
        await asyncio.to_thread(postgres.stop)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    asyncio.run(run(args.events))


if __name__ == "__main__":
    main()
