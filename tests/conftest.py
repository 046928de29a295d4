"""Real servers for every test: one PostgreSQL and one Kafka-protocol broker per session.

PostgreSQL is the embedded server, or the one ``RELAYBOOK_DATABASE_URL`` names (CI runs
the suite on both). The broker is Tansu, or with ``--broker=kafka`` (``make test-kafka``)
an embedded Apache Kafka of ``--kafka-nodes`` nodes, idempotent producer on; only the
tests that use the broker run then. Each test gets its own database, cloned from a
migrated template, and its own topic prefix, so tests never see each other's rows or
messages.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from relaybook.platform import database
from relaybook.platform.kafka import Producer, ensure_topics
from relaybook.tooling.embedded import EmbeddedBroker, EmbeddedPostgres, free_port_settings
from relaybook.tooling.kafka_cluster import EmbeddedKafka
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System
from schemas import CONTRACTS, TOPICS
from tests.support import ADMIN, embedded_kafka


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("relaybook")
    group.addoption(
        "--broker",
        choices=("tansu", "kafka"),
        default="tansu",
        help="the session's broker: tansu (in memory, default) or kafka (Apache Kafka, "
        "embedded; runs only the tests that use the broker)",
    )
    group.addoption(
        "--kafka-nodes",
        type=int,
        choices=(1, 3),
        default=1,
        help="nodes of the embedded Apache Kafka (3: replication 3, min.insync.replicas 2)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On Apache Kafka, the tests that never reach the broker are left out: the Tansu
    pass has run them already. On Tansu, those marked ``apache_kafka`` (they start
    clusters of their own, or secured ones) are left out: the Kafka pass runs them."""
    if config.getoption("--broker") != "kafka":
        kept = [item for item in items if item.get_closest_marker("apache_kafka") is None]
    else:
        kept = [
            item
            for item in items
            if "broker" in getattr(item, "fixturenames", ())
            or item.get_closest_marker("apache_kafka") is not None
        ]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead (works for socket URLs too)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    configured = os.environ.get("RELAYBOOK_DATABASE_URL")
    if configured:
        yield configured
        return
    scratch = Path(tempfile.mkdtemp(prefix="relaybook-test-pg-"))
    server = EmbeddedPostgres(scratch)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


async def _admin(postgres_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(postgres_url)


@pytest.fixture(scope="session")
async def template_database(postgres_url: str) -> AsyncIterator[str]:
    """A database built by the migrations once, cloned for each test."""
    name = f"relaybook_template_{uuid.uuid4().hex[:8]}"
    admin = await _admin(postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await database.migrate(with_database(postgres_url, name))
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def empty_database_url(postgres_url: str) -> AsyncIterator[str]:
    """A database with nothing in it, not even the migrations."""
    async with _scratch_database(postgres_url, template="template0") as url:
        yield url


@pytest.fixture
async def database_url(postgres_url: str, template_database: str) -> AsyncIterator[str]:
    """A migrated database of this test's own."""
    async with _scratch_database(postgres_url, template=template_database) as url:
        yield url


class _scratch_database:  # noqa: N801 - used like a function
    def __init__(self, postgres_url: str, template: str) -> None:
        self.postgres_url = postgres_url
        self.template = template
        self.name = f"relaybook_test_{uuid.uuid4().hex[:12]}"

    async def __aenter__(self) -> str:
        admin = await _admin(self.postgres_url)
        try:
            await admin.execute(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.template}"')
        finally:
            await admin.close()
        return with_database(self.postgres_url, self.name)

    async def __aexit__(self, *_exc: object) -> None:
        admin = await _admin(self.postgres_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
def broker(pytestconfig: pytest.Config) -> Iterator[EmbeddedBroker | EmbeddedKafka]:
    """The session's broker (``--broker``); the nodes of an Apache Kafka log to
    ``server.log`` files under a temporary directory, removed afterwards."""
    if pytestconfig.getoption("--broker") == "tansu":
        tansu = EmbeddedBroker()
        tansu.start()
        try:
            yield tansu
        finally:
            tansu.stop()
        return
    with embedded_kafka(pytestconfig.getoption("--kafka-nodes")) as kafka:
        yield kafka


@pytest.fixture
async def settings(
    database_url: str, broker: EmbeddedBroker | EmbeddedKafka, tmp_path: Path
) -> Settings:
    """Settings for one test: its own database, its own topics (fresh prefix), its own
    data dir; on Apache Kafka, what production runs with (idempotent producer, every
    node a replica)."""
    on_kafka = isinstance(broker, EmbeddedKafka)
    test_settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        data_dir=tmp_path,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        kafka_partitions=3,
        kafka_replication_factor=broker.replication_factor if on_kafka else 1,
        kafka_enable_idempotence=on_kafka,
        # the embedded broker hands a departed member's partitions over only after this
        kafka_session_timeout_ms=1000,
    )
    await ensure_topics(test_settings, TOPICS)
    return test_settings


# --- the system as `relaybook up` runs it, in-process, on the test's database and topics


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {}


@pytest.fixture
async def system(settings: Settings, system_options: dict[str, Any]) -> AsyncIterator[System]:
    """``system_options``: settings to change, and ``only`` (which deployables run)."""
    options = dict(system_options)
    only = options.pop("only", None)
    configured = dataclasses.replace(
        settings,
        **free_port_settings(),
        admin_token=ADMIN,
        sandbox_batch_interval_s=0.05,
        **options,
    )
    async with System(configured, only=only) as running:
        yield running


@pytest.fixture
async def api(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=system.servers["dispatcher"].url,
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
async def sandbox(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.servers["sandbox"].url, timeout=30) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    connections = await database.create_pool(database_url, max_size=4)
    yield connections
    await connections.close()


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[Producer]:
    started = Producer(settings, CONTRACTS)
    await started.start()
    yield started
    await started.stop()
