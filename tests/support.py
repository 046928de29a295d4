"""Helpers shared by the tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from relaybook.platform import sql
from relaybook.platform.kafka import Record
from relaybook.platform.settings import env_name
from relaybook.tooling.embedded import free_port_settings
from relaybook.tooling.kafka_cluster import EmbeddedKafka

#: the admin token of the in-process system fixture
ADMIN = "test-admin-token"
#: made-up provider settings: what a single worker and a single ingest refuse to start
#: without (relaybook.tooling.infrastructure.NEEDS), for tests that never reach a provider
PROVIDER_SETTINGS = {
    "RELAYBOOK_SENDGRID_API_KEY": "SG.test-only",
    "RELAYBOOK_SENDGRID_WEBHOOK_PUBLIC_KEYS": (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELjEXWG96fZYtlfmBhavHtbwb1iKaXcomHPD1b1pyLc2+AgLmd"
        "YFwCLgki8pKqESpSqbDzNxSiEbGa5BIvMsZEA=="
    ),
    "RELAYBOOK_TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "RELAYBOOK_TWILIO_AUTH_TOKEN": "test-only-auth-token",
    "RELAYBOOK_TWILIO_FROM": "+15005550006",
    "RELAYBOOK_PUBLIC_WEBHOOK_BASE_URL": "https://hooks.example.org",
}


def notice(count: int = 3, **changes: Any) -> dict[str, Any]:
    """A deposit call to ``count`` owners with email and phone, sent now."""
    body: dict[str, Any] = {
        "source": {"service": "accounting", "kind": "deposit_call", "reference": "DC-2026-Q4"},
        "title": "Deposit call Q4 2026",
        "email": {"subject": "Deposit call Q4", "text": "Pay at https://portal.example.org/dc"},
        "sms": {"text": "Your Q4 deposit call is available on the portal."},
        "recipients": [
            {
                "id": f"owner-{i}",
                "name": f"Owner {i}",
                "email": f"owner{i}@example.org",
                "phone": f"+3361{i:07d}",
            }
            for i in range(count)
        ],
        "send": True,
    }
    body.update(changes)
    return body


def storable_everywhere(value: Any) -> bool:
    """No NUL nor lone surrogate in any string of ``value`` (keys included): what
    PostgreSQL stores and every JSON encoder writes."""
    from relaybook.platform.storable import has_unstorable  # noqa: PLC0415

    if isinstance(value, str):
        return not has_unstorable(value)
    if isinstance(value, dict):
        return all(storable_everywhere(k) and storable_everywhere(v) for k, v in value.items())
    if isinstance(value, list):
        return all(storable_everywhere(item) for item in value)
    return True


@contextlib.contextmanager
def embedded_kafka(nodes: int) -> Iterator[EmbeddedKafka]:
    """An Apache Kafka of ``nodes`` nodes, started in a temporary directory (the nodes log
    to ``server.log`` files there), stopped and removed afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix=f"relaybook-test-kafka{nodes}-"))
    kafka = EmbeddedKafka(scratch, nodes=nodes)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def own_tansu(bootstrap_servers: str) -> dict[str, Any]:
    """Setting changes for a test that runs on a Tansu broker of its own (to stop and
    restart it), whichever broker the session has: Tansu has no idempotent producer."""
    return {
        "kafka_bootstrap_servers": bootstrap_servers,
        "kafka_enable_idempotence": False,
        "kafka_replication_factor": 1,
    }


async def until(condition: Callable[[], Any], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def waiting_on_locks(database: Any) -> set[int]:
    """The server pids of the sessions waiting for a lock another transaction holds
    (``database``: a connection or a pool)."""
    rows = await database.fetch("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    return {row["pid"] for row in rows}


async def read_topic(
    settings: Any, topic: str, count: int, within: float = 20
) -> list[tuple[str | None, dict[str, Any]]]:
    """The first ``count`` messages of one of relaybook's topics as ``(key, value)``, read
    outside any consumer group; fails if fewer arrive ``within`` seconds. Reads on for a
    moment after that, so a test also sees a message that should not be there."""
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 - only some tests read topics

    from relaybook.platform.kafka import client_options  # noqa: PLC0415

    consumer = AIOKafkaConsumer(
        settings.topic(topic),
        **client_options(settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[tuple[str | None, dict[str, Any]]] = []
    try:
        deadline = time.monotonic() + within
        settle: float | None = None
        while time.monotonic() < (settle or deadline):
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                for message in messages:
                    key = message.key.decode() if message.key is not None else None
                    found.append((key, json.loads(message.value)))
            if len(found) >= count and settle is None:
                settle = time.monotonic() + 0.5
    finally:
        await consumer.stop()
    assert len(found) >= count, f"{len(found)} of {count} messages arrived"
    return found


class Deployable:
    """``relaybook <command>`` as a separate process on a test's database and topics (to
    be killed the hard way), its output in ``<logs>/<name>.log``."""

    def __init__(self, command: str, settings: Any, logs: Path, **extra: str) -> None:
        self.command = command
        self.logs = logs
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOOK_")}
        self.env |= {
            "RELAYBOOK_DATABASE_URL": settings.database_url or "",
            "RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
            "RELAYBOOK_TOPIC_PREFIX": settings.topic_prefix,
            "RELAYBOOK_KAFKA_SESSION_TIMEOUT_MS": "1000",
            "RELAYBOOK_KAFKA_ENABLE_IDEMPOTENCE": str(settings.kafka_enable_idempotence),
            "RELAYBOOK_KAFKA_REPLICATION_FACTOR": str(settings.kafka_replication_factor),
            "RELAYBOOK_DATA_DIR": str(logs),
            "RELAYBOOK_LOG_FORMAT": "json",
            **{env_name(name): str(port) for name, port in free_port_settings().items()},
            **extra,
        }

    def start(self, name: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("w") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "relaybook.tooling.cli", self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )


SHOWN = sql.load("relaybook.reachability")["shown"]


async def shown(
    database: Any, recipient: str, channel: str = "email", agency: str = "default"
) -> tuple[str, str]:
    """``(wants, changed_by)`` of a recipient's channel, as the contact rule shows it."""
    row = await database.fetchrow(SHOWN, recipient, channel, agency)
    assert row is not None, recipient
    return row["wants"], row["changed_by"]


def delivery_event(kind: str, address: str, **fields: Any) -> Record:
    """A provider's ``delivery-event`` about ``address`` (a ``+`` number: a text), as the
    bounce policy reads it from the topic, with an event id of its own."""
    channel = "sms" if address.startswith("+") else "email"
    now = dt.datetime.now(dt.UTC).isoformat()
    value = {
        "schema": "delivery-event/v1",
        "event_id": f"test:{uuid.uuid4()}",
        "type": kind,
        "channel": channel,
        "provider": "sendgrid" if channel == "email" else "twilio",
        "occurred_at": now,
        "received_at": now,
        "address": address,
        **fields,
    }
    return Record("delivery-events", 0, 0, None, value)
