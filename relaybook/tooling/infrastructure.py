"""Starting what a relaybook process stands on: the embedded servers that are not
configured, migrations, topics, a connection pool and a producer
(:class:`relaybook.platform.runtime.Infrastructure`); and what each deployable needs
configured to run alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

from relaybook.platform import database
from relaybook.platform.kafka import Producer, check_reachable, ensure_topics
from relaybook.platform.runtime import Infrastructure
from relaybook.platform.settings import SettingsError, env_name
from relaybook.tooling import kafka_cluster, kafka_release, ownership
from relaybook.tooling.embedded import EmbeddedBroker, EmbeddedPostgres
from relaybook.tooling.settings import Settings
from schemas import CONTRACTS, TOPICS


@dataclasses.dataclass
class Started(Infrastructure):
    """The infrastructure as the composition root started it."""

    #: every setting (the deployables' services see the platform's: ``Infrastructure``)
    settings: Settings

    #: this process's hold on the data dir whose embedded database it serves (None with a
    #: configured database): what it publishes there, brief commands beside it read
    claim: ownership.Claim | None = None


#: what a single deployable needs besides the database and the broker to do its work at
#: all, and what for: without it, it would start and report ready, then fail every send
#: or refuse every webhook
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    # the public URL: where a text's statuses are to be posted (worker), what Twilio
    # signed them over (ingest); its default, 127.0.0.1, is right for `up` alone
    "worker": (
        (
            "sendgrid_api_key",
            "twilio_account_sid",
            "twilio_auth_token",
            "twilio_from",
            "public_webhook_base_url",
        ),
        "to send (the providers' credentials; on a trial, those the sandbox accepts: "
        "deploy/sandbox.env)",
    ),
    "ingest": (
        ("sendgrid_webhook_public_keys", "twilio_auth_token", "public_webhook_base_url"),
        "to verify the providers' webhooks",
    ),
}


def require_configured(settings: Settings, command: str, *, providers: bool = True) -> None:
    """A single deployable runs against configured servers (only ``up`` embeds them) and
    with what :data:`NEEDS` lists for it. ``up`` starts its deployables with
    ``providers=False``: its sandbox stands in for the providers it has no credentials
    for."""
    missing = [
        variable
        for variable, value in (
            ("RELAYBOOK_DATABASE_URL", settings.database_url),
            ("RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers),
        )
        if value is None
    ]
    if missing:
        raise SettingsError(
            f"relaybook {command} needs {_listed(missing)} "
            "(only `relaybook up` and `relaybook demo` start embedded servers)"
        )
    needed, purpose = NEEDS.get(command, ((), ""))
    missing = [env_name(name) for name in needed if getattr(settings, name) in (None, ())]
    if missing and providers:
        raise SettingsError(f"relaybook {command} needs {_listed(missing)} {purpose}")


def _listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


async def prepare_embedded_kafka(settings: Settings) -> bool:
    """Whether ``settings`` select the embedded Apache Kafka; if so, checks Java and
    fetches the jars on first use, so that without Java or Maven start-up stops at once
    with one line (:class:`SettingsError`, exit 2), before anything has started."""
    if not (settings.uses_embedded_broker and settings.embedded_broker == "kafka"):
        return False
    await asyncio.to_thread(kafka_release.classpath)
    return True


@contextlib.asynccontextmanager
async def infrastructure(settings: Settings, *, pool_size: int = 10) -> AsyncIterator[Started]:
    """Starts the embedded servers that are not configured, applies migrations, creates the
    topics, opens a pool and a producer; stops all of it, in reverse, on exit."""
    embedded: list[str] = []
    embeds_kafka = await prepare_embedded_kafka(settings)
    claim: ownership.Claim | None = None
    async with contextlib.AsyncExitStack() as stack:
        if settings.uses_embedded_postgres:
            # The data dir's owner runs the server on it: `up` has claimed it already (this
            # joins its claim); anyone else (the demo) claims it here, or fails naming
            # the owner. Owning it, this process adopts a server a killed owner left. Like
            # `up`, it shares the database: brief commands on the data dir (`user create`
            # beside `demo --stay`) use it rather than wait for it to stop.
            claim = await asyncio.to_thread(
                ownership.claim, settings.data_dir, shares_database=True
            )
            stack.callback(claim.release)
            postgres = EmbeddedPostgres(settings.data_dir)
            url = await asyncio.to_thread(postgres.start, adopt=True)
            stack.push_async_callback(asyncio.to_thread, postgres.stop)
            claim.publish(database_url=url)
            settings = dataclasses.replace(settings, database_url=url)
            embedded.append("postgres")
        if embeds_kafka:
            cluster = kafka_cluster.EmbeddedKafka(
                settings.data_dir, nodes=settings.embedded_kafka_nodes, port=settings.broker_port
            )
            # From this thread, like the Tansu broker below; it blocks the loop while the
            # nodes start (seconds), before anything else runs on it.
            servers = cluster.start()
            stack.callback(cluster.stop)
            settings = dataclasses.replace(
                settings,
                kafka_bootstrap_servers=servers,
                kafka_session_timeout_ms=settings.session_timeout_ms,
                kafka_enable_idempotence=True,
                kafka_replication_factor=cluster.replication_factor,
            )
            embedded.append("kafka")
        elif settings.uses_embedded_broker:
            broker = EmbeddedBroker(settings.broker_port)
            # Started from this thread, not a worker thread: the broker is tied to the
            # lifetime of the thread that spawned it (see EmbeddedBroker).
            servers = broker.start()
            stack.callback(broker.stop)
            settings = dataclasses.replace(
                settings,
                kafka_bootstrap_servers=servers,
                kafka_session_timeout_ms=settings.session_timeout_ms,
            )
            embedded.append("broker")
        assert settings.database_url is not None
        # a database a newer release migrated is fine here; only `relaybook migrate` refuses it
        await database.migrate(
            settings.database_url, default_agency=settings.default_agency, newer_ok=True
        )
        await check_reachable(settings)  # a refusal's reason, in one line, before any client
        await ensure_topics(settings, TOPICS)
        pool = await database.create_pool(settings.database_url, max_size=pool_size)
        stack.push_async_callback(pool.close)
        producer = Producer(settings, CONTRACTS)
        await producer.start()
        stack.push_async_callback(producer.stop)
        if claim is not None:  # for `dead-letters replay` beside it
            claim.publish(kafka_bootstrap_servers=settings.kafka_bootstrap_servers)
        yield Started(settings, pool, producer, embedded, claim)
