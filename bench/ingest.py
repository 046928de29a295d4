"""Webhook ingest and the journal tracker under load (issue 5).

A load generator in another process posts signed SendGrid batches (100 events each, 5 %
of events posted twice, as SendGrid does) with several posts in flight, and records each
post's latency. Measured in one run, on the same events:

1. ingest: events per second accepted (2xx, so broker-acknowledged) and p50/p99 latency;
2. a naive receiver: same signature check and parsing, then one INSERT and commit per
   event inside the request, each commit flushed to disk (synchronous_commit on; the
   server's fsync and the data's file system are printed beside its figure);
3. the floor: the same canonical events produced by a bare aiokafka producer (acks=all,
   idempotent when relaybook's producer is) in record batches per partition, the fastest
   plain way (one send() per event beside it);
4. the tracker: events per second stored and projected onto their journal rows (every
   event is about a real delivery: processed, delivered, open, click).

On ``--broker`` tansu (default: in memory), kafka or kafka3 (Apache Kafka, embedded, one
node or three): see bench/brokers.py.

    .venv/bin/python bench/ingest.py [--events 100000] [--concurrency 16] [--lanes 3]
        [--broker kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import brokers
import orjson
import temporary
from aiokafka import AIOKafkaConsumer
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from floors import floor_producer, floor_topic, produce_in_batches, until_led
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provider_sandbox.signing import SENDGRID_SIGNATURE, SENDGRID_TIMESTAMP, SendGridSigner
from relaybook.platform import logs
from relaybook.platform.http import HttpServer, bind, create_app
from relaybook.platform.kafka import client_options, encode
from relaybook.platform.timestamps import now_iso
from relaybook.tooling.embedded import EmbeddedPostgres, free_ports
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System
from webhook_ingest.events import sendgrid_event
from webhook_ingest.signatures import SendGridVerifier

BATCH = 100
STORY = ("processed", "delivered", "open", "click")


def sendgrid_events(deliveries: list[str], draw: random.Random) -> list[dict[str, Any]]:
    """Each delivery's story, shuffled across batches, 5 % of the events twice."""
    now = int(time.time())
    events: list[dict[str, Any]] = []
    for index, delivery in enumerate(deliveries):
        for step, name in enumerate(STORY):
            event: dict[str, Any] = {
                "email": f"owner{index}@example.org",
                "timestamp": now + step,
                "event": name,
                "sg_event_id": base64.urlsafe_b64encode(draw.randbytes(16)).decode().rstrip("="),
                "sg_message_id": f"bench{index // 1000}.filterdrecv-{index}.0",
                "smtp-id": f"<bench{index // 1000}@ismtpd>",
                "delivery_id": delivery,
                "notice_id": "bench",
            }
            if name == "open":
                event |= {"sg_machine_open": False, "useragent": "Mozilla/5.0"}
            elif name == "click":
                event |= {"url": "https://portal.example.org/dc", "useragent": "Mozilla/5.0"}
            elif name == "delivered":
                event["response"] = "250 OK"
            events.append(event)
    events += draw.sample(events, len(events) // 20)
    draw.shuffle(events)
    return events


# --- the load generator (its own process) -------------------------------------------


async def generate(url: str, key: str, batches_path: Path, concurrency: int) -> None:
    """Posts every batch, ``concurrency`` at a time over keep-alive connections, with a
    bare HTTP/1.1 client (a full client library would cost more CPU than the server it
    measures, on the same two cores)."""
    signer = SendGridSigner.from_base64_der(key)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = []
    for line in batches_path.read_bytes().decode().splitlines():  # noqa: ASYNC240 - before the clock
        body = line.encode()
        headers = signer.headers(body, int(time.time()))
        head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nUser-Agent: SendGrid Event API\r\n"
            f"{SENDGRID_SIGNATURE}: {headers[SENDGRID_SIGNATURE]}\r\n"
            f"{SENDGRID_TIMESTAMP}: {headers[SENDGRID_TIMESTAMP]}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    latencies: list[float] = []
    refused = 0
    queue = list(reversed(requests))

    async def connection() -> None:
        nonlocal refused
        reader, writer = await asyncio.open_connection(host, port)
        while queue:
            request = queue.pop()
            while True:  # as SendGrid does: post again until it is accepted
                started = time.perf_counter()
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                if int(status_line.split()[1]) < 300:
                    latencies.append(time.perf_counter() - started)
                    break
                refused += 1
                await asyncio.sleep(0.1)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    figures = {
        "posts": len(latencies),
        "seconds": elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "refused": refused,
    }
    print(json.dumps(figures))


async def load(url: str, key: str, batches_path: Path, concurrency: int) -> dict[str, Any]:
    """Runs the generator in another process against ``url``; returns its figures."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--generate",
        url,
        "--batches",
        str(batches_path),
        "--concurrency",
        str(concurrency),
        env={**os.environ, "BENCH_SIGNING_KEY": key},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed ({process.returncode})")
    figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return figures


# --- the naive receiver -------------------------------------------------------------

NAIVE_TABLE = """
CREATE TABLE IF NOT EXISTS naive_events (
    event_id text PRIMARY KEY, delivery_id uuid, type text NOT NULL,
    occurred_at timestamptz NOT NULL, payload jsonb NOT NULL
)
"""


def naive_app(settings: Settings, pool: asyncpg.Pool) -> Any:
    verifier = SendGridVerifier(settings.sendgrid_webhook_public_keys, 300)

    async def receive(request: Request) -> Response:
        signature = verifier.check_headers(
            request.headers.get(SENDGRID_SIGNATURE),
            request.headers.get(SENDGRID_TIMESTAMP),
            time.time(),
        )
        body = await request.body()
        verifier.verify(body, signature)
        for raw in json.loads(body):  # one row and one commit per event
            await pool.execute(
                "INSERT INTO naive_events VALUES ($1, $2, $3, to_timestamp($4), $5) "
                "ON CONFLICT DO NOTHING",
                raw["sg_event_id"],
                uuid.UUID(raw["delivery_id"]),
                raw["event"],
                raw["timestamp"],
                json.dumps(raw),
            )
        return JSONResponse({"received": len(body)})

    return create_app(
        "naive", routes=[Route("/webhooks/sendgrid", receive, methods=["POST"])], checks={}
    )


#: what makes a commit durable, as the naive receiver's connections see it
DURABILITY = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes")


async def durability(pool: asyncpg.Pool, data_dir: Path) -> str:
    """How durable the naive receiver's commits are: the server's settings that decide it,
    the file system under the data (on tmpfs an fsync keeps nothing), and the verdict."""
    shown = {name: await pool.fetchval(f"SHOW {name}") for name in DURABILITY}
    durable = shown["fsync"] == "on" and shown["synchronous_commit"] != "off"
    return (
        ", ".join(f"{name} {value}" for name, value in shown.items())
        + f", data on {file_system(data_dir)}: "
        + (
            "each commit flushed to disk before the answer"
            if durable
            else "NOT durable, commits are acknowledged before they reach the disk"
        )
    )


def file_system(path: Path) -> str:
    """The type of the file system ``path`` is on (Linux: the longest mount point)."""
    found, kind = "", "an unknown file system"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        _device, point, fs_type, *_ = line.split()
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(found):
            found, kind = point, fs_type
    return kind


# --- the raw floor ------------------------------------------------------------------


async def floor(
    settings: Settings, topic: str, events: list[dict[str, Any]]
) -> tuple[float, float]:
    """The same canonical events produced by a bare aiokafka producer as durable as
    relaybook's (bench/floors.py), twice: in record batches filled per partition (the
    fastest plain way, the floor) and with one ``send()`` per event (shown beside it).
    Returns the seconds of each."""
    received = now_iso()
    values = [encode(sendgrid_event(raw, 0, received)) for raw in events]
    keys = [raw["delivery_id"].encode() for raw in events]
    producer = floor_producer(settings)
    await producer.start()
    try:
        await until_led(producer, topic)
        started = time.perf_counter()
        await produce_in_batches(producer, topic, zip(keys, values, strict=True))
        batched = time.perf_counter() - started
        started = time.perf_counter()
        pending = [
            await producer.send(topic, value, key=key)
            for key, value in zip(keys, values, strict=True)
        ]
        await asyncio.gather(*pending)
        return batched, time.perf_counter() - started
    finally:
        await producer.stop()


#: the events stored, counted by a statement trigger on ``{table}`` (read every few ms
#: while the tracker works, a count(*) of the table took a share of the cores from the
#: work it timed): a row per statement, summed, since an update of one row would make
#: concurrent transactions wait on each other's commit
COUNTER = """
CREATE TABLE IF NOT EXISTS bench_stored (n bigint NOT NULL);
CREATE OR REPLACE FUNCTION bench_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_stored SELECT count(*) FROM stored_rows;
    RETURN NULL;
END
$$;
CREATE TRIGGER bench_count AFTER INSERT ON {table} REFERENCING NEW TABLE AS stored_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_count();
"""


STORED = "SELECT coalesce(sum(n), 0)::bigint FROM bench_stored"


#: the tracker floor's copies of the journal tables: the same columns, indexes and
#: checks (LIKE ... INCLUDING ALL), without the triggers and foreign keys
FLOOR_TABLES = """
CREATE TABLE floor_deliveries (LIKE deliveries INCLUDING ALL);
INSERT INTO floor_deliveries SELECT * FROM deliveries;
CREATE TABLE floor_events (LIKE delivery_events INCLUDING ALL);
"""
FLOOR_STAGING = """
CREATE TEMP TABLE floor_staging (
    event_id text, delivery_id uuid, channel text, provider text, type text,
    occurred_at timestamptz, received_at timestamptz, provider_message_id text,
    address text, payload jsonb
) ON COMMIT DELETE ROWS
"""
#: each event once, stored; then each delivery moved on by its new events at once: the
#: status only climbs (sent < delivered < opened < clicked) and each time is the first
#: one implied (a click implies the open, the delivery and the send); returns how many
#: events were new
FLOOR_STORE_AND_PROJECT = """
WITH new AS (
    INSERT INTO floor_events (event_id, delivery_id, channel, provider, type, occurred_at,
                              received_at, provider_message_id, address, payload, agency_id)
    SELECT DISTINCT ON (s.event_id) s.*,
           (SELECT d.agency_id FROM floor_deliveries d WHERE d.id = s.delivery_id)
    FROM floor_staging s
    ORDER BY s.event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING delivery_id, occurred_at,
              array_position(ARRAY['processed', 'delivered', 'opened', 'clicked'], type) AS rank
), moved AS (
    SELECT delivery_id, max(rank) AS rank,
           min(occurred_at) AS sent_at,
           min(occurred_at) FILTER (WHERE rank >= 2) AS delivered_at,
           min(occurred_at) FILTER (WHERE rank >= 3) AS opened_at,
           min(occurred_at) FILTER (WHERE rank >= 4) AS clicked_at
    FROM new WHERE rank IS NOT NULL GROUP BY delivery_id
), projected AS (
    UPDATE floor_deliveries d
    SET status = (ARRAY['sent', 'delivered', 'opened', 'clicked'])[greatest(
            m.rank, array_position(ARRAY['sent', 'delivered', 'opened', 'clicked'], d.status))],
        sent_at = least(d.sent_at, m.sent_at),
        delivered_at = least(d.delivered_at, m.delivered_at),
        opened_at = least(d.opened_at, m.opened_at),
        clicked_at = least(d.clicked_at, m.clicked_at),
        updated_at = now()
    FROM moved m
    WHERE d.id = m.delivery_id
    RETURNING 1
)
SELECT count(*) FROM new  -- the events new to the table (the update runs all the same)
"""
FLOOR_COLUMNS = (
    "event_id",
    "delivery_id",
    "channel",
    "provider",
    "type",
    "occurred_at",
    "received_at",
    "provider_message_id",
    "address",
    "payload",
)


async def execute(database_url: str, sql: str) -> list[asyncpg.Record]:
    """The rows of one query, or nothing for a script of several statements."""
    connection = await asyncpg.connect(database_url)
    try:
        if ";" in sql:
            await connection.execute(sql)
            return []
        return await connection.fetch(sql)
    finally:
        await connection.close()


async def tracker_floor(
    settings: Settings, database_url: str, unique: int, ready: Callable[[], None] = lambda: None
) -> float:
    """The tracker's work done the fastest plain way, on the same topic and the same
    database: a bare consumer takes what each fetch brings (up to 10,000 records), splits
    it by key into as many parts as the tracker has lanes (``settings.tracker_lanes``, so
    that both use the database's cores alike), and each part, in a transaction of its own on its
    own connection, all at once, is COPYed into a staging table, each event stored once
    and the new ones projected onto the deliveries in one statement (SQL, not Python);
    then the offsets are committed. No schema check, no notice settled, no metric. Into
    copies of the tables (FLOOR_TABLES, made before the tracker ran). Returns the seconds
    from the first record to the last event stored."""
    consumer = AIOKafkaConsumer(
        settings.topic("delivery-events"),
        **client_options(settings),
        group_id="bench-tracker-floor",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    connections = [await asyncpg.connect(database_url) for _ in range(settings.tracker_lanes)]
    for connection in connections:
        await connection.execute(FLOOR_STAGING)

    async def store(connection: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> int:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "floor_staging", records=rows, columns=FLOOR_COLUMNS
            )
            new: int = await connection.fetchval(FLOOR_STORE_AND_PROJECT)
            return new

    await consumer.start()
    try:
        while not consumer.assignment():  # its group joined: it is consuming from now on
            await asyncio.sleep(0.05)
        ready()
        stored = 0
        first: float | None = None
        while stored < unique:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not fetched:
                continue
            first = first or time.perf_counter()
            lanes: list[list[tuple[Any, ...]]] = [[] for _ in connections]
            for batch in fetched.values():
                for record in batch:
                    event = orjson.loads(record.value)
                    lanes[hash(record.key) % len(lanes)].append(
                        (
                            event["event_id"],
                            uuid.UUID(event["delivery_id"]) if event.get("delivery_id") else None,
                            event["channel"],
                            event["provider"],
                            event["type"],
                            dt.datetime.fromisoformat(event["occurred_at"]),
                            dt.datetime.fromisoformat(event["received_at"]),
                            event.get("provider_message_id"),
                            event.get("address"),
                            record.value.decode(),
                        )
                    )
            stored += sum(
                await asyncio.gather(
                    *(store(c, rows) for c, rows in zip(connections, lanes, strict=True) if rows)
                )
            )
            await consumer.commit()
        assert first is not None
        return time.perf_counter() - first
    finally:
        await consumer.stop()
        for connection in connections:
            await connection.close()


# --- the run ------------------------------------------------------------------------


async def prepare_deliveries(url: str, count: int, prefix: str = "owner") -> list[str]:
    """One sent email notice to ``count`` owners (ids ``<prefix>-<n>``), straight into
    the tables; the deliveries' ids drawn as a fan-out draws them (uuid_v7, one after the
    other), so the events' index entries go where relaybook's would."""
    connection = await asyncpg.connect(url)
    try:
        notice = uuid.uuid4()
        await connection.execute(
            "INSERT INTO notices (id, source_service, source_kind, source_reference, title, "
            "email_subject, email_text, status, released_at, created_by) VALUES "
            "($1, 'bench', 'bench', 'bench', 'bench', 's', 't', 'sending', now(), 'bench')",
            notice,
        )
        await connection.execute(
            "INSERT INTO recipients (id, email) SELECT $2 || '-' || i, 'owner' || i || "
            "'@example.org' FROM generate_series(0, $1 - 1) i",
            count,
            prefix,
        )
        rows = await connection.fetch(
            "INSERT INTO deliveries (id, notice_id, recipient_id, channel, address, status, "
            "provider, provider_message_id, sent_at, send_attempts) "
            "SELECT uuid_v7_step(first.id, i), $1, $3 || '-' || i, 'email', 'owner' || i || "
            "'@example.org', 'sent', 'sendgrid', 'bench', now(), 1 "
            "FROM (SELECT uuid_v7() AS id) first, generate_series(0, $2 - 1) i "
            "ORDER BY i RETURNING id",
            notice,
            count,
            prefix,
        )
        return [str(row["id"]) for row in rows]
    finally:
        await connection.close()


async def run(total: int, naive_total: int, concurrency: int, broker_name: str, lanes: int) -> None:
    logs.configure("WARNING", "console")
    scratch = temporary.directory("relaybook-bench-")
    postgres = EmbeddedPostgres(scratch)
    database_url = await asyncio.to_thread(postgres.start)
    broker = brokers.Broker(broker_name, scratch)
    on_broker = broker.start()
    private = ec.generate_private_key(ec.SECP256R1())
    key = base64.b64encode(
        private.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    ).decode()
    ingest_port, naive_port, api_port, sandbox_port = free_ports(4)
    settings = Settings(
        database_url=database_url,
        data_dir=scratch,
        api_port=api_port,
        ingest_port=ingest_port,
        sandbox_port=sandbox_port,
        sendgrid_webhook_public_keys=(SendGridSigner(private).public_key,),
        kafka_session_timeout_ms=2000,
        tracker_lanes=lanes,
        **on_broker,
    )
    draw = random.Random(5)  # noqa: S311 - test data, not secrets
    try:
        # the tables exist once a system has started against the database
        async with System(settings, only={"ingest"}) as system:
            deliveries = await prepare_deliveries(database_url, total // len(STORY))
            await execute(database_url, FLOOR_TABLES)
            events = sendgrid_events(deliveries, draw)
            batches = scratch / "batches.jsonl"
            batches.write_text(
                "\n".join(
                    json.dumps(events[start : start + BATCH])
                    for start in range(0, len(events), BATCH)
                )
            )
            ingest = await load(
                f"{system.servers['ingest'].url}/webhooks/sendgrid", key, batches, concurrency
            )

        floor_s, per_message_s = await floor(settings, await floor_topic(settings), events)

        naive_events = events[:naive_total]
        naive_batches = scratch / "naive.jsonl"
        naive_batches.write_text(
            "\n".join(
                json.dumps(naive_events[start : start + BATCH])
                for start in range(0, len(naive_events), BATCH)
            )
        )
        # synchronous_commit on whatever the server's default: each commit waits for its
        # WAL flush (fsync itself is the server's, printed with the figures)
        pool = await asyncpg.create_pool(
            database_url,
            min_size=concurrency,
            max_size=concurrency,
            server_settings={"synchronous_commit": "on"},
        )
        await pool.execute(NAIVE_TABLE)
        naive_durability = await durability(pool, postgres.pgdata)
        server = HttpServer("naive", naive_app(settings, pool), bind(naive_port, "naive"))
        await server.start()
        try:
            naive = await load(f"{server.url}/webhooks/sendgrid", key, naive_batches, concurrency)
        finally:
            await server.stop()
            await pool.close()

        unique = len({event["sg_event_id"] for event in events})
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(COUNTER.format(table="delivery_events"))
            async with System(settings, only={"tracker"}):
                first: float | None = None
                first_look = -1
                while True:
                    stored = await connection.fetchval(STORED)
                    if stored and first is None:
                        first, first_look = time.perf_counter(), stored
                    if stored >= unique:
                        break
                    await asyncio.sleep(0.05)
                assert first is not None
                tracker_s = time.perf_counter() - first
            statuses = await connection.fetch(
                "SELECT status, count(*) FROM deliveries GROUP BY status"
            )
        finally:
            await connection.close()
        tracker_floor_s = await tracker_floor(settings, database_url, unique)
        floor_statuses = await execute(
            database_url, "SELECT status, count(*) FROM floor_deliveries GROUP BY status"
        )

        posted = len(events)
        ingest_rate = posted / ingest["seconds"]
        naive_rate = naive_total / naive["seconds"]
        floor_rate = posted / floor_s
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; date {time.strftime('%Y-%m-%d %H:%M %Z')}"
        )
        print(f"broker: {broker.description}")
        print(
            f"events posted: {posted} ({unique} unique) in batches of {BATCH}, "
            f"{concurrency} posts in flight"
        )
        print(
            f"ingest: {ingest_rate:,.0f} events/s, p50 {ingest['p50_ms']:.1f} ms, "
            f"p99 {ingest['p99_ms']:.1f} ms, refused {ingest['refused']}"
        )
        print(
            f"naive receiver ({naive_total} events): {naive_rate:,.0f} events/s, "
            f"p50 {naive['p50_ms']:.1f} ms, p99 {naive['p99_ms']:.1f} ms"
        )
        print(f"naive receiver's commits: {naive_durability}")
        print(
            f"floor (bare producer, record batches per partition): {floor_rate:,.0f} events/s; "
            f"beside it, one send() per event: {posted / per_message_s:,.0f} events/s"
        )
        print(
            f"ingest / naive: {ingest_rate / naive_rate:.1f}x; "
            f"ingest / floor: {100 * ingest_rate / floor_rate:.0f} %"
        )
        if first_look >= unique:
            # timed from the first row seen: there was nothing left to time
            print(f"tracker: all {unique} stored before the first look; not timed (more events)")
        else:
            print(
                f"tracker: {unique / tracker_s:,.0f} events/s stored and projected "
                f"({unique} in {tracker_s:.2f} s)"
            )
        print("journal rows: " + ", ".join(f"{r['status']} {r['count']}" for r in statuses))
        print(
            f"tracker floor (bare consumer, COPY, events stored and projected in one "
            f"statement, {settings.tracker_lanes} transactions at once): "
            f"{unique / tracker_floor_s:,.0f} events/s "
            f"({unique} in {tracker_floor_s:.2f} s); its rows: "
            + ", ".join(f"{r['status']} {r['count']}" for r in floor_statuses)
        )
        if first_look < unique:
            print(f"tracker / floor: {tracker_floor_s / tracker_s:.0%} of the floor's rate")
    finally:
        broker.stop()
        await asyncio.to_thread(postgres.stop)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--naive-events", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--lanes",
        type=int,
        default=Settings().tracker_lanes,
        help="the tracker's lanes (RELAYBOOK_TRACKER_LANES), and its floor's transactions",
    )
    brokers.add_option(parser)
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        asyncio.run(
            generate(args.generate, os.environ["BENCH_SIGNING_KEY"], args.batches, args.concurrency)
        )
    else:
        asyncio.run(run(args.events, args.naive_events, args.concurrency, args.broker, args.lanes))


if __name__ == "__main__":
    main()
