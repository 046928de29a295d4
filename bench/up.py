"""Webhooks into the whole system as users run it (issue 22): `relaybook up`, each
deployable in its own process, the tracker and the bounce policy consuming what ingest
publishes, all on the same two cores.

For each number of posts in flight (8, 32 and 128 by default), the load generator of
bench/ingest.py (another process; it posts a refused batch again after 0.1 s, as SendGrid
does) posts fresh signed SendGrid batches of 100 events, each event unique and about a
real delivery; then the tracker's catch-up is timed: from the last post answered to the
last of those events stored in PostgreSQL (its lag back to zero). The events stored are
counted by a statement trigger on the events table (one row kept up to date, read every
20 ms): a count(*) of a table growing to 300,000 rows that often took a good share of a
core from the very work it timed.

``--floor``: the tracker is stopped (SIGSTOP) and bench/ingest.py's tracker floor (a bare
consumer; COPY, each fetch stored and projected in one SQL statement, into copies of the
tables) consumes in its place, in a process of its own; its catch-up is timed the same
way. What the plainest way of doing the tracker's work does on the same cores, under the
same load.

On ``--broker`` tansu (default: in memory), kafka or kafka3 (Apache Kafka, embedded, one
node or three: `up` then turns the idempotent producer on and replicates the topics on
every node), as `up` is told through RELAYBOOK_EMBEDDED_BROKER (bench/brokers.py).

    .venv/bin/python bench/up.py [--events 60000] [--concurrency 8,32,128] [--broker kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import brokers
import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from provider_sandbox.signing import SendGridSigner
from relaybook import ownership
from relaybook.embedded import free_port_settings
from relaybook.settings import Settings, env_name

# bench/ingest.py's load generator, events and deliveries (bench/ is no package)
_spec = importlib.util.spec_from_file_location("ingest", Path(__file__).with_name("ingest.py"))
assert _spec is not None
assert _spec.loader is not None
ingest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ingest)


def tracker_pid(up: subprocess.Popen[bytes]) -> int:
    """The process `up` runs the tracker in."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == up.pid and argv[-2:] == [b"tracker", b""]:
            return int(proc.name)
    raise RuntimeError("no tracker process under up")


async def start_floor(database_url: str, bootstrap: str, total: int) -> subprocess.Popen[bytes]:
    """bench/ingest.py's tracker floor, in a process of its own, until ``total`` events;
    returns once its consumer joined its group."""
    floor = subprocess.Popen(
        [sys.executable, __file__, "--floor-consumer", database_url, bootstrap, str(total)],
        stdout=subprocess.PIPE,
    )
    assert floor.stdout is not None
    assert await asyncio.to_thread(floor.stdout.readline) == b"ready\n", "the floor failed"
    return floor


def floor_consumer(database_url: str, bootstrap: str, total: int) -> None:
    settings = Settings(database_url=database_url, kafka_bootstrap_servers=bootstrap)
    asyncio.run(
        ingest.tracker_floor(settings, database_url, total, lambda: print("ready", flush=True))
    )


def start_up(
    data_dir: Path, public_key: str, broker: str
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    ports = free_port_settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOOK_")}
    env |= {env_name(name): str(port) for name, port in ports.items()}
    env |= brokers.up_environment(broker)
    env |= {
        "RELAYBOOK_DATA_DIR": str(data_dir),
        "RELAYBOOK_LOG_LEVEL": "WARNING",
        "RELAYBOOK_LOG_FORMAT": "json",
        "RELAYBOOK_SENDGRID_WEBHOOK_PUBLIC_KEYS": public_key,
    }
    log = (data_dir.parent / "up.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "relaybook.cli", "up"], env=env, stdout=log, stderr=log
    )
    return process, ports


def banner_broker(log: Path) -> str:
    """The broker `up` says it started (its banner's line), to check the environment was
    heard: the header names the broker the figures really come from."""
    for line in log.read_text(errors="replace").splitlines():
        if line.strip().startswith("broker "):
            return " ".join(line.split())
    return "(no broker line in up's banner: see up.log)"


async def until_ready(ports: dict[str, int], process: subprocess.Popen[bytes]) -> None:
    urls = [
        f"http://127.0.0.1:{port}/readyz" for name, port in ports.items() if name != "sandbox_port"
    ]
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            assert process.poll() is None, "up exited"
            try:
                answers = [await client.get(url) for url in urls]
                if all(answer.status_code == 200 for answer in answers):
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)


async def run(total: int, levels: list[int], broker: str, *, floor: bool = False) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="relaybook-bench-up-"))
    data_dir = scratch / "data"
    private = ec.generate_private_key(ec.SECP256R1())
    key = base64.b64encode(
        private.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    ).decode()
    process, ports = start_up(data_dir, SendGridSigner(private).public_key, broker)
    results = []
    try:
        await until_ready(ports, process)
        owner = ownership.read_owner(data_dir)
        assert owner is not None
        assert owner.database_url is not None
        url = f"http://127.0.0.1:{ports['ingest_port']}/webhooks/sendgrid"
        connection = await asyncpg.connect(owner.database_url)
        draw = random.Random(22)  # noqa: S311 - test data, not secrets
        stored_before = 0
        floor_process = None
        if floor:  # consumes every level's events as they come
            await connection.execute(ingest.FLOOR_TABLES)
            os.kill(tracker_pid(process), signal.SIGSTOP)
            assert owner.kafka_bootstrap_servers is not None
            total_unique = len(levels) * (total // len(ingest.STORY)) * len(ingest.STORY)
            floor_process = await start_floor(
                owner.database_url, owner.kafka_bootstrap_servers, total_unique
            )
        await connection.execute(
            ingest.COUNTER.format(table="floor_events" if floor else "delivery_events")
        )
        for level in levels:
            deliveries = await ingest.prepare_deliveries(
                owner.database_url, total // len(ingest.STORY), f"level{level}"
            )
            if floor:
                await connection.execute(
                    "INSERT INTO floor_deliveries SELECT * FROM deliveries d "
                    "WHERE NOT EXISTS (SELECT 1 FROM floor_deliveries f WHERE f.id = d.id)"
                )
            events = ingest.sendgrid_events(deliveries, draw)
            unique = len({event["sg_event_id"] for event in events})
            batches = scratch / f"batches-{level}.jsonl"
            batches.write_text(
                "\n".join(
                    json.dumps(events[start : start + ingest.BATCH])
                    for start in range(0, len(events), ingest.BATCH)
                )
            )
            figures = await ingest.load(url, key, batches, level)
            answered = time.perf_counter()
            while True:
                stored = await connection.fetchval("SELECT n FROM bench_stored")
                if stored - stored_before >= unique:
                    break
                await asyncio.sleep(0.02)
            catch_up = time.perf_counter() - answered
            stored_before = stored
            posts = figures["posts"]
            results.append(
                f"{level:>3} posts in flight: {len(events) / figures['seconds']:>7,.0f} events/s "
                f"accepted, p50 {figures['p50_ms']:6.1f} ms, p99 {figures['p99_ms']:6.1f} ms, "
                f"{figures['refused']} posts refused (503) of {posts + figures['refused']} "
                f"({100 * figures['refused'] / (posts + figures['refused']):.0f} %); "
                f"{'floor' if floor else 'tracker'} caught up {catch_up:.2f} s "
                "after the last answer"
            )
        await connection.close()
        if floor_process is not None:
            floor_process.wait(60)
    finally:
        if floor:
            with contextlib.suppress(RuntimeError):  # it stops as it was: running
                os.kill(tracker_pid(process), signal.SIGCONT)
        process.terminate()
        process.wait(60)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; date {time.strftime('%Y-%m-%d %H:%M %Z')}"
    )
    print(f"broker: {brokers.describe(broker)}")
    print(f"up's banner: {banner_broker(scratch / 'up.log')}")
    print(f"relaybook up (a process per deployable), {total:,} events a level, batches of 100")
    if floor:
        print("the tracker stopped; bench/ingest.py's tracker floor consuming in its place")
    for line in results:
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--concurrency", default="8,32,128")
    parser.add_argument(
        "--floor", action="store_true", help="the tracker floor in the tracker's place"
    )
    brokers.add_option(parser)
    if sys.argv[1:2] == ["--floor-consumer"]:  # the floor's own process (start_floor)
        database_url, bootstrap, total = sys.argv[2:5]
        floor_consumer(database_url, bootstrap, int(total))
        return
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    asyncio.run(run(args.events, levels, args.broker, floor=args.floor))


if __name__ == "__main__":
    main()
