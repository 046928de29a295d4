"""Creating the topics a deployment needs, with the configured partitions and replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, RequestTimedOutError, TopicAlreadyExistsError, for_code

from relaybook.platform.kafka.connection import BrokerError, client_options
from relaybook.platform.logs import get_logger
from relaybook.platform.settings import PlatformSettings

log = get_logger(__name__)


async def ensure_topics(settings: PlatformSettings, names: Iterable[str]) -> None:
    """Creates the topics ``names`` (unprefixed) with the configured partition count when
    they are missing.

    Raises :class:`BrokerError` naming the topics the cluster did not create and why (no
    Create ACL for relaybook's principal, more replicas than brokers...), or when the
    cluster cannot be reached."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)
    try:
        await admin.start()
        await _create_missing(admin, settings, names)
    except KafkaError as error:
        raise BrokerError(
            f"cannot create topics on Kafka at {settings.kafka_bootstrap_servers}: {error}"
        ) from error
    finally:
        await admin.close()


async def _create_missing(
    admin: AIOKafkaAdminClient, settings: PlatformSettings, names: Iterable[str]
) -> None:
    existing = set(await admin.list_topics())
    missing = [topic for name in names if (topic := settings.topic(name)) not in existing]
    if not missing:
        return
    answer = await admin.create_topics(
        [
            NewTopic(topic, settings.kafka_partitions, settings.kafka_replication_factor)
            for topic in missing
        ]
    )
    # aiokafka raises none of the topics' errors: each is in the answer. Another replica
    # may have created a topic meanwhile; a timed-out creation may yet complete.
    errors = {
        topic: (code, said[0] if said else "")
        for topic, code, *said in answer.topic_errors
        if code not in {0, TopicAlreadyExistsError.errno}
    }
    deadline = time.monotonic() + 10
    while (
        any(code == RequestTimedOutError.errno for code, _ in errors.values())
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.5)
        existing = set(await admin.list_topics())
        errors = {topic: error for topic, error in errors.items() if topic not in existing}
    refused: dict[str, list[str]] = {}
    for topic, (code, said) in errors.items():
        refused.setdefault(f"{for_code(code).__name__}: {said}", []).append(topic)
    if refused:
        raise BrokerError(
            "Kafka did not create "
            + "; ".join(f"{', '.join(sorted(ts))} ({why})" for why, ts in refused.items())
        )
    log.info("topics created", topics=missing, partitions=settings.kafka_partitions)
