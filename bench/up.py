"""Webhooks into the whole system as users run it (issue 22): `relaybook up`, each
deployable in its own process, the tracker and the bounce policy consuming what ingest
publishes, all on the same two cores.

For each number of posts in flight (8, 32 and 128 by default), the load generator of
bench/ingest.py (another process; it posts a refused batch again after 0.1 s, as SendGrid
does) posts fresh signed SendGrid batches of 100 events, each event unique and about a
real delivery; then the tracker's catch-up is timed: from the last post answered to the
last of those events stored in PostgreSQL (its lag back to zero). The events stored are
counted by a statement trigger on the events table (a row per statement, summed every 20
ms): a count(*) of a table growing to 300,000 rows took a good share of a core from the
very work it timed, and one row updated by every statement made concurrent transactions
wait on each other.

For each level it also prints the CPU seconds each process took (from /proc: the
deployables by name, PostgreSQL's processes together, the broker, the load generator),
during the load and during the catch-up, so that a slow catch-up shows where the cores
went. ``--profile DIR``: py-spy (in the dev dependencies) samples the tracker, or the
floor in its place, from each level's start to its catch-up, into
``DIR/<level>.txt`` (collapsed stacks, idle included), and the busiest frames are
printed. ``--statements``: PostgreSQL's client backends are sampled every 5 ms in
``pg_stat_activity`` over the same span (what each active one runs, and what it waits
on, if anything), and the statements and waits they were in most are printed: where
PostgreSQL's share of the cores went, by deployable's statement.

``--floor``: the tracker is stopped (SIGSTOP) and bench/ingest.py's tracker floor (a bare
consumer; COPY, each fetch split by key into as many transactions at once as the
tracker has lanes, each storing and projecting its part in one SQL statement, into copies
of the tables) consumes in its place, in a process of its own; its catch-up is timed the same
way. What the plainest way of doing the tracker's work does on the same cores, under the
same load.

On ``--broker`` tansu (default: in memory), kafka or kafka3 (Apache Kafka, embedded, one
node or three: `up` then turns the idempotent producer on and replicates the topics on
every node), as `up` is told through RELAYBOOK_EMBEDDED_BROKER (bench/brokers.py).

    .venv/bin/python bench/up.py [--events 60000] [--concurrency 8,32,128] [--lanes 3]
        [--floor] [--profile DIR] [--statements] [--broker kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import importlib.util
import json
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import brokers
import httpx
import temporary
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from prometheus_client.parser import text_string_to_metric_families

from provider_sandbox.signing import SendGridSigner
from relaybook.platform.settings import env_name
from relaybook.tooling import ownership
from relaybook.tooling.embedded import free_port_settings
from relaybook.tooling.settings import Settings

# bench/ingest.py's load generator, events and deliveries (bench/ is no package)
_spec = importlib.util.spec_from_file_location("ingest", Path(__file__).with_name("ingest.py"))
assert _spec is not None
assert _spec.loader is not None
ingest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ingest)


TICK = os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[int, list[bytes], float]]:
    """pid -> (its parent, its argv, its CPU seconds so far) for every process (/proc)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(proc.name)] = (int(stat[1]), argv, (int(stat[11]) + int(stat[12])) / TICK)
        except (OSError, ValueError, IndexError):
            continue
    return found


def tracker_pid(up: subprocess.Popen[bytes]) -> int:
    """The process `up` runs the tracker in."""
    for pid, (parent, argv, _) in processes().items():
        if parent == up.pid and argv[-2:] == [b"tracker", b""]:
            return pid
    raise RuntimeError("no tracker process under up")


def cpu_seconds(up: subprocess.Popen[bytes], data_dir: Path) -> dict[int, tuple[str, float]]:
    """pid -> (what it is, CPU seconds so far) for every process of this run: `up` and
    its deployables, the broker it started, the embedded PostgreSQL's processes (found by
    their data directory), this script and its children."""
    running = processes()
    roots = {up.pid: "up (supervisor)", os.getpid(): "bench (this script)"}
    for pid, (_, argv, _) in running.items():
        if str(data_dir).encode() in b" ".join(argv) and argv[0].endswith(b"postgres"):
            roots[pid] = "postgres"
    found = {}
    for pid, (_, argv, seconds) in running.items():
        ancestor, chain = pid, 0
        while ancestor not in roots and ancestor in running and chain < 64:
            ancestor, chain = running[ancestor][0], chain + 1
        if ancestor not in roots:
            continue
        if roots[ancestor] == "postgres" or pid in roots:
            what = roots[ancestor]
        elif b"--under-up" in argv:
            what = argv[argv.index(b"--under-up") + 1].decode()
        elif b"--floor-consumer" in argv:
            what = "tracker floor"
        else:
            what = Path(argv[0].decode(errors="replace")).name or "?"
        found[pid] = (what, seconds)
    return found


def cpu_spent(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds by kind of process between two :func:`cpu_seconds` (a process that
    ended in between is missing: the load generator is counted from its rusage)."""
    spent: dict[str, float] = {}
    for pid, (what, seconds) in after.items():
        spent[what] = spent.get(what, 0.0) + seconds - before.get(pid, (what, 0.0))[1]
    return spent


def cpu_line(spent: dict[str, float], seconds: float) -> str:
    busy = sorted(((cpu, what) for what, cpu in spent.items() if cpu >= 0.05), reverse=True)
    total = sum(cpu for cpu, _ in busy)
    parts = ", ".join(f"{what} {cpu:.2f}" for cpu, what in busy)
    return f"{seconds:.2f} s wall, {total:.2f} CPU s ({total / seconds:.2f} cores): {parts}"


@contextlib.contextmanager
def profiled(pid: int, profile: Path | None, level: int, lines: list[str]) -> Iterator[None]:
    """py-spy on ``pid`` into ``profile``/``level``.txt while in the block (none without a
    directory); its busiest frames are appended to ``lines``."""
    if profile is None:
        yield
        return
    out = profile / f"{level}.txt"
    spy = str(Path(sys.executable).with_name("py-spy"))  # the dev dependencies' own
    options = ["--format", "raw", "--idle", "--nonblocking", "--rate", "200"]
    profiler = subprocess.Popen(  # idle included, without pausing the process
        [spy, "record", "--pid", str(pid), *options, "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attached
    try:
        yield
    finally:
        lines.append(f"{level} posts in flight, from the load's start to the catch-up:")
        lines.extend(stop_profile(profiler, out))


#: what each active client backend but the sampler's own is doing: on the CPU (as far as
#: PostgreSQL knows) or waiting, and on which statement
ACTIVITY = """
SELECT coalesce(wait_event_type || ': ' || wait_event, 'on the CPU') AS doing, query
FROM pg_stat_activity
WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


def statement_name(query: str) -> str:
    """A statement as the sample counts it: its first line that is not a comment."""
    for line in query.splitlines():
        if line.strip() and not line.lstrip().startswith("--"):
            return " ".join(line.split())[:72]
    return "?"


#: PostgreSQL's I/O so far (PostgreSQL 17 and later): to tell, per level, whether a
#: checkpoint or the buffers' size wrote in the statements' place
IO = """
SELECT w.wal_bytes::bigint, w.wal_fpi, w.wal_buffers_full,
       (SELECT num_timed + num_requested FROM pg_stat_checkpointer) AS checkpoints,
       (SELECT coalesce(sum(writes), 0)::bigint FROM pg_stat_io
        WHERE backend_type = 'client backend') AS backend_writes,
       (SELECT coalesce(sum(writes), 0)::bigint FROM pg_stat_io
        WHERE backend_type IN ('background writer', 'checkpointer')) AS other_writes
FROM pg_stat_wal w
"""


@contextlib.asynccontextmanager
async def sampled(database_url: str, on: bool, level: int, lines: list[str]) -> AsyncIterator[None]:
    """While in the block, samples PostgreSQL's active backends every 5 ms (nothing unless
    ``on``); what they were doing most is appended to ``lines``."""
    if not on:
        yield
        return
    tally: collections.Counter[tuple[str, str]] = collections.Counter()
    samples = 0
    connection = await asyncpg.connect(database_url)
    io_before = dict(await connection.fetchrow(IO) or {})

    async def sample() -> None:
        nonlocal samples
        while True:
            for row in await connection.fetch(ACTIVITY):
                tally[row["doing"], statement_name(row["query"])] += 1
            samples += 1
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    try:
        yield
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        io_after = dict(await connection.fetchrow(IO) or {})
        io = {name: value - io_before[name] for name, value in io_after.items()}
        await connection.close()
        busy = sum(tally.values())
        lines.append(
            f"{level} posts in flight, PostgreSQL's backends in {samples} samples "
            f"(on average {busy / max(samples, 1):.2f} active at once):"
        )
        lines.append(
            f"  WAL {io['wal_bytes'] / 2**20:,.0f} MiB ({io['wal_fpi']:,} full pages, "
            f"{io['wal_buffers_full']:,} times the WAL buffers full); checkpoints "
            f"{io['checkpoints']}; pages written by client backends {io['backend_writes']:,}, "
            f"by the background writer and checkpointer {io['other_writes']:,}"
        )
        lines.extend(
            f"  {100 * count / busy:5.1f} %  {doing:<28} {statement}"
            for (doing, statement), count in tally.most_common(16)
        )


async def until_stored(connection: asyncpg.Connection, count: int) -> int:
    """Waits until the bench's counter of stored events reaches ``count``; returns it."""
    while True:
        stored: int = await connection.fetchval(ingest.STORED)
        if stored >= count:
            return stored
        await asyncio.sleep(0.02)


async def tracker_batches(port: int) -> tuple[float, float, float]:
    """The tracker's batches so far, from its /metrics: how many, their messages, and the
    seconds spent handling them."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    counts = {"count": 0.0, "messages": 0.0, "sum": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("group") != "relaybook-tracker":
                continue
            if sample.name == "relaybook_kafka_batch_seconds_count":
                counts["count"] += sample.value
            elif sample.name == "relaybook_kafka_batch_seconds_sum":
                counts["sum"] += sample.value
            elif sample.name == "relaybook_kafka_messages_consumed_total":
                counts["messages"] += sample.value
    return counts["count"], counts["messages"], counts["sum"]


def stop_profile(profiler: subprocess.Popen[bytes], out: Path) -> list[str]:
    """Stops py-spy; the frames the samples were in most (inclusive), as lines."""
    profiler.send_signal(signal.SIGINT)
    profiler.wait(30)
    if not out.exists():
        return [f"  py-spy wrote nothing (exit {profiler.returncode}): could it attach?"]
    inclusive: dict[str, int] = {}
    samples = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples += int(count)
        frames = {frame.split(":")[0] + ")" for frame in stack.split(";")}
        for frame in frames:
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    top = sorted(inclusive.items(), key=lambda item: -item[1])[:40]
    return [f"  {100 * count / samples:5.1f} %  {frame}" for frame, count in top]


async def start_floor(
    database_url: str, bootstrap: str, total: int, lanes: int
) -> subprocess.Popen[bytes]:
    """bench/ingest.py's tracker floor, in a process of its own, until ``total`` events;
    returns once its consumer joined its group."""
    arguments = ["--floor-consumer", database_url, bootstrap, str(total), str(lanes)]
    floor = subprocess.Popen(
        [sys.executable, __file__, *arguments],
        stdout=subprocess.PIPE,
    )
    assert floor.stdout is not None
    assert await asyncio.to_thread(floor.stdout.readline) == b"ready\n", "the floor failed"
    return floor


def floor_consumer(database_url: str, bootstrap: str, total: int, lanes: int) -> None:
    settings = Settings(
        database_url=database_url, kafka_bootstrap_servers=bootstrap, tracker_lanes=lanes
    )
    asyncio.run(
        ingest.tracker_floor(settings, database_url, total, lambda: print("ready", flush=True))
    )


def start_up(
    data_dir: Path, public_key: str, broker: str, lanes: int
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
        "RELAYBOOK_TRACKER_LANES": str(lanes),
    }
    log = (data_dir.parent / "up.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "relaybook.tooling.cli", "up"], env=env, stdout=log, stderr=log
    )
    return process, ports


def banner_broker(log: Path) -> str:
    """The broker `up` says it started (its banner's line), to check the environment was
    heard: the header names the broker the figures really come from."""
    for line in log.read_text(errors="replace").splitlines():
        if line.strip().startswith("broker "):
            return " ".join(line.split())
    return "(no broker line in up's banner: see up.log)"


async def until_ready(
    ports: dict[str, int], process: subprocess.Popen[bytes], data_dir: Path
) -> ownership.Owner:
    """Waits until every deployable is ready and `up` said so in its data dir (the
    deployables may answer before `up` has written where its broker is); returns what it
    wrote."""
    urls = [
        f"http://127.0.0.1:{port}/readyz" for name, port in ports.items() if name != "sandbox_port"
    ]
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            assert process.poll() is None, "up exited"
            try:
                answers = [await client.get(url) for url in urls]
                owner = ownership.read_owner(data_dir)
                if all(answer.status_code == 200 for answer in answers) and owner and owner.ready:
                    return owner
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)


async def run(
    total: int,
    levels: list[int],
    broker: str,
    *,
    lanes: int,
    floor: bool = False,
    profile: Path | None,
    statements: bool = False,
) -> None:
    scratch = temporary.directory("relaybook-bench-up-")
    data_dir = scratch / "data"
    private = ec.generate_private_key(ec.SECP256R1())
    key = base64.b64encode(
        private.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    ).decode()
    process, ports = start_up(data_dir, SendGridSigner(private).public_key, broker, lanes)
    results: list[str] = []
    cpu: list[str] = []
    profiles: list[str] = []
    try:
        owner = await until_ready(ports, process, data_dir)
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
                owner.database_url, owner.kafka_bootstrap_servers, total_unique, lanes
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
            consumer = floor_process.pid if floor_process else tracker_pid(process)
            batches_before = None if floor else await tracker_batches(ports["tracker_port"])
            # every figure taken while py-spy (a child of this script too) still runs: its
            # CPU is its own line, never the load generator's (counted once reaped); the
            # sampler's backend is PostgreSQL's, a few per cent of a core
            async with sampled(owner.database_url, statements, level, profiles):
                with profiled(consumer, profile, level, profiles):
                    cpu_start, children_start = cpu_seconds(process, data_dir), children_cpu()
                    started = time.perf_counter()
                    figures = await ingest.load(url, key, batches, level)
                    answered = time.perf_counter()
                    left = stored_before + unique - await connection.fetchval(ingest.STORED)
                    cpu_answered, generator = cpu_seconds(process, data_dir), children_cpu()
                    stored = await until_stored(connection, stored_before + unique)
                    catch_up = time.perf_counter() - answered
                    cpu_caught_up = cpu_seconds(process, data_dir)
            during_load = cpu_spent(cpu_start, cpu_answered)
            during_load["load generator"] = generator - children_start
            cpu.append(
                f"{level:>3} posts in flight, the load: {cpu_line(during_load, answered - started)}"
            )
            cpu.append(
                f"{level:>3} posts in flight, the catch-up: "
                + cpu_line(cpu_spent(cpu_answered, cpu_caught_up), catch_up)
            )
            stored_before = stored
            if batches_before is not None:
                count, messages, seconds = (
                    after - before
                    for after, before in zip(
                        await tracker_batches(ports["tracker_port"]), batches_before, strict=True
                    )
                )
                cpu.append(
                    f"{level:>3} posts in flight, the tracker's batches: {count:,.0f}, "
                    f"{messages / max(count, 1):,.0f} messages and "
                    f"{1000 * seconds / max(count, 1):,.0f} ms each on average"
                )
            posts = figures["posts"]
            results.append(
                f"{level:>3} posts in flight: {len(events) / figures['seconds']:>7,.0f} events/s "
                f"accepted, p50 {figures['p50_ms']:6.1f} ms, p99 {figures['p99_ms']:6.1f} ms, "
                f"{figures['refused']} posts refused (503) of {posts + figures['refused']} "
                f"({100 * figures['refused'] / (posts + figures['refused']):.0f} %); "
                f"{'floor' if floor else 'tracker'} caught up {catch_up:.2f} s "
                f"after the last answer ({left:,} events left then, "
                f"{left / catch_up:,.0f} a second)"
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
    print(
        f"relaybook up (a process per deployable), {total:,} events a level, batches of 100, "
        f"the tracker's lanes (and the floor's transactions): {lanes}"
    )
    if floor:
        print("the tracker stopped; bench/ingest.py's tracker floor consuming in its place")
    for line in results:
        print(line)
    print("CPU seconds by process (the load generator from its rusage):")
    for line in cpu:
        print(line)
    for line in profiles:
        print(line)


def children_cpu() -> float:
    """CPU seconds of this script's children that have ended (the load generator)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--concurrency", default="8,32,128")
    parser.add_argument(
        "--floor", action="store_true", help="the tracker floor in the tracker's place"
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the tracker (or its floor) into this directory"
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="sample what PostgreSQL's backends run, every 5 ms",
    )
    parser.add_argument(
        "--lanes",
        type=int,
        default=Settings().tracker_lanes,
        help="the tracker's lanes (RELAYBOOK_TRACKER_LANES), and its floor's transactions",
    )
    brokers.add_option(parser)
    if sys.argv[1:2] == ["--floor-consumer"]:  # the floor's own process (start_floor)
        database_url, bootstrap, total, lanes = sys.argv[2:6]
        floor_consumer(database_url, bootstrap, int(total), int(lanes))
        return
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    asyncio.run(
        run(
            args.events,
            levels,
            args.broker,
            lanes=args.lanes,
            floor=args.floor,
            profile=args.profile,
            statements=args.statements,
        )
    )


if __name__ == "__main__":
    main()
