"""Fan-out and sending of one large notice (issue 4).

1. Publishing: a notice to N recipients on email and SMS, from the POST to every send job
   published (2N jobs), beside the floor measured in the same run, the fastest plain way
   to do the same work: in one transaction, COPY of the N recipients and the 2N delivery
   rows into tables shaped as relaybook's (the same columns, checks and indexes: the
   console reads through them; no triggers or foreign keys), written in the same order,
   then producing the same 2N job messages with a bare aiokafka producer as durable as
   relaybook's (acks=all; idempotent when relaybook's producer is) in record batches
   filled per partition. Beside it, and not the floor: the same producer with one
   ``send()`` per message, and the delivery rows COPYed into a table with no index and
   no recipients stored (the floor of earlier sittings, a lower bound).
2. Sending: the send workers then hand the emails and texts to the provider sandbox, one
   process standing in for SendGrid and another for Twilio (they are separate services:
   one event loop serving both would queue the emails behind a thousand texts a second);
   emails and texts per second, from the workers' start to the last outcome recorded, and
   from the first attempt recorded to the last outcome: a worker starting joins its
   consumer groups first, and a broker holds the first member of a group a moment in case
   others come (Tansu 1 s; Kafka's group.initial.rebalance.delay.ms, 3 s by default, 0 on
   the embedded Apache Kafka).
   With both channels, also how many texts were handed over while the emails went: the
   workers send emails first, their texts waiting up to RELAYBOOK_SMS_YIELD_S at a time
   (``--sms-yield-s 0``: side by side).
   The sandboxes post no webhooks unless ``--webhooks``: no webhook ingest runs here to
   take them, and real providers build and post them on their own machines, not on
   relaybook's two cores.

On ``--broker`` tansu (default: in memory), kafka or kafka3 (Apache Kafka, embedded, one
node or three): see bench/brokers.py.

    .venv/bin/python bench/fanout.py [--recipients 100000] [--broker kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid

import asyncpg
import brokers
import httpx
import temporary
from floors import floor_producer, floor_topic, produce_in_batches, until_led

from relaybook.platform import logs
from relaybook.platform.kafka import encode
from relaybook.platform.runtime import settle_garbage_collector
from relaybook.tooling.embedded import EmbeddedPostgres, free_ports
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System

ADMIN = "bench-admin"


def notice(
    count: int, channels: tuple[str, ...] = ("email", "sms"), html_kb: int = 0
) -> dict[str, object]:
    email = {"subject": "Deposit call", "text": "Pay at https://portal.example.org/dc"}
    if html_kb:  # a branded email: the same text in HTML, padded to the size asked for
        email["html"] = "<p>Pay at https://portal.example.org/dc</p>".ljust(html_kb * 1024)
    body: dict[str, object] = {
        "source": {"service": "accounting", "kind": "deposit_call", "reference": "BENCH"},
        "title": "Benchmark deposit call",
        "email": email,
        "sms": {"text": "Your deposit call is on the portal."},
        "recipients": [
            {
                "id": f"owner-{i}",
                "name": f"Owner {i}",
                "email": f"owner{i}@example.org",
                "phone": f"+336{i:08d}",
            }
            for i in range(count)
        ],
        "send": True,
    }
    for channel in {"email", "sms"} - set(channels):
        body[channel] = None
    return body


@dataclasses.dataclass
class Floor:
    """Seconds of each part of the floor, and of what is shown beside it."""

    stored_s: float  # recipients and deliveries COPYed into tables shaped as relaybook's
    batched_s: float  # the jobs produced in record batches per partition
    per_message_s: float  # the same jobs, one send() each (not the floor)
    bare_s: float  # the deliveries alone COPYed into a table with no index (not the floor)

    @property
    def total_s(self) -> float:
        return self.stored_s + self.batched_s


async def floor(
    url: str, settings: Settings, topic: str, count: int, channels: tuple[str, ...]
) -> Floor:
    """The floor and what is shown beside it (see the module's docstring)."""
    notice_id = uuid.uuid4()
    people = [
        (f"owner-{i}", f"Owner {i}", f"owner{i}@example.org", f"+336{i:08d}") for i in range(count)
    ]
    people.sort()  # relaybook writes them in id order too
    first = uuid.uuid4().int & ~((1 << 64) - 1)  # one id after the other, as uuid_v7_step
    rows = [
        (uuid.UUID(int=first + n), notice_id, person[0], channel, address, "queued")
        for n, (person, channel, address) in enumerate(
            (person, channel, person[2] if channel == "email" else person[3])
            for person in people
            for channel in channels
        )
    ]
    connection = await asyncpg.connect(url)
    await connection.execute(
        "CREATE TABLE floor_recipients (LIKE recipients INCLUDING ALL);"
        "CREATE TABLE floor_deliveries (LIKE deliveries INCLUDING ALL);"
        "CREATE TABLE floor_bare (id uuid, notice_id uuid, recipient_id text, channel text,"
        " address text, status text)"
    )
    columns = ["id", "notice_id", "recipient_id", "channel", "address", "status"]
    producer = floor_producer(settings)
    await producer.start()
    await until_led(producer, topic)
    started = time.monotonic()
    async with connection.transaction():
        await connection.copy_records_to_table(
            "floor_recipients", records=people, columns=["id", "name", "email", "phone"]
        )
        await connection.copy_records_to_table("floor_deliveries", records=rows, columns=columns)
    stored = time.monotonic()
    now = "2026-11-22T00:00:00Z"

    def job(row: tuple[object, ...]) -> bytes:
        return encode(
            {
                "schema": "send-job/v1",
                "job_id": str(row[0]),
                "delivery_id": str(row[0]),
                "notice_id": str(notice_id),
                "recipient_id": row[2],
                "channel": row[3],
                "attempt": 1,
                "resend_id": None,
                "created_at": now,
            }
        )

    await produce_in_batches(producer, topic, ((str(row[2]).encode(), job(row)) for row in rows))
    batched = time.monotonic()
    futures = [await producer.send(topic, job(row), key=str(row[2]).encode()) for row in rows]
    await asyncio.gather(*futures)
    per_message = time.monotonic()
    await producer.stop()
    await connection.copy_records_to_table("floor_bare", records=rows)
    bare = time.monotonic()
    await connection.close()
    return Floor(stored - started, batched - stored, per_message - batched, bare - per_message)


async def run(
    recipients: int,
    channels: tuple[str, ...],
    *,
    send: bool = True,
    webhooks: bool = False,
    html_kb: int = 0,
    sms_yield_s: float | None = None,
    broker_name: str = "tansu",
) -> None:
    logs.configure("WARNING", "console")
    scratch = temporary.directory("relaybook-bench-")
    postgres = EmbeddedPostgres(scratch)
    database_url = await asyncio.to_thread(postgres.start)
    broker = brokers.Broker(broker_name, scratch)
    on_broker = broker.start()
    sandbox_port, twilio_port, ingest_port, api_port = free_ports(4)
    base = Settings(
        database_url=database_url,
        data_dir=scratch,
        api_port=api_port,
        ingest_port=ingest_port,
        sandbox_port=sandbox_port,
        admin_token=ADMIN,
        kafka_session_timeout_ms=2000,
        **on_broker,
    )
    if sms_yield_s is not None:
        base = dataclasses.replace(base, sms_yield_s=sms_yield_s)
    # the sandboxes in processes of their own, as the real providers are elsewhere
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOOK_")}
    env |= {
        "RELAYBOOK_DATA_DIR": str(scratch),
        "RELAYBOOK_INGEST_PORT": str(ingest_port),
        "RELAYBOOK_LOG_LEVEL": "WARNING",
        "RELAYBOOK_SANDBOX_BATCH_INTERVAL_S": "1",
        "RELAYBOOK_SANDBOX_WEBHOOKS": str(webhooks),
    }
    sandboxes: list[subprocess.Popen[bytes]] = []
    from provider_sandbox import credentials as sandbox_credentials  # noqa: PLC0415

    try:
        # one after the other: the first makes the credentials both read from the data dir
        for port in (sandbox_port, twilio_port):
            sandboxes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "relaybook.tooling.cli", "sandbox"],
                    env=env | {"RELAYBOOK_SANDBOX_PORT": str(port)},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        creds, signer = sandbox_credentials.resolve(base, base.data_dir)
        settings = sandbox_credentials.stand_in(
            base, creds, signer, f"http://127.0.0.1:{sandbox_port}"
        )
        settings = dataclasses.replace(settings, twilio_base_url=f"http://127.0.0.1:{twilio_port}")
        body = json.dumps(notice(recipients, channels, html_kb)).encode()

        # The progress is read on one connection kept open (a connection per look forks a
        # backend: 20 a second took a good share of the cores being measured).
        watcher = await asyncpg.connect(database_url)

        # 1. publishing, workers not running
        async with (
            System(settings, only={"dispatcher"}) as system,
            httpx.AsyncClient(timeout=600) as client,
        ):
            settle_garbage_collector()  # as `relaybook dispatcher` does once started
            started = time.monotonic()
            answer = await client.post(
                f"{system.servers['dispatcher'].url}/v1/notices",
                content=body,
                headers={
                    "Authorization": f"Bearer {ADMIN}",
                    "Content-Type": "application/json",
                },
            )
            created_s = time.monotonic() - started
            assert answer.status_code == 201, answer.text
            notice_id = answer.json()["id"]
            while await watcher.fetchval(
                "SELECT count(*) FROM job_pages WHERE published_at IS NULL"
            ):
                await asyncio.sleep(0.05)
            published_s = time.monotonic() - started
        the_floor = await floor(
            database_url, settings, await floor_topic(settings), recipients, channels
        )

        sent = await sending(settings, watcher, notice_id, recipients, channels) if send else []
        await watcher.close()
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; date {time.strftime('%Y-%m-%d %H:%M %Z')}"
        )
        print(f"broker: {broker.description}")
        jobs = len(channels) * recipients
        print(f"recipients: {recipients} on {', '.join(channels)} ({jobs} send jobs)")
        print(f"sandbox webhooks: {'on' if webhooks else 'off'}; email HTML: {html_kb} KiB")
        print(f"POST answered (notice, recipients, deliveries committed): {created_s:.2f} s")
        print(
            f"POST to every send job published: {published_s:.2f} s "
            f"({jobs / published_s:,.0f} jobs/s; publishing after the POST "
            f"{published_s - created_s:.2f} s)"
        )
        print(
            f"floor (COPY of the recipients and deliveries into tables shaped as relaybook's, "
            f"bare producer in record batches per partition): {the_floor.total_s:.2f} s "
            f"(COPY {the_floor.stored_s:.2f} s, producing {the_floor.batched_s:.2f} s)"
        )
        print(f"ratio relaybook / floor: {published_s / the_floor.total_s:.2f}x")
        print(
            f"beside it, the same producer with one send() per message: producing "
            f"{the_floor.per_message_s:.2f} s"
        )
        bare_floor_s = the_floor.bare_s + the_floor.batched_s
        print(
            f"beside it, the deliveries alone COPYed into a table with no index "
            f"{the_floor.bare_s:.2f} s (with the producing {bare_floor_s:.2f} s, "
            f"relaybook {published_s / bare_floor_s:.2f}x that)"
        )
        for line in sent:
            print(line)
    finally:
        for sandbox in sandboxes:
            sandbox.send_signal(signal.SIGTERM)
            try:
                sandbox.wait(30)
            except subprocess.TimeoutExpired:
                print("a sandbox did not stop within 30 s; killed")
                sandbox.kill()
        broker.stop()
        await asyncio.to_thread(postgres.stop)


async def sending(
    settings: Settings,
    watcher: asyncpg.Connection,
    notice_id: str,
    recipients: int,
    channels: tuple[str, ...],
) -> list[str]:
    """Runs the send workers until the notice is sent; the rates, as lines to print."""
    # From the workers' start to the last outcome recorded (read off the rows once all are
    # in). The progress is looked at twice a second, as whether any delivery of the
    # channel is still queued, through the notice's status index: counting the channel's
    # deliveries took 30 ms a look, 6 % of a core the system being measured did not have.
    lines = []
    async with System(settings, only={"worker"}):
        settle_garbage_collector()  # as `relaybook worker` does
        started = await watcher.fetchval("SELECT clock_timestamp()")
        waiting = list(channels)
        while waiting:
            await asyncio.sleep(0.5)
            for channel in list(waiting):
                if not await watcher.fetchval(
                    "SELECT EXISTS (SELECT FROM deliveries WHERE notice_id = $1::text::uuid"
                    " AND channel = $2 AND status = 'queued' AND is_latest)",
                    notice_id,
                    channel,
                ):
                    waiting.remove(channel)
    ended = {}
    for channel in channels:
        # the first attempt comes after the lane has joined its consumer group
        first, ended[channel] = await watcher.fetchrow(
            "SELECT min(a.started_at), max(d.updated_at) FROM deliveries d"
            " JOIN send_attempts a ON a.delivery_id = d.id WHERE d.channel = $1",
            channel,
        )
        seconds = (ended[channel] - started).total_seconds()
        joined = (first - started).total_seconds()
        lines.append(
            f"{channel} handed to the sandbox: {recipients / seconds:,.0f}/s "
            f"(all {recipients} in {seconds:.2f} s); from the first attempt: "
            f"{recipients / (seconds - joined):,.0f}/s (first attempt after {joined:.2f} s)"
        )
    if len(channels) > 1:
        # The texts' share while the emails went, as the Twilio sandbox took them (a wave of
        # texts is recorded once all of its texts are answered, well after the first)
        async with httpx.AsyncClient(base_url=settings.twilio_base_url, timeout=60) as client:
            answer = await client.get("/_sandbox/messages", params={"provider": "twilio"})
        until = ended["email"].timestamp()
        meanwhile = sum(m["created_at"] <= until for m in answer.json()["messages"])
        seconds = (ended["email"] - started).total_seconds()
        lines.append(
            f"texts handed to the sandbox while the emails were: {meanwhile} "
            f"({meanwhile / seconds:,.0f}/s)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--channels", default="email,sms", help="email,sms / email / sms")
    parser.add_argument(
        "--publish-only", action="store_true", help="measure publishing, not the sending"
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="let the sandboxes build and post their webhooks too (nobody takes them)",
    )
    parser.add_argument(
        "--html-kb", type=int, default=0, help="give the email an HTML part of this size"
    )
    parser.add_argument(
        "--sms-yield-s",
        type=float,
        help="RELAYBOOK_SMS_YIELD_S for the workers (0: texts side by side with the emails)",
    )
    brokers.add_option(parser)
    args = parser.parse_args()
    asyncio.run(
        run(
            args.recipients,
            tuple(args.channels.split(",")),
            send=not args.publish_only,
            webhooks=args.webhooks,
            html_kb=args.html_kb,
            sms_yield_s=args.sms_yield_s,
            broker_name=args.broker,
        )
    )


if __name__ == "__main__":
    main()
