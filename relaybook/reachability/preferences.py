"""Recipients' preferences: read as the contact rule shows them
(``relaybook/reachability/queries.sql``: what the next send obeys), changed by a manager,
by the owner through their agency (with evidence: the only way besides START to lift the
owner's own opt-out), or by support after an automatic unsubscribe (which lifts the
address's automatic suppressions and clears its failure counts, never the owner's
opt-out). Who may lift what is :mod:`relaybook.reachability.authority`'s. Every change is
audited and announced on ``recipient-events``. This service's statements are
``preferences.sql``'s."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Annotated, Any, Literal

import asyncpg
import msgspec

import schemas
from relaybook.access.auth import SUPPORT, Caller
from relaybook.access.scope import ScopedPool
from relaybook.platform import outbox, sql
from relaybook.platform.answers import RefusedError, not_found
from relaybook.platform.database import Connection
from relaybook.platform.decoding import UNSET, Email, Id, InvalidRequestError, Phone, UnsetType
from relaybook.platform.paging import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from relaybook.platform.timestamps import iso_or_none, now_iso
from relaybook.reachability import address_key
from relaybook.reachability.answers import (
    ChangedBy,
    ChannelPreference,
    Contact,
    PreferencesPage,
    RecipientPreferences,
    Wants,
)
from relaybook.reachability.authority import (
    OWNER_OPTED_OUT,
    SUPPORT_ONLY,
    Causes,
    author,
    refusal,
    unchanged,
)

Q = sql.load("relaybook.reachability", "preferences.sql")
CHANNELS = ("email", "sms")
KINDS = ("default", "owner", "manager", "support", "automatic")

#: overview filter -> SQL condition (``e`` and ``s``: the email and sms channels as the
#: contact rule shows them)
OVERVIEW_FILTERS = {
    "wants_email": "e.wants = ${}",
    "wants_sms": "s.wants = ${}",
    "reason": "(e.changed_by = ${0} OR s.changed_by = ${0})",
    "agency": "r.agency_id = ${}",
    "property": "(r.agency_id, r.id) IN (SELECT agency_id, recipient_id "
    "FROM recipient_properties WHERE property_id = ${})",
}
#: one recipient, with the overview's columns
ONE = Q["preferences_overview"].format(where="r.agency_id = $2 AND r.id = $1", limit=1)


class RecipientQuery(msgspec.Struct, forbid_unknown_fields=True):
    """A recipient id is unique within its agency: ``agency`` says whose, needed only
    when the caller serves several agencies that each have a recipient of that id."""

    agency: Id | None = None


class PreferenceChange(msgspec.Struct, forbid_unknown_fields=True):
    """``PUT /v1/recipients/{id}/preferences``: at least one of ``email``, ``sms``,
    ``never_auto_unsubscribe``, and always why. Setting ``yes`` where the bounce policy
    unsubscribed the recipient is a support override, recorded as such. Setting ``yes``
    where the owner opted out (STOP, unsubscribe link, complaint, their own "no") is the
    owner's alone: ``changed_by: owner`` records a change the owner asked for, with its
    ``evidence`` (their letter, their email: what fixes the request and its date)."""

    reason: Annotated[str, msgspec.Meta(max_length=500, pattern=r"\S")]
    email: Literal["yes", "no"] | None = None
    sms: Literal["yes", "no"] | None = None
    never_auto_unsubscribe: bool | None = None
    #: ``owner``: the owner asked for this change, ``evidence`` says how (required then)
    changed_by: Literal["owner", "manager"] | None = None
    evidence: Annotated[str, msgspec.Meta(max_length=500, pattern=r"\S")] | None = None


class ContactChange(msgspec.Struct, forbid_unknown_fields=True):
    """``PATCH /v1/recipients/{id}``: the contact details to correct (null removes an
    address; a field left out is kept)."""

    name: Id | None = None
    email: Email | UnsetType | None = UNSET
    phone: Phone | UnsetType | None = UNSET


class OverviewQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``GET /v1/preferences``; ``reason`` keeps recipients whose email or sms preference
    was last set by that kind of author."""

    wants_email: Wants | None = None
    wants_sms: Wants | None = None
    reason: ChangedBy | None = None
    #: one agency's recipients (among the caller's)
    agency: Id | None = None
    #: the owners of one of the agency's properties (co-ownerships), even those never sent
    #: anything
    property: Id | None = None
    cursor: Cursor | None = None
    limit: Limit = DEFAULT_LIMIT


def _channel(row: asyncpg.Record, channel: str, address: str | None) -> ChannelPreference:
    return {
        "wants": "not_applicable" if address is None else row[f"{channel}_wants"],
        "reason": row[f"{channel}_reason"],
        "changed_by": row[f"{channel}_changed_by_kind"],
        "changed_by_name": row[f"{channel}_changed_by"],
        "changed_at": iso_or_none(row[f"{channel}_changed_at"]),
    }


def describe(row: asyncpg.Record) -> RecipientPreferences:
    """The contract's shape: per channel ``wants`` (``not_applicable`` without an
    address), the reason, who changed it (``changed_by``: default, owner, manager,
    support, automatic; ``changed_by_name``: the token or service) and when."""
    return {
        "agency": row["agency_id"],
        "recipient_id": row["id"],
        "name": row["name"],
        "email": _channel(row, "email", row["email"]),
        "sms": _channel(row, "sms", row["phone"]),
        "never_auto_unsubscribe": row["never_auto_unsubscribe"],
    }


@dataclasses.dataclass(frozen=True)
class Change:
    """A change of preferences, parsed: ``{channel: yes|no}``, why, the "never
    auto-unsubscribe" mark or None, and the owner's evidence when made on their behalf."""

    wanted: dict[str, str]
    reason: str
    never: bool | None = None
    evidence: str | None = None

    @property
    def for_owner(self) -> bool:
        return self.evidence is not None


def parse_change(body: PreferenceChange) -> Change:
    """The change asked for, or :class:`InvalidRequestError`."""
    wanted: dict[str, str] = {
        channel: wants
        for channel, wants in (("email", body.email), ("sms", body.sms))
        if wants is not None
    }
    never = body.never_auto_unsubscribe
    if not wanted and never is None:
        raise InvalidRequestError("(body)", "say email, sms or never_auto_unsubscribe")
    if body.changed_by == "owner" and body.evidence is None:
        raise InvalidRequestError(
            "evidence", "a change made on the owner's behalf says what the owner sent"
        )
    if body.changed_by != "owner" and body.evidence is not None:
        raise InvalidRequestError("evidence", "evidence goes with changed_by: owner")
    evidence = body.evidence.strip() if body.evidence is not None else None
    return Change(wanted, body.reason.strip(), never, evidence)


class Preferences:
    def __init__(self, pool: asyncpg.Pool | ScopedPool, default_agency: str = "default") -> None:
        self._pool = pool
        self._default_agency = default_agency

    async def agency_of(self, recipient_id: str, given: str | None, caller: Caller) -> str:
        """Whose recipient ``recipient_id`` is: the agency given, else the caller's only
        one, else the one of the caller's agencies that has such a recipient; a 404 when
        none has, a 422 when several have and the caller must say which."""
        if given is not None:
            if not caller.sees(given):
                raise not_found("recipient")
            return given
        if caller.sole_agency is not None:
            return caller.sole_agency
        rows = await self._pool.fetch(Q["recipient_agencies"], recipient_id)
        if not rows:
            raise not_found("recipient")
        if len(rows) > 1:
            raise InvalidRequestError(
                "agency", "several of your agencies have a recipient of this id: say whose"
            )
        agency: str = rows[0]["agency_id"]
        return agency

    async def get(self, agency: str, recipient_id: str) -> RecipientPreferences | None:
        row = await self._pool.fetchrow(ONE, recipient_id, agency)
        return describe(row) if row is not None else None

    async def change(
        self, agency: str, recipient_id: str, change: Change, caller: Caller
    ) -> RecipientPreferences | None:
        """Applies a change, all of it or nothing: bringing back a channel the owner opted
        out of is the owner's alone (:class:`RefusedError` 409 ``owner_opted_out`` unless made
        on their behalf), one the bounce policy turned off is support's (403
        ``support_only``)."""
        async with self._pool.acquire() as connection, connection.transaction():
            current = await connection.fetchrow(Q["lock_preferences"], recipient_id, agency)
            if current is None:
                return None
            steps = []
            for channel, wants in change.wanted.items():
                found = await connection.fetchrow(
                    Q["contact_causes"], recipient_id, agency, channel
                )
                assert found is not None
                causes = Causes(
                    owner_block=found["owner_block"],
                    auto_block=found["auto_block"],
                    wants=current[f"{channel}_wants"],
                    changed_by=current[f"{channel}_changed_by_kind"],
                )
                refused = refusal(
                    causes, wants, for_owner=change.for_owner, support=SUPPORT in caller.scopes
                )
                if refused is not None:
                    raise RefusedError(
                        refused.status, refused.code, _REFUSALS[refused.code](channel)
                    )
                if not unchanged(causes, wants, for_owner=change.for_owner):
                    steps.append(_Step(channel, wants, causes, found["address"]))
            for step in steps:
                await _apply(connection, step, agency, recipient_id, change=change, caller=caller)
            if change.never is not None:
                await connection.execute(
                    Q["set_never_auto_unsubscribe"], recipient_id, change.never, agency
                )
                await connection.execute(
                    Q["audit_preference"],
                    caller.name,
                    "never_auto_unsubscribe" if change.never else "auto_unsubscribe_allowed",
                    recipient_id,
                    change.reason,
                    "{}",
                    agency,
                )
            row = await connection.fetchrow(ONE, recipient_id, agency)
        assert row is not None
        return describe(row)

    async def correct(
        self, agency: str, recipient_id: str, contact: ContactChange, caller: str
    ) -> Contact | None:
        """``PATCH /v1/recipients/{id}``: the contact details a manager corrected (an
        address given as null is removed); answers them as they now are."""
        given = {
            "name": contact.name is not None,
            "email": contact.email is not UNSET,
            "phone": contact.phone is not UNSET,
        }
        async with self._pool.acquire() as connection, connection.transaction():
            found = await connection.fetchval(
                Q["update_contact"],
                recipient_id,
                given["name"],
                contact.name,
                given["email"],
                None if contact.email is UNSET else contact.email,
                given["phone"],
                None if contact.phone is UNSET else contact.phone,
                agency,
            )
            if found is None:
                return None
            changed = [field for field, yes in given.items() if yes]
            await connection.execute(
                Q["audit_preference"],
                caller,
                "contact_corrected",
                recipient_id,
                None,
                json.dumps({"fields": changed}),
                agency,
            )
            row = await connection.fetchrow(ONE, recipient_id, agency)
        assert row is not None
        return {"id": row["id"], "name": row["name"], "email": row["email"], "phone": row["phone"]}

    async def overview(self, query: OverviewQuery) -> PreferencesPage:
        conditions, values = ["true"], []
        for name, condition in OVERVIEW_FILTERS.items():
            value = getattr(query, name)
            if value is not None:
                values.append(value)
                conditions.append(condition.format(len(values)))
        if query.cursor is not None:
            values += decode_cursor(query.cursor, 2)
            conditions.append(f"(r.agency_id, r.id) > (${len(values) - 1}, ${len(values)})")
        limit = query.limit
        text = Q["preferences_overview"].format(where=" AND ".join(conditions), limit=limit + 1)
        rows = await self._pool.fetch(text, *values)
        more = len(rows) > limit
        return {
            "items": [describe(row) for row in rows[:limit]],
            "next_cursor": (
                encode_cursor(rows[limit - 1]["agency_id"], rows[limit - 1]["id"]) if more else None
            ),
        }


async def _apply(
    connection: Connection,
    step: _Step,
    agency: str,
    recipient_id: str,
    *,
    change: Change,
    caller: Caller,
) -> None:
    """Records one channel's change, lifts the causes the caller may lift (the refusals
    were checked before anything was written), audits and announces it."""
    channel, wants, causes, address = step.channel, step.wants, step.causes, step.address
    kind = author(causes, wants, for_owner=change.for_owner)
    await connection.execute(
        Q["set_preference"],
        recipient_id,
        channel,
        wants,
        change.reason,
        kind,
        caller.name,
        agency,
    )
    lifted: list[str] = []
    if wants == "yes" and address is not None:
        # the owner lifts their own opt-out of the address; support the automatic
        # suppressions (and what they counted); nobody both in one go but support
        # recording the owner's own request
        if causes.owner_block:
            rows = await connection.fetch(
                Q["lift_suppressions"], channel, address, caller.name, change.reason, True
            )
            lifted += [row["rule"] for row in rows]
        if causes.auto_block:
            rows = await connection.fetch(
                Q["lift_suppressions"], channel, address, caller.name, change.reason, False
            )
            lifted += [row["rule"] for row in rows]
            await connection.execute(
                Q["clear_address_counts"], channel, address_key(channel, address)
            )
    action = {
        "owner": "owner_request",
        "support": "support_override",
        "manager": "preference_changed",
    }[kind]
    details: dict[str, Any] = {
        "channel": channel,
        "wants": wants,
        "lifted_suppressions": lifted,
    }
    if change.evidence is not None:
        details["evidence"] = change.evidence
    await connection.execute(
        Q["audit_preference"],
        caller.name,
        action,
        recipient_id,
        change.reason,
        json.dumps(details),
        agency,
    )
    event = _event(
        agency,
        recipient_id,
        channel,
        address=address,
        wants=wants,
        action=action,
        reason=change.reason,
        kind=kind,
    )
    await outbox.add(
        connection, "recipient-events", [(recipient_id, event)], contracts=schemas.CONTRACTS
    )


@dataclasses.dataclass(frozen=True)
class _Step:
    """One channel's change, allowed: what it sets, and what stood in its way."""

    channel: str
    wants: str
    causes: Causes
    address: str | None


#: the words of a refusal, by its code, for one channel
_REFUSALS = {
    OWNER_OPTED_OUT: lambda channel: (
        f"the owner opted out of this {channel} themselves: only the owner brings it back "
        "(START from their number, or changed_by: owner with the evidence of their request)"
    ),
    SUPPORT_ONLY: lambda channel: (
        f"the bounce policy unsubscribed this {channel}: only support may bring it back "
        "(contact support)"
    ),
}


def _event(
    agency: str,
    recipient_id: str,
    channel: str,
    *,
    address: str | None,
    wants: str,
    action: str,
    reason: str,
    kind: str,
) -> dict[str, Any]:
    return {
        "schema": "recipient-event/v1",
        "event_id": f"preferences:{uuid.uuid4()}",
        "type": "recipient.resubscribed" if wants == "yes" else "recipient.unsubscribed",
        "agency": agency,
        "recipient_id": recipient_id,
        "channel": channel,
        "address": address,
        "rule": {"support_override": "support_override", "owner_request": "owner_request"}.get(
            action, "manager"
        ),
        "reason": reason,
        "changed_by": kind,
        "occurred_at": now_iso(),
    }
