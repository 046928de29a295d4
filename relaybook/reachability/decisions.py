"""A batch of delivery events, applied to the addresses they concern, in one transaction:
successes reset soft counts, failures are recorded once per provider event and counted,
and an address that reached a threshold (or complained, or opted out) is suppressed and
its recipients unsubscribed, with an audit entry and a ``recipient-event`` each.

The consumer commits the batch's offsets only after that transaction, and only events
new to ``address_events`` are counted: a duplicate webhook or a replay after a crash
counts nothing twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import uuid
from typing import Any

import asyncpg
from prometheus_client import Counter

import schemas
from relaybook.platform import outbox, sql
from relaybook.platform.database import Connection
from relaybook.platform.kafka import Record
from relaybook.platform.metrics import count_each
from relaybook.platform.timestamps import now_iso
from relaybook.reachability import address_key
from relaybook.reachability.classify import Kind, Verdict, classify
from relaybook.reachability.policy import IMMEDIATE, Policy, decide

Q = sql.load("relaybook.reachability", "bounces.sql")

CLASSIFIED = Counter(
    "relaybook_bounce_policy_events_total", "Delivery events classified", ["channel", "kind"]
)
UNSUBSCRIBED = Counter(
    "relaybook_bounce_policy_unsubscribes_total",
    "Recipients unsubscribed by the bounce policy",
    ["channel", "rule"],
)
#: kinds recorded per event (successes only move the address's last success)
_RECORDED = {Kind.HARD, Kind.SOFT, Kind.SENDER_SIDE, *IMMEDIATE, Kind.OPT_IN}
ACTOR = "bounce-policy"


@dataclasses.dataclass(frozen=True)
class _Seen:
    event: dict[str, Any]
    verdict: Verdict
    address: str
    occurred_at: dt.datetime


class BouncePolicy:
    def __init__(self, pool: asyncpg.Pool, policy: Policy) -> None:
        self._pool = pool
        self._policy = policy

    async def handle(self, records: list[Record]) -> None:
        seen = []
        verdicts = [
            (record.value, classify(record.value, self._policy.sms_codes))
            for record in {r.value["event_id"]: r for r in records}.values()
        ]
        count_each(CLASSIFIED, ((event["channel"], verdict.kind) for event, verdict in verdicts))
        for event, verdict in verdicts:
            if verdict.kind is Kind.NEUTRAL or not event.get("address"):
                continue
            seen.append(
                _Seen(
                    event,
                    verdict,
                    address_key(event["channel"], event["address"]),
                    dt.datetime.fromisoformat(event["occurred_at"]),
                )
            )
        if not seen:
            return
        async with self._pool.acquire() as connection, connection.transaction():
            await _record_successes(connection, [s for s in seen if s.verdict.kind is Kind.SUCCESS])
            new = await _record(connection, [s for s in seen if s.verdict.kind in _RECORDED])
            for item in sorted(new, key=lambda s: s.occurred_at):
                await self._act(connection, item)

    async def _act(self, connection: Connection, item: _Seen) -> None:
        channel, address, kind = item.event["channel"], item.address, item.verdict.kind
        if kind in IMMEDIATE:
            change = Change(
                channel, address, IMMEDIATE[kind], item.verdict.note, "automatic", [_evidence(item)]
            )
            await _unsubscribe(connection, change)
        elif kind is Kind.OPT_IN:
            await _opt_in(
                connection, Change(channel, address, "opt_in", item.verdict.note, "owner")
            )
        elif kind in {Kind.HARD, Kind.SOFT}:
            policy = self._policy.of(channel)
            await connection.execute(Q["lock_address"], channel, address)
            counts = await connection.fetchrow(
                Q["count_failures"], channel, address, policy.hard.window, policy.soft.window
            )
            assert counts is not None
            decision = decide(policy, counts["hard"], counts["soft"], item.verdict.note)
            if decision is not None:
                rule, reason = decision
                evidence = json.loads(counts["evidence"])
                lasts = self._policy.soft_suppression if rule == "soft_bounces" else None
                expires = dt.datetime.now(dt.UTC) + lasts if lasts else None
                if expires is not None:
                    reason += f"; tried again after {expires:%Y-%m-%d}"
                change = Change(channel, address, rule, reason, "automatic", evidence, expires)
                await _unsubscribe(connection, change)

    async def expire(self) -> int:
        """Lifts the suppressions whose time is over (with a clean slate of failures) and
        announces the recipients whom nothing else keeps off the address subscribed again;
        returns how many suppressions it lifted."""
        async with self._pool.acquire() as connection, connection.transaction():
            expired = await connection.fetch(Q["expire_suppressions"])
            for row in expired:
                note = f"the {row['rule']} unsubscribe expired; trying the address again"
                change = Change(row["channel"], row["address"], row["rule"], note, "automatic")
                rows = await connection.fetch(Q["reachable_at"], change.channel, change.address)
                recipients = [(r["agency_id"], r["id"]) for r in rows]
                await _audit(connection, "resubscribe_expired", change, recipients)
                key = f"{ACTOR}:expired:{uuid.uuid4()}"
                await _announce(connection, recipients, key, "recipient.resubscribed", change)
        return len(expired)


def _evidence(item: _Seen) -> dict[str, Any]:
    return {
        "event_id": item.event["event_id"],
        "kind": str(item.verdict.kind),
        "provider_code": item.event.get("provider_code"),
        "occurred_at": item.event["occurred_at"],
    }


async def _record_successes(connection: Connection, successes: list[_Seen]) -> None:
    latest: dict[tuple[str, str], dt.datetime] = {}
    for item in successes:
        key = (item.event["channel"], item.address)
        latest[key] = max(latest.get(key, item.occurred_at), item.occurred_at)
    if latest:
        await connection.execute(
            Q["record_successes"],
            [channel for channel, _ in latest],
            [address for _, address in latest],
            list(latest.values()),
        )


async def _record(connection: Connection, items: list[_Seen]) -> list[_Seen]:
    """Records the failures and opt-outs/ins; returns those not recorded before."""
    if not items:
        return []
    rows = await connection.fetch(
        Q["record_events"],
        [i.event["event_id"] for i in items],
        [i.event["channel"] for i in items],
        [i.address for i in items],
        [str(i.verdict.kind) for i in items],
        [i.verdict.note for i in items],
        [i.event.get("provider_code") for i in items],
        [uuid.UUID(i.event["delivery_id"]) if i.event.get("delivery_id") else None for i in items],
        [i.occurred_at for i in items],
    )
    new = {row["event_id"] for row in rows}
    return [i for i in items if i.event["event_id"] in new]


@dataclasses.dataclass(frozen=True)
class Change:
    """One decision about an address: who may no longer (or again) be contacted there."""

    channel: str
    address: str
    rule: str
    reason: str
    changed_by: str
    evidence: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    expires_at: dt.datetime | None = None


async def _unsubscribe(connection: Connection, change: Change) -> None:
    """Suppresses the address for this rule and announces its recipients unsubscribed;
    nothing if the rule is active there already. Another rule active at the address does
    not stop it: every cause is recorded, and each lifts on its own."""
    suppression = await connection.fetchrow(
        Q["suppress"],
        change.channel,
        change.address,
        change.rule,
        change.reason,
        json.dumps(change.evidence),
        change.expires_at,
    )
    if suppression is None:
        return
    if suppression["by_owner"]:
        change = dataclasses.replace(change, changed_by="owner")
    rows = await connection.fetch(
        Q["recipients_at"], change.channel, change.address, suppression["by_owner"]
    )
    recipients = [(row["agency_id"], row["id"]) for row in rows]
    await _audit(connection, f"unsubscribe_{change.rule}", change, recipients)
    await _announce(
        connection, recipients, f"{ACTOR}:{suppression['id']}", "recipient.unsubscribed", change
    )
    UNSUBSCRIBED.labels(change.channel, change.rule).inc(len(recipients))


async def _opt_in(connection: Connection, change: Change) -> None:
    lifted = await connection.fetch(
        Q["lift_owner_opt_out"], change.channel, change.address, change.reason
    )
    if not lifted:
        return
    await connection.execute(Q["note_opt_in"], change.channel, change.address, change.reason)
    rows = await connection.fetch(Q["reachable_at"], change.channel, change.address)
    recipients = [(row["agency_id"], row["id"]) for row in rows]
    await _audit(connection, "resubscribe_opt_in", change, recipients)
    key = f"{ACTOR}:optin:{lifted[0]['id']}"
    await _announce(connection, recipients, key, "recipient.resubscribed", change)


#: recipients as the policy finds them by address: ``(agency, recipient id)``, since an
#: address is platform-wide and a recipient id is unique within its agency only
Recipients = list[tuple[str, str]]


async def _audit(
    connection: Connection, action: str, change: Change, recipients: Recipients
) -> None:
    details = {"channel": change.channel, "rule": change.rule, "evidence": change.evidence}
    await connection.execute(
        Q["audit"],
        ACTOR,
        action,
        change.reason,
        json.dumps(details),
        [agency for agency, _ in recipients],
        [recipient for _, recipient in recipients],
    )


async def _announce(
    connection: Connection, recipients: Recipients, key: str, kind: str, change: Change
) -> None:
    now = now_iso()
    messages = [
        (
            recipient,
            {
                "schema": "recipient-event/v1",
                "event_id": event_id(key, agency, recipient),
                "type": kind,
                "agency": agency,
                "recipient_id": recipient,
                "channel": change.channel,
                "address": change.address,
                "rule": change.rule,
                "reason": change.reason,
                "changed_by": change.changed_by,
                "evidence": change.evidence,
                "occurred_at": now,
            },
        )
        for agency, recipient in recipients
    ]
    await outbox.add(connection, "recipient-events", messages, contracts=schemas.CONTRACTS)


def event_id(key: str, agency: str, recipient: str) -> str:
    """One change's event id for one recipient: unique, and within the contract's 200
    characters however long the platform's ids are."""
    whole = f"{key}:{agency}:{recipient}"
    if len(whole) <= 200:
        return whole
    digest = hashlib.sha256(f"{agency}\x00{recipient}".encode()).hexdigest()[:40]
    return f"{key[:150]}:{digest}"
