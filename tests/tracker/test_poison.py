"""A message the tracker can never store does not freeze the journal: it is set aside in
the dead letters and the events after it are stored at once; what a provider posts with
such content is made storable at ingest and recorded like any other event."""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from provider_sandbox.signing import SendGridSigner
from relaybook.platform.deadletters import DeadLetters
from relaybook.platform.kafka import Producer
from relaybook.tooling.system import System
from tests.support import until

SIGNER = SendGridSigner(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {
        "only": {"ingest", "tracker"},
        "sendgrid_webhook_public_keys": (SIGNER.public_key,),
    }


def event(reason: str) -> dict[str, Any]:
    return {
        "schema": "delivery-event/v1",
        "event_id": f"sendgrid:{uuid.uuid4().hex}",
        "type": "bounced",
        "channel": "email",
        "provider": "sendgrid",
        "occurred_at": "2026-11-26T10:00:00Z",
        "received_at": "2026-11-26T10:00:01Z",
        "address": "owner@example.org",
        "reason": reason,
    }


async def stored(db: asyncpg.Connection, event_id: str) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM delivery_events WHERE event_id = $1", event_id))


@pytest.mark.timing
async def test_a_poison_event_is_set_aside_and_the_next_good_one_is_stored_at_once(
    system: System, producer: Producer, db: asyncpg.Connection
) -> None:
    before = event("fine, before")
    await producer.send_many("delivery-events", [("owner", before)])
    await until(lambda: stored(db, before["event_id"]))

    poison = event("mailbox\x00full")  # PostgreSQL stores no NUL, in text nor jsonb
    good = event("fine, after")
    sent_at = time.monotonic()
    await producer.send_many("delivery-events", [("owner", poison), ("owner", good)])
    await until(lambda: stored(db, good["event_id"]), within=10)
    assert time.monotonic() - sent_at < 5  # 0.06 s here

    assert not await stored(db, poison["event_id"])
    assert system.infra is not None
    letters = await DeadLetters(system.infra.pool, producer, "unused").list()
    assert [letter.consumer_group for letter in letters] == ["relaybook-tracker"]
    assert letters[0].reason == "data_error"
    assert poison["event_id"].encode() in letters[0].value


async def test_a_signed_event_with_a_nul_is_recorded_through_ingest(
    system: System, db: asyncpg.Connection
) -> None:
    event_id = uuid.uuid4().hex
    body = (
        '[{"event": "bounce", "type": "bounce", "email": "owner@example.org", '
        f'"timestamp": 1790000000, "sg_event_id": "{event_id}", '
        r'"reason": "550 mailbox\u0000unknown"}]'
    ).encode()
    headers = {"Content-Type": "application/json", **SIGNER.headers(body, int(time.time()))}
    async with httpx.AsyncClient(base_url=system.servers["ingest"].url) as ingest:
        response = await ingest.post("/webhooks/sendgrid", content=body, headers=headers)
    assert response.status_code == 200, response.text
    await until(lambda: stored(db, f"sendgrid:{event_id}"), within=10)
    row = await db.fetchrow(
        "SELECT reason, payload FROM delivery_events WHERE event_id = $1", f"sendgrid:{event_id}"
    )
    assert row["reason"] == "550 mailbox\ufffdunknown"
    assert "escaped_json" in row["payload"]
