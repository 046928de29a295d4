"""Recipients' preferences: read, changed by a manager, or restored by support after an
automatic unsubscribe (which also lifts the address's suppression and clears its failure
counts, so the next notice goes out). Every change is audited and announced on
``recipient-events``."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from starlette.responses import Response

from bounce_policy.decisions import address_key
from dispatcher.answers import (
    ChangedBy,
    ChannelPreference,
    Contact,
    PreferencesPage,
    RecipientPreferences,
    Wants,
)
from dispatcher.api import Answer, Call, Operation, answer, not_found
from dispatcher.paging import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from dispatcher.store import iso
from dispatcher.validation import UNSET, ContactChange, Id, InvalidRequestError
from relaybook import outbox, sql
from relaybook.timestamps import now_iso

Q = sql.load("dispatcher")
CHANNELS = ("email", "sms")
KINDS = ("default", "owner", "manager", "support", "automatic")
MAX_BODY_BYTES = 16 * 1024

#: overview filter -> SQL condition
OVERVIEW_FILTERS = {
    "wants_email": "CASE WHEN email IS NULL THEN 'not_applicable' ELSE email_wants END = ${}",
    "wants_sms": "CASE WHEN phone IS NULL THEN 'not_applicable' ELSE sms_wants END = ${}",
    "reason": "(email_changed_by_kind = ${0} OR sms_changed_by_kind = ${0})",
}


class RecipientPath(msgspec.Struct):
    recipient_id: Id


class PreferenceChange(msgspec.Struct, forbid_unknown_fields=True):
    """``PUT /v1/recipients/{id}/preferences``: at least one of ``email``, ``sms``,
    ``never_auto_unsubscribe``, and always why. Setting ``yes`` where the bounce policy
    unsubscribed the recipient is a support override, recorded as such."""

    reason: Annotated[str, msgspec.Meta(max_length=500, pattern=r"\S")]
    email: Literal["yes", "no"] | None = None
    sms: Literal["yes", "no"] | None = None
    never_auto_unsubscribe: bool | None = None


class OverviewQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``GET /v1/preferences``; ``reason`` keeps recipients whose email or sms preference
    was last set by that kind of author."""

    wants_email: Wants | None = None
    wants_sms: Wants | None = None
    reason: ChangedBy | None = None
    cursor: Cursor | None = None
    limit: Limit = DEFAULT_LIMIT


def _channel(row: asyncpg.Record, channel: str, address: str | None) -> ChannelPreference:
    return {
        "wants": "not_applicable" if address is None else row[f"{channel}_wants"],
        "reason": row[f"{channel}_reason"],
        "changed_by": row[f"{channel}_changed_by_kind"],
        "changed_by_name": row[f"{channel}_changed_by"],
        "changed_at": iso(row[f"{channel}_changed_at"]),
    }


def describe(row: asyncpg.Record) -> RecipientPreferences:
    """The contract's shape: per channel ``wants`` (``not_applicable`` without an
    address), the reason, who changed it (``changed_by``: default, owner, manager,
    support, automatic; ``changed_by_name``: the token or service) and when."""
    return {
        "recipient_id": row["id"],
        "name": row["name"],
        "email": _channel(row, "email", row["email"]),
        "sms": _channel(row, "sms", row["phone"]),
        "never_auto_unsubscribe": row["never_auto_unsubscribe"],
    }


def parse_change(body: PreferenceChange) -> tuple[dict[str, str], str, bool | None]:
    """``({channel: yes|no}, reason, never_auto_unsubscribe or None)`` or
    :class:`InvalidRequestError`."""
    wanted: dict[str, str] = {
        channel: wants
        for channel, wants in (("email", body.email), ("sms", body.sms))
        if wants is not None
    }
    never = body.never_auto_unsubscribe
    if not wanted and never is None:
        raise InvalidRequestError("(body)", "say email, sms or never_auto_unsubscribe")
    return wanted, body.reason.strip(), never


class Preferences:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, recipient_id: str) -> RecipientPreferences | None:
        row = await self._pool.fetchrow(Q["preferences"], recipient_id)
        return describe(row) if row is not None else None

    async def change(
        self,
        recipient_id: str,
        wanted: dict[str, str],
        reason: str,
        never: bool | None,
        caller: str,
    ) -> RecipientPreferences | None:
        async with self._pool.acquire() as connection, connection.transaction():
            current = await connection.fetchrow(Q["lock_preferences"], recipient_id)
            if current is None:
                return None
            for channel, wants in wanted.items():
                if wants == current[f"{channel}_wants"]:
                    continue
                overrides = wants == "yes" and current[f"{channel}_changed_by_kind"] == "automatic"
                kind = "support" if overrides else "manager"
                await connection.execute(
                    Q["set_preference"], recipient_id, channel, wants, reason, kind, caller
                )
                address = current["email" if channel == "email" else "phone"]
                lifted: list[str] = []
                if overrides and address is not None:
                    rows = await connection.fetch(
                        Q["lift_suppressions"], channel, address, caller, reason
                    )
                    lifted = [row["rule"] for row in rows]
                    await connection.execute(
                        Q["clear_address_counts"], channel, address_key(channel, address)
                    )
                action = "support_override" if overrides else "preference_changed"
                details = {"channel": channel, "wants": wants, "lifted_suppressions": lifted}
                await connection.execute(
                    Q["audit_preference"], caller, action, recipient_id, reason, json.dumps(details)
                )
                event = _event(
                    recipient_id,
                    channel,
                    address=address,
                    wants=wants,
                    action=action,
                    reason=reason,
                    kind=kind,
                )
                await outbox.add(connection, "recipient-events", [(recipient_id, event)])
            if never is not None:
                await connection.execute(Q["set_never_auto_unsubscribe"], recipient_id, never)
                await connection.execute(
                    Q["audit_preference"],
                    caller,
                    "never_auto_unsubscribe" if never else "auto_unsubscribe_allowed",
                    recipient_id,
                    reason,
                    "{}",
                )
            row = await connection.fetchrow(Q["preferences"], recipient_id)
        assert row is not None
        return describe(row)

    async def correct(
        self, recipient_id: str, contact: ContactChange, caller: str
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
            )
            row = await connection.fetchrow(Q["preferences"], recipient_id)
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
            values.append(decode_cursor(query.cursor, 1)[0])
            conditions.append(f"id > ${len(values)}")
        limit = query.limit
        text = Q["preferences_overview"].format(where=" AND ".join(conditions), limit=limit + 1)
        rows = await self._pool.fetch(text, *values)
        more = len(rows) > limit
        return {
            "items": [describe(row) for row in rows[:limit]],
            "next_cursor": encode_cursor(rows[limit - 1]["id"]) if more else None,
        }


def _event(
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
        "recipient_id": recipient_id,
        "channel": channel,
        "address": address,
        "rule": "support_override" if action == "support_override" else "manager",
        "reason": reason,
        "changed_by": kind,
        "occurred_at": now_iso(),
    }


def operations(preferences: Preferences) -> list[Operation]:
    async def read(call: Call) -> Response:
        found = await preferences.get(call.path.recipient_id)
        if found is None:
            raise not_found("recipient")
        return answer(found)

    async def write(call: Call) -> Response:
        wanted, reason, never = parse_change(call.body)
        changed = await preferences.change(
            call.path.recipient_id, wanted, reason, never, call.caller.name
        )
        if changed is None:
            raise not_found("recipient")
        return answer(changed)

    async def correct(call: Call) -> Response:
        corrected = await preferences.correct(call.path.recipient_id, call.body, call.caller.name)
        if corrected is None:
            raise not_found("recipient")
        return answer(corrected)

    async def overview(call: Call) -> Response:
        return answer(await preferences.overview(call.query))

    missing = Answer(404, "no such recipient", codes=("not_found",))
    return [
        Operation(
            "GET",
            "/v1/recipients/{recipient_id}/preferences",
            "A recipient's preferences per channel",
            read,
            scopes=("journal:read", "preferences:write"),
            answers=(Answer(200, "the preferences", RecipientPreferences), missing),
            path_params=RecipientPath,
            missing="recipient",
            tag="preferences",
        ),
        Operation(
            "PUT",
            "/v1/recipients/{recipient_id}/preferences",
            "Change a recipient's preferences (audited and announced)",
            write,
            scopes=("preferences:write",),
            answers=(Answer(200, "the new preferences", RecipientPreferences), missing),
            path_params=RecipientPath,
            missing="recipient",
            body=PreferenceChange,
            max_body=MAX_BODY_BYTES,
            tag="preferences",
        ),
        Operation(
            "PATCH",
            "/v1/recipients/{recipient_id}",
            "Correct a recipient's name or addresses",
            correct,
            scopes=("preferences:write",),
            answers=(Answer(200, "the contact details as they now are", Contact), missing),
            path_params=RecipientPath,
            missing="recipient",
            body=ContactChange,
            max_body=MAX_BODY_BYTES,
            tag="preferences",
        ),
        Operation(
            "GET",
            "/v1/preferences",
            "The overview of preferences, filtered and paged",
            overview,
            scopes=("journal:read", "preferences:write"),
            answers=(Answer(200, "one page of recipients, in id order", PreferencesPage),),
            query=OverviewQuery,
            tag="preferences",
        ),
    ]
