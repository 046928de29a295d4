"""A batch of delivery events, recorded: correlated, stored once, projected onto the
journal rows, and the notices they belong to settled, all in one transaction.

Every event is stored (``delivery_events``), but only the providers' outcomes are
projected onto the deliveries: a worker's own outcome (accepted, failed, skipped: its
event id starts ``relaybook:``) was recorded by the worker, in the transaction that sent
it, and is not written a second time here; it only has its notice settled
(relaybook/deliveries/__init__.py).

The consumer commits the batch's offsets only after that transaction: a crash anywhere
means the batch comes again, and since only events that were new to ``delivery_events``
are projected, nothing is lost or counted twice.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import orjson
from prometheus_client import Counter

from relaybook.deliveries.precedence import from_worker, proves
from relaybook.platform import sql
from relaybook.platform.database import Connection
from relaybook.platform.kafka import Record
from relaybook.platform.metrics import count_each

Q = sql.load("tracker")
DELIVERIES = sql.load("relaybook.deliveries")
NOTICES = sql.load("relaybook.notices")
#: the events stored, each once (relaybook/journal)
JOURNAL = sql.load("relaybook.journal")

STORED = Counter(
    "relaybook_tracker_events_total", "Delivery events stored, by type", ["channel", "type"]
)
DUPLICATES = Counter("relaybook_tracker_duplicates_total", "Delivery events seen before")
UNMATCHED = Counter(
    "relaybook_tracker_unmatched_total", "Events about no known delivery", ["channel", "type"]
)

#: events about a person rather than a message: never matched to a delivery
_ABOUT_PEOPLE = frozenset({"opted_out", "opted_in", "inbound"})


class Journal:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def handle(self, records: list[Record]) -> None:
        """Records a batch of ``delivery-event`` messages (idempotent)."""
        events = list({record.value["event_id"]: record.value for record in records}.values())
        if not events:
            return
        async with self._pool.acquire() as connection, connection.transaction():
            deliveries = await _correlate(connection, events)
            new = set(await _store(connection, events, deliveries))
            DUPLICATES.inc(len(events) - len(new))
            fresh = [e for e in events if e["event_id"] in new]
            count_each(STORED, ((e["channel"], e["type"]) for e in fresh))
            count_each(
                UNMATCHED,
                (
                    (e["channel"], e["type"])
                    for e in fresh
                    if e["event_id"] not in deliveries and e["type"] not in _ABOUT_PEOPLE
                ),
            )
            settle = await _project(connection, fresh, deliveries)
            if settle:
                await connection.execute(NOTICES["settle_notices"], settle)


async def _correlate(connection: Connection, events: list[dict[str, Any]]) -> dict[str, str]:
    """event id -> the delivery it is about: the id the event carries, else the one whose
    message id (Twilio) or address (asynchronous bounces) it names."""
    found: dict[str, str] = {}
    by_address: list[dict[str, Any]] = []
    by_message: dict[str, list[str]] = {}
    for event in events:
        if event.get("delivery_id"):
            found[event["event_id"]] = event["delivery_id"]
        elif event["type"] in _ABOUT_PEOPLE:
            continue
        elif event["channel"] == "sms" and event.get("provider_message_id"):
            by_message.setdefault(event["provider_message_id"], []).append(event["event_id"])
        elif event.get("address"):
            by_address.append(event)
    if by_message:
        for row in await connection.fetch(Q["match_message_ids"], list(by_message)):
            for event_id in by_message[row["provider_message_id"]]:
                found[event_id] = str(row["id"])
    if by_address:
        rows = await connection.fetch(
            Q["match_addresses"],
            [e["channel"] for e in by_address],
            [e["address"] for e in by_address],
            [dt.datetime.fromisoformat(e["occurred_at"]) for e in by_address],
        )
        for row in rows:
            found[by_address[row["position"] - 1]["event_id"]] = str(row["id"])
    return found


async def _store(
    connection: Connection, events: list[dict[str, Any]], deliveries: dict[str, str]
) -> list[str]:
    """Inserts the events; returns the ids of those not stored before."""
    rows = await connection.fetch(
        JOURNAL["insert_events"],
        orjson.dumps(events).decode(),
        [deliveries.get(e["event_id"]) for e in events],
    )
    return [row["event_id"] for row in rows]


async def _project(
    connection: Connection, fresh: list[dict[str, Any]], deliveries: dict[str, str]
) -> list[uuid.UUID]:
    """Applies the providers' new events to their journal rows
    (relaybook/deliveries/queries.sql, ``project_events``); returns the notices to settle.
    A worker's outcome goes with no status and no time: recorded by the worker already, it
    only settles its notice."""
    moving = []
    for position, event in enumerate(fresh):
        delivery = deliveries.get(event["event_id"])
        worker = from_worker(event)
        status = None if worker else proves(event)
        if delivery is None or (status is None and not worker):
            continue  # about no delivery of ours, or changing nothing and settling nothing
        moving.append(
            {
                "position": position,
                "delivery_id": delivery,
                "status": status,
                "at": None if worker else event["occurred_at"],
                "worker": worker,
                "reason": event.get("reason") or event["type"],
                "code": event.get("provider_code"),
            }
        )
    if not moving:
        return []
    settle: list[uuid.UUID] = await connection.fetchval(
        DELIVERIES["project_events"], orjson.dumps(moving).decode()
    )
    return settle
