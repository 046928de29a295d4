"""Broker failures on a three-node Apache Kafka (replication 3, ``min.insync.replicas=2``,
``acks=all``, idempotent producer): a node SIGKILLed under webhook load or during a
fan-out and its sends, and the whole cluster stopped and started again.

What must hold: ingest answers 2xx or 503 with ``Retry-After``, never 500, and every
event it answered 2xx for is stored once; every send job is published once and sent to
the provider once; the consumers go on without the dead node; after a full restart the
committed offsets and the events nobody had read yet are all there.

The cluster is this module's own (a node of the session's broker is not to be killed).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from relaybook.platform.kafka import client_options, ensure_topics
from relaybook.tooling.kafka_cluster import EmbeddedKafka
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System
from schemas import TOPICS
from tests.relaybook.test_outages import configured, stored, webhook_load
from tests.send_worker.test_unknown_outcomes import delivery_of
from tests.support import ADMIN, embedded_kafka, notice, until
from tracker.app import GROUP

pytestmark = pytest.mark.apache_kafka
log = logging.getLogger(__name__)

FANOUT = 20_000


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedKafka]:
    with embedded_kafka(3) as kafka:
        yield kafka


@pytest.fixture
async def on_cluster(settings: Settings, cluster: EmbeddedKafka) -> AsyncIterator[Settings]:
    """The test's settings on the three-node cluster, its topics created; every node is
    running again when the test ends."""
    own = configured(
        settings,
        kafka_bootstrap_servers=cluster.bootstrap_servers,
        kafka_replication_factor=3,
        kafka_enable_idempotence=True,
    )
    await ensure_topics(own, TOPICS)
    yield own
    for node in range(1, 4):
        if cluster._processes[node - 1].poll() is not None:
            cluster.restart(node)
    await asyncio.to_thread(cluster.wait_until_ready)


async def leaders(settings: Settings, topic: str) -> collections.Counter[int]:
    """How many of ``topic``'s partitions each node leads."""
    client = AIOKafkaClient(**client_options(settings))
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        name = settings.topic(topic)
        return collections.Counter(
            client.cluster.leader_for_partition(TopicPartition(name, partition))
            for partition in client.cluster.partitions_for_topic(name) or ()
        )
    finally:
        await client.close()


async def victim(settings: Settings, cluster: EmbeddedKafka, which: str, topic: str) -> int:
    if which == "controller":
        return cluster.active_controller()
    return (await leaders(settings, topic)).most_common(1)[0][0]


async def all_stored(url: str, event_ids: set[str]) -> bool:
    return len(await stored(url, event_ids)) == len(event_ids)


@pytest.mark.parametrize("which", ["partition leader", "controller"])
async def test_a_node_killed_under_webhook_load_loses_nothing_and_stores_nothing_twice(
    on_cluster: Settings, cluster: EmbeddedKafka, which: str
) -> None:
    url = on_cluster.database_url or ""
    async with webhook_load(on_cluster, {"ingest", "tracker"}) as load:
        load.start()
        await load.answered("webhook")
        flowing = set(load.accepted)  # through ingest, Kafka and the tracker, before the kill
        await until(lambda: all_stored(url, flowing), within=30)
        node = await victim(on_cluster, cluster, which, "delivery-events")
        cluster.kill(node)
        killed_at, before_kill = time.monotonic(), collections.Counter(load.statuses)

        async def accepting_again() -> bool:
            return (load.statuses - before_kill)["webhook", 200] >= 3

        # 503s while the dead node's partitions have no leader, then 2xx again
        await until(accepting_again, within=30)
        recovered_s = time.monotonic() - killed_at
        # the tracker goes on with two nodes: what was accepted so far is stored
        await until(lambda: all_stored(url, set(load.accepted)), within=30)
        cluster.restart(node)
        await asyncio.to_thread(cluster.wait_until_ready)
        await load.answered("webhook")
        await load.stop()
        await load.drain()

    log.info(
        "node %s (%s) killed; 2xx again after %.1f s; webhooks %s",
        node,
        which,
        recovered_s,
        load.of("webhook"),
    )
    assert set(load.of("webhook")) <= {200, 503}, load.statuses
    assert load.missing_retry_after == 0
    await until(lambda: all_stored(url, load.accepted), within=60)
    assert set((await stored(url, load.accepted)).values()) == {1}


@pytest.mark.parametrize("which", ["partition leader", "controller"])
async def test_a_node_killed_during_a_fanout_and_its_sends_sends_every_email_once(
    on_cluster: Settings, cluster: EmbeddedKafka, which: str
) -> None:
    """20,000 owners: a node (the leader of most send-job partitions, or the active
    controller) dies once a fifth of them have been sent to the provider; the rest go
    out on the two nodes left, every job is published once (once more only for a
    delivery a worker put back, unsure of its send) and every owner gets exactly one
    email."""
    async with (
        System(dataclasses.replace(on_cluster, admin_token=ADMIN)) as system,
        httpx.AsyncClient(
            base_url=system.servers["dispatcher"].url,
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=120,
        ) as api,
        httpx.AsyncClient(base_url=system.servers["sandbox"].url, timeout=120) as sandbox,
    ):
        db = await asyncpg.connect(on_cluster.database_url)
        try:
            body = notice(
                0,
                sms=None,
                recipients=[{"id": f"o{i}", "email": f"o{i}@example.org"} for i in range(FANOUT)],
            )
            created = await api.post("/v1/notices", json=body)
            assert created.status_code == 201, created.text
            notice_id = created.json()["id"]

            async def sent() -> int:
                return int(
                    await db.fetchval(
                        "SELECT count(*) FROM deliveries WHERE notice_id = $1::text::uuid "
                        "AND provider_message_id IS NOT NULL",
                        notice_id,
                    )
                )

            async def a_fifth_sent() -> bool:
                return await sent() >= FANOUT // 5

            await until(a_fifth_sent, within=120)
            node = await victim(on_cluster, cluster, which, "send-jobs")
            cluster.kill(node)
            at_kill = await sent()

            # a worker puts back a delivery whose send it cannot be sure of (its batch cut
            # off by the rebalance a lost node causes), and the relay publishes its job
            # again: seen here while it waits (a hold lasts the worker's grace, seconds)
            put_back: set[str] = set()

            async def all_sent() -> bool:
                rows = await db.fetch(
                    "SELECT id FROM deliveries WHERE notice_id = $1::text::uuid "
                    "AND next_attempt_at IS NOT NULL",
                    notice_id,
                )
                put_back.update(str(row["id"]) for row in rows)
                return await sent() == FANOUT

            # the relay, the workers and the tracker go on with the two nodes left
            await until(all_sent, within=300)
            deliveries = {
                str(row["id"])
                for row in await db.fetch(
                    "SELECT id FROM deliveries WHERE notice_id = $1::text::uuid", notice_id
                )
            }
            messages = (
                await sandbox.get("/_sandbox/messages", params={"provider": "sendgrid"})
            ).json()["messages"]
        finally:
            await db.close()

    log.info("node %s (%s) killed after %s of %s sends", node, which, at_kill, FANOUT)
    assert at_kill < FANOUT, "the node died before the last send"
    per_delivery = collections.Counter(delivery_of(message) for message in messages)
    assert per_delivery.keys() == deliveries
    assert set(per_delivery.values()) == {1}, "no email sent twice"
    jobs = await published(on_cluster, "send-jobs", FANOUT)
    assert len(jobs) == FANOUT
    again = {delivery for delivery, times in jobs.items() if times > 1}
    assert again <= put_back, f"published again, never put back: {sorted(again - put_back)}"
    assert set(jobs.values()) <= {1, 2}, "a job published at most once more, when put back"


async def published(settings: Settings, topic: str, at_least: int) -> collections.Counter[str]:
    """How many times each delivery's job was published to ``topic`` (read to its end)."""
    consumer = AIOKafkaConsumer(
        settings.topic(topic),
        **client_options(settings),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    counts: collections.Counter[str] = collections.Counter()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                counts.update(json.loads(record.value)["delivery_id"] for record in records)
            ends = await consumer.end_offsets(list(consumer.assignment()))
            positions = {partition: await consumer.position(partition) for partition in ends}
            if sum(counts.values()) >= at_least and all(
                positions[partition] >= end for partition, end in ends.items()
            ):
                break
    finally:
        await consumer.stop()
    return counts


async def test_the_whole_cluster_stopped_and_started_keeps_offsets_and_unread_events(
    on_cluster: Settings, cluster: EmbeddedKafka
) -> None:
    url = on_cluster.database_url or ""
    async with webhook_load(on_cluster, {"ingest", "tracker"}) as read:
        read.start()
        await read.answered("webhook")
        await read.stop()
        await read.drain()
        await until(lambda: all_stored(url, read.accepted), within=30)
    committed = await offsets(on_cluster, GROUP)
    assert sum(committed.values()) > 0

    # events accepted while no tracker runs: on the brokers' disks only
    async with webhook_load(on_cluster, {"ingest"}) as unread:
        unread.start()
        await unread.answered("webhook")
        await unread.stop()
        await unread.drain()
    assert unread.accepted
    assert not await stored(url, unread.accepted)

    await asyncio.to_thread(cluster.stop)
    cluster.launch()
    await asyncio.to_thread(cluster.wait_until_ready)
    # the group's coordinator answers with no offsets until it has loaded them from
    # __consumer_offsets (a consumer retries meanwhile too)
    after: dict[TopicPartition, int] = {}

    async def loaded() -> bool:
        nonlocal after
        after = await offsets(on_cluster, GROUP)
        return bool(after)

    await until(loaded, within=30)
    assert after == committed

    async with System(on_cluster, only={"tracker"}):
        await until(lambda: all_stored(url, unread.accepted), within=60)
    everything = read.accepted | unread.accepted
    assert set((await stored(url, everything)).values()) == {1}


async def offsets(settings: Settings, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {
        partition: meta.offset
        for partition, meta in found.items()
        if partition.topic.startswith(settings.topic_prefix)
    }
