"""Kafka plumbing against the real broker: acks=all JSON messages checked against their
schemas, consumer groups that commit only after the handler returns, restarts that resume
at the committed offset, and dead letters for messages that break their contract."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from prometheus_client import REGISTRY

import schemas
from relaybook.platform.deadletters import DeadLetters
from relaybook.platform.kafka import Consumer, Producer, Record, client_options, murmur2
from relaybook.platform.kafka.consumer import LAG, _Rebalance
from relaybook.tooling.settings import Settings
from schemas import CONTRACTS


def send_job(**changes: Any) -> dict[str, Any]:
    job = schemas.example("send-job.v1.json") | {"job_id": str(uuid.uuid4())}
    return job | changes


async def until(condition: Callable[[], bool | Awaitable[bool]], within: float = 20) -> None:
    """Polls ``condition`` (a function, or a coroutine function) until it holds; fails
    past ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        met = condition()
        if inspect.isawaitable(met):
            met = await met
        if met:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def commits(settings: Settings, group: str) -> AsyncIterator[Callable[[], Awaitable[bool]]]:
    """A probe, read from outside consumer group ``group`` (it does not join it): has the
    group committed every message of send-jobs? Then it has been handed all there is, and
    a message it has not handled by then will never come."""
    reader = AIOKafkaConsumer(**client_options(settings), group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        topic = settings.topic("send-jobs")
        # the partitions the test's topics were created with (a consumer that has not
        # subscribed may not have the topic's metadata yet: Apache Kafka's did not)
        partitions = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]

        async def at_the_end() -> bool:
            ends = await reader.end_offsets(partitions)
            committed = {tp: await reader.committed(tp) or 0 for tp in partitions}
            return all(committed[tp] >= ends[tp] for tp in partitions)

        yield at_the_end
    finally:
        await reader.stop()


@pytest.fixture
def letters(pool: asyncpg.Pool, producer: Producer, settings: Settings) -> DeadLetters:
    return DeadLetters(pool, producer, settings.topic("dead-letters"))


async def consume(
    settings: Settings,
    letters: DeadLetters,
    handler: Callable[[list[Record]], Awaitable[None]],
    done: Callable[[], bool],
    group: str = "test-group",
    *,
    to_the_end: bool = False,
    **options: Any,
) -> None:
    """Runs a consumer in the group until ``done()`` holds, then stops it. Fails when it
    does not hold in time, or when the consumer's loop ends first.

    ``to_the_end``: and, the consumer still running, until the group has committed every
    message of the topic: a test that checks what did *not* arrive checks it then, when
    anything still to come would have come (after the stop, nothing can)."""
    consumer = Consumer(
        settings, ["send-jobs"], group, dead_letters=letters, contracts=CONTRACTS, **options
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run(handler))
    try:
        async with contextlib.AsyncExitStack() as probes:
            at_the_end = (
                await probes.enter_async_context(commits(settings, group)) if to_the_end else None
            )

            async def holds() -> bool:
                if task.done():
                    task.result()  # what it raised, if it did
                    raise AssertionError("the consumer's loop ended before the test's condition")
                return done() and (at_the_end is None or await at_the_end())

            await until(holds)
    finally:
        await consumer.stop()
        await asyncio.gather(task, return_exceptions=True)


async def test_messages_round_trip_through_a_group_and_a_restart_resumes_at_the_commit(
    settings: Settings, producer: Producer, letters: DeadLetters
) -> None:
    first = [send_job(recipient_id=f"r{i}") for i in range(10)]
    await producer.send_many("send-jobs", [(job["recipient_id"], job) for job in first])
    seen: list[Record] = []

    async def handler(records: list[Record]) -> None:
        seen.extend(records)

    await consume(settings, letters, handler, lambda: len(seen) >= 10)
    assert sorted(r.value["job_id"] for r in seen) == sorted(j["job_id"] for j in first)
    assert all(r.key == r.value["recipient_id"] for r in seen)

    second = [send_job(recipient_id=f"s{i}") for i in range(5)]
    await producer.send_many("send-jobs", [(job["recipient_id"], job) for job in second])
    resumed: list[Record] = []

    async def handler_after_restart(records: list[Record]) -> None:
        resumed.extend(records)

    # the restarted member is handed everything the group did not commit before it stops:
    # had it gone back before the commit, the first ten would be among what it handled
    await consume(
        settings, letters, handler_after_restart, lambda: len(resumed) >= 5, to_the_end=True
    )
    assert sorted(r.value["job_id"] for r in resumed) == sorted(j["job_id"] for j in second)


async def test_a_batch_whose_handler_fails_is_consumed_again_until_it_succeeds(
    settings: Settings, producer: Producer, letters: DeadLetters
) -> None:
    """Nothing is committed for a batch that fails for a transient reason (the database
    away): the consumer goes back to the committed offset and tries again, and the
    messages after it are not skipped."""
    first, second = send_job(), send_job()
    await producer.send("send-jobs", first, key="r1")
    calls: list[list[str]] = []

    async def flaky(records: list[Record]) -> None:
        calls.append([r.value["job_id"] for r in records])
        if len(calls) <= 2:
            if len(calls) == 1:
                await producer.send("send-jobs", second, key="r1")
            raise ConnectionRefusedError("database down")

    await consume(
        settings, letters, flaky, lambda: second["job_id"] in {j for c in calls[2:] for j in c}
    )
    assert calls[0] == [first["job_id"]]
    handled = [job for call in calls[2:] for job in call]
    assert handled[0] == first["job_id"], "the failed message comes back first"
    assert second["job_id"] in handled


async def test_lanes_handle_a_batch_in_parts_at_once_each_keys_messages_in_one_part_in_order(
    settings: Settings, producer: Producer, letters: DeadLetters
) -> None:
    """``lanes``: a batch is split by key and the parts handled at the same time (the
    tracker's transactions on several of the database's cores); a key's messages are all
    in one part, in the order they were published."""
    keys = [f"owner-{i}" for i in range(30)]  # 30 keys: all in one of 3 lanes is 3**-29
    jobs = [(keys[n % 30], send_job(attempt=n + 1)) for n in range(120)]
    await producer.send_many("send-jobs", jobs)
    calls: list[list[Record]] = []
    running = most = 0

    async def handler(records: list[Record]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        calls.append(records)
        await asyncio.sleep(0.3)  # the other parts start meanwhile
        running -= 1

    await consume(
        settings,
        letters,
        handler,
        lambda: sum(map(len, calls)) >= len(jobs) and running == 0,
        lanes=3,
        gather_ms=300,  # the whole batch in one fetch
    )
    assert most >= 2, "the parts of a batch are handled at once"
    assert all(len(call) < len(jobs) for call in calls), "a batch is split"
    for key in keys:
        holding = [call for call in calls if any(r.key == key for r in call)]
        seen = [r.value["attempt"] for call in holding for r in call if r.key == key]
        assert seen == [n + 1 for n, (k, _) in enumerate(jobs) if k == key], "in order"
        assert len(holding) == 1, f"{key} is in one part"


async def test_a_lane_that_fails_leaves_its_whole_batch_uncommitted_the_parts_that_passed_too(
    settings: Settings, producer: Producer, letters: DeadLetters
) -> None:
    """Nothing of a batch is committed until every lane returned: when one fails, the
    other lanes run to their end, and a member that joins the group afterwards consumes
    the whole batch again, the parts that were handled included (handlers are
    idempotent)."""
    keys = [f"owner-{i}" for i in range(30)]
    await producer.send_many("send-jobs", [(key, send_job()) for key in keys])
    starts: list[float] = []
    ends: list[tuple[float, set[str], bool]] = []  # when it started, what it held, passed

    async def failing(records: list[Record]) -> None:
        started = time.monotonic()
        starts.append(started)
        await asyncio.sleep(0.2)  # the batch's other lanes run meanwhile
        held = {r.value["job_id"] for r in records}
        # the first lane to end fails (the database went away), and so does any retry
        if not ends or started > ends[0][0] + 0.1:
            ends.append((started, held, False))
            raise ConnectionRefusedError("database down")
        ends.append((started, held, True))

    def in_the_batch(started: float) -> bool:  # its lanes started together
        return abs(started - ends[0][0]) < 0.1

    def batch_over() -> bool:
        if not ends:
            return False
        lanes = [s for s in starts if in_the_batch(s)]
        return len(lanes) >= 2 and len([e for e in ends if in_the_batch(e[0])]) == len(lanes)

    await consume(settings, letters, failing, batch_over, lanes=3, gather_ms=300)
    batch = [(held, passed) for started, held, passed in ends if in_the_batch(started)]
    assert any(passed for _, passed in batch), "other lanes of the batch ran to their end"
    everything = set().union(*(held for held, _ in batch))
    again: set[str] = set()

    async def handler(records: list[Record]) -> None:
        again.update(r.value["job_id"] for r in records)

    await consume(settings, letters, handler, lambda: everything <= again)


async def test_an_invalid_message_is_refused_before_anything_is_sent(
    settings: Settings, producer: Producer
) -> None:
    valid = send_job()
    with pytest.raises(schemas.MessageError, match="channel"):
        await producer.send_many("send-jobs", [("a", valid), ("b", send_job(channel="fax"))])
    consumer = AIOKafkaConsumer(
        settings.topic("send-jobs"),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = consumer.assignment() or await _partitions(consumer, settings)
        ends = await consumer.end_offsets(list(partitions))
    finally:
        await consumer.stop()
    assert sum(ends.values()) == 0


async def _partitions(consumer: AIOKafkaConsumer, settings: Settings) -> set[Any]:
    from aiokafka import TopicPartition  # noqa: PLC0415

    ids = await consumer._client.fetch_all_metadata()
    return {
        TopicPartition(settings.topic("send-jobs"), p)
        for p in ids.partitions_for_topic(settings.topic("send-jobs"))
    }


async def test_a_message_that_breaks_its_contract_goes_to_dead_letters_and_the_rest_flows(
    settings: Settings, producer: Producer, letters: DeadLetters
) -> None:
    raw = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await raw.start()
    good = send_job()
    try:
        # all on one partition, the good one last: once it is handled, the two before it
        # were set aside (on three nodes, another partition's fetch can come first)
        for value in (
            b"{not json",
            json.dumps({"schema": "send-job/v1", "job_id": "nope"}).encode(),
            json.dumps(good).encode(),
        ):
            await raw.send_and_wait(settings.topic("send-jobs"), value, key=b"k", partition=0)
    finally:
        await raw.stop()
    seen: list[Record] = []

    async def handler(records: list[Record]) -> None:
        seen.extend(records)

    await consume(settings, letters, handler, lambda: bool(seen))
    assert [r.value["job_id"] for r in seen] == [good["job_id"]]

    dead = AIOKafkaConsumer(
        settings.topic("dead-letters"),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await dead.start()
    published: list[Any] = []
    try:
        deadline = time.monotonic() + 10
        while len(published) < 2 and time.monotonic() < deadline:
            for messages in (await dead.getmany(timeout_ms=500)).values():
                published.extend(messages)
    finally:
        await dead.stop()
    assert sorted(m.value for m in published) == sorted(
        [b"{not json", json.dumps({"schema": "send-job/v1", "job_id": "nope"}).encode()]
    )
    headers = dict(published[0].headers)
    assert headers["source_topic"] == settings.topic("send-jobs").encode()
    assert headers["consumer_group"] == b"test-group"
    assert headers["reason"] == b"contract_violation"
    assert headers["error"]
    stored = await letters.list()
    assert sorted(letter.value for letter in stored) == sorted(m.value for m in published)
    assert {letter.reason for letter in stored} == {"contract_violation"}


async def test_a_message_that_fails_for_good_is_set_aside_and_its_batch_goes_on(
    settings: Settings,
    producer: Producer,
    letters: DeadLetters,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
) -> None:
    """A poison message (here a NUL, which PostgreSQL refuses in a text) fails its
    batch's transaction every time: it is isolated and set aside, every other message of
    the batch is stored, the offsets advance, and a good message after it is stored at
    once. Once the cause is fixed, a replay stores it too, once."""
    await db.execute("CREATE TABLE seen (job_id text PRIMARY KEY, recipient text NOT NULL)")
    jobs = [send_job(recipient_id=f"r{i}") for i in range(40)]
    poison = send_job(recipient_id="bad\u0000owner")
    jobs.insert(17, poison)
    fixed = False

    async def store(records: list[Record]) -> None:
        values = [
            (r.value["job_id"], "fixed" if fixed else r.value["recipient_id"]) for r in records
        ]
        async with pool.acquire() as connection, connection.transaction():
            await connection.executemany(
                "INSERT INTO seen VALUES ($1, $2) ON CONFLICT DO NOTHING", values
            )

    async def stored() -> set[str]:
        return {row["job_id"] for row in await db.fetch("SELECT job_id FROM seen")}

    async def run_until(job_ids: set[str]) -> None:
        consumer = Consumer(
            settings, ["send-jobs"], "poisoned", dead_letters=letters, contracts=CONTRACTS
        )
        await consumer.start_running(store, "poisoned")
        try:
            deadline = time.monotonic() + 20
            while not job_ids <= await stored():
                assert time.monotonic() < deadline, "not stored in time"
                await asyncio.sleep(0.05)
        finally:
            await consumer.stop()

    # one key, one partition: the poison sits between good messages of one batch
    await producer.send_many("send-jobs", [("same", job) for job in jobs])
    late = send_job(recipient_id="late")
    await producer.send("send-jobs", late, key="same")
    started = time.monotonic()
    await run_until({job["job_id"] for job in jobs if job is not poison} | {late["job_id"]})
    assert time.monotonic() - started < 10
    assert poison["job_id"] not in await stored()

    [letter] = await letters.list()
    assert json.loads(letter.value)["job_id"] == poison["job_id"]
    assert letter.reason == "data_error"
    assert "CharacterNotInRepertoire" in letter.error
    assert letter.consumer_group == "poisoned"
    assert letter.key == b"same"

    fixed = True
    assert await letters.replay([letter], by="ops") == 1
    assert await letters.list() == []
    await run_until({poison["job_id"]})
    [replayed] = await letters.list(include_replayed=True)
    assert replayed.replayed_by == "ops"


async def test_members_joining_and_leaving_a_group_lose_no_message(
    settings: Settings, producer: Producer, letters: DeadLetters
) -> None:
    """Partitions move between members as they come and go; every message is handled by
    someone, and a batch is committed by the member that handled it or handled again."""
    seen: dict[str, list[str]] = {"a": [], "b": []}
    produced: list[str] = []

    async def publish(count: int) -> None:
        jobs = [send_job(recipient_id=f"r{len(produced) + i}") for i in range(count)]
        await producer.send_many("send-jobs", [(j["recipient_id"], j) for j in jobs])
        produced.extend(j["job_id"] for j in jobs)

    def handler_for(member: str) -> Callable[[list[Record]], Awaitable[None]]:
        async def handler(records: list[Record]) -> None:
            seen[member].extend(r.value["job_id"] for r in records)

        return handler

    def handled() -> set[str]:
        return set(seen["a"]) | set(seen["b"])

    a = Consumer(settings, ["send-jobs"], "shared", dead_letters=letters, contracts=CONTRACTS)
    b = Consumer(settings, ["send-jobs"], "shared", dead_letters=letters, contracts=CONTRACTS)
    await a.start()
    task_a = asyncio.create_task(a.run(handler_for("a")))
    await publish(30)
    await until(lambda: len(handled()) >= 30)
    await b.start()
    task_b = asyncio.create_task(b.run(handler_for("b")))
    await publish(30)
    await until(lambda: len(handled()) >= 60)
    await a.stop()
    await task_a
    await publish(30)
    await until(lambda: set(produced) <= set(seen["b"]) | set(seen["a"]))
    await b.stop()
    await task_b
    assert handled() == set(produced)
    assert seen["b"], "the second member got partitions"


@pytest.mark.parametrize(
    ("key", "java"),
    [  # org.apache.kafka.common.utils.UtilsTest.testMurmur2
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_is_the_java_clients(key: str, java: int) -> None:
    assert murmur2(key.encode()) == java & 0xFFFFFFFF


def test_murmur2_agrees_with_aiokafkas_on_every_length() -> None:
    draw = random.Random(4)
    for length in range(200):
        for _ in range(5):
            key = draw.randbytes(length)
            assert murmur2(key) == aiokafka_murmur2(key), key


async def test_many_messages_keep_each_keys_order_on_the_java_clients_partition(
    settings: Settings, producer: Producer
) -> None:
    """send_many fills record batches itself: a key's messages must stay in order across
    batches, on the partition any other Kafka client would pick for that key."""
    keys = [f"owner-{i}" for i in range(7)]
    messages = [(keys[n % 7], send_job(attempt=n + 1)) for n in range(3000)]  # many batches
    await producer.send_many("send-jobs", messages)
    plain = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await plain.start()
    try:  # where aiokafka's own send() puts each key
        expected = {
            key: (
                await (await plain.send(settings.topic("dead-letters"), b"x", key=key.encode()))
            ).partition
            for key in keys
        }
    finally:
        await plain.stop()
    consumer = AIOKafkaConsumer(
        settings.topic("send-jobs"),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen: dict[str, list[int]] = {key: [] for key in keys}
    try:
        deadline = time.monotonic() + 20
        while sum(map(len, seen.values())) < len(messages) and time.monotonic() < deadline:
            for partition, batch in (await consumer.getmany(timeout_ms=200)).items():
                for message in batch:
                    key = message.key.decode()
                    assert partition.partition == expected[key]
                    seen[key].append(json.loads(message.value)["attempt"])
    finally:
        await consumer.stop()
    for n, key in enumerate(keys):
        assert seen[key] == list(range(n + 1, 3001, 7))


async def test_a_consumer_for_one_channel_passes_over_the_others_jobs_undecoded(
    settings: Settings, producer: Producer, letters: DeadLetters
) -> None:
    jobs = [send_job(channel=("email", "sms")[i % 2], recipient_id=f"r{i}") for i in range(20)]
    await producer.send_many("send-jobs", [(job["recipient_id"], job) for job in jobs])
    seen: list[Record] = []

    async def handler(records: list[Record]) -> None:
        seen.extend(records)

    # until the group has committed all 20 jobs, email ones included: an email job
    # handed to the handler would be among what it saw by then
    await consume(
        settings,
        letters,
        handler,
        lambda: len(seen) >= 10,
        only={"channel": "sms"},
        to_the_end=True,
    )
    assert sorted(r.value["recipient_id"] for r in seen) == sorted(
        job["recipient_id"] for job in jobs if job["channel"] == "sms"
    )
    # the email jobs passed over were committed with the rest: the group resumes after them
    last = send_job(channel="email", recipient_id="last")
    await producer.send_many("send-jobs", [("last", last)])
    resumed: list[Record] = []

    async def after_restart(records: list[Record]) -> None:
        resumed.extend(records)

    await consume(settings, letters, after_restart, lambda: len(resumed) >= 1, to_the_end=True)
    assert [r.value["recipient_id"] for r in resumed] == ["last"]


async def test_two_members_of_a_group_in_one_process_stop_together_without_waiting_on_each_other(
    settings: Settings, producer: Producer, letters: DeadLetters
) -> None:
    """Leaving the group revokes partitions, and a revocation waits for the batch in
    hand: a member must not hold its own batch lock while it leaves."""
    await producer.send_many("send-jobs", [(str(i), send_job()) for i in range(200)])
    seen: list[Record] = []

    async def handler(records: list[Record]) -> None:
        seen.extend(records)
        await asyncio.sleep(0.01)

    members = [
        Consumer(
            settings, ["send-jobs"], "pair", dead_letters=letters, contracts=CONTRACTS, max_batch=20
        )
        for _ in range(2)
    ]
    for number, member in enumerate(members):
        await member.start_running(handler, f"pair-{number}")
    await until(lambda: len(seen) >= 200)
    first, second = members
    await asyncio.wait_for(first.stop(), 20)
    # the second stops while the first's departure makes it rejoin (revoking first): the
    # moment the scenario picks, about one heartbeat (100 ms) after the departure, not a
    # wait for an outcome (whenever it stops, it must stop within the 20 s)
    await asyncio.sleep(0.1)
    await asyncio.wait_for(second.stop(), 20)


async def test_a_batch_stuck_at_stop_is_cancelled_uncommitted_and_consumed_again(
    settings: Settings, producer: Producer, letters: DeadLetters
) -> None:
    """A stop waits for the batch in hand, but not forever (a hung database call would
    hold a deployable's shutdown until it is killed): past its grace the batch is
    cancelled, left uncommitted, and the group's next member consumes it."""
    await producer.send_many("send-jobs", [(str(i), send_job()) for i in range(5)])
    started = asyncio.Event()

    async def stuck(_records: list[Record]) -> None:
        started.set()
        await asyncio.Event().wait()

    member = Consumer(settings, ["send-jobs"], "stuck", dead_letters=letters, contracts=CONTRACTS)
    await member.start_running(stuck, "stuck")
    await asyncio.wait_for(started.wait(), 20)
    began = time.monotonic()
    await asyncio.wait_for(member.stop(grace_s=0.5), 10)
    assert time.monotonic() - began < 8  # the grace, the cancelled batch, leaving the group
    again: list[Record] = []

    async def handler(records: list[Record]) -> None:
        again.extend(records)

    await consume(settings, letters, handler, lambda: len(again) >= 5, group="stuck")


async def test_a_stop_cancelled_by_its_caller_is_cancelled(
    settings: Settings, producer: Producer, letters: DeadLetters
) -> None:
    """The caller's cancellation (a shutdown's own timeout) reaches the caller; it is not
    taken for the end of the consumer's loop and swallowed."""
    await producer.send_many("send-jobs", [("0", send_job())])
    started = asyncio.Event()

    async def slow(_records: list[Record]) -> None:
        started.set()
        await asyncio.sleep(3)

    member = Consumer(
        settings, ["send-jobs"], "cancelled-stop", dead_letters=letters, contracts=CONTRACTS
    )
    await member.start_running(slow, "cancelled-stop")
    await asyncio.wait_for(started.wait(), 20)
    stopping = asyncio.create_task(member.stop())
    # once the loop is told to stop, stop() waits on the batch in hand (3 s): cancelled
    # before it began, the task would raise CancelledError whatever stop() does with one
    await until(member._stopping.is_set)  # (no public sign of a stop begun)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    await member.stop()


async def test_a_revoked_partition_leaves_its_lag_series_to_the_new_owner() -> None:
    partition = TopicPartition("t.send-jobs", 4)
    LAG.labels(partition.topic, "4", "lagging").set(7)
    await _Rebalance(asyncio.Lock(), "lagging").on_partitions_revoked([partition])
    labels = {"topic": partition.topic, "partition": "4", "group": "lagging"}
    assert REGISTRY.get_sample_value("relaybook_kafka_consumer_lag", labels) is None
