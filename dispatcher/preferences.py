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
from dispatcher.api import Answer, ApiError, Call, Operation, answer, not_found
from dispatcher.auth import SUPPORT, Caller
from dispatcher.paging import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from dispatcher.scope import ScopedPool
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
    "agency": "agency_id = ${}",
    "property": "(agency_id, id) IN (SELECT agency_id, recipient_id FROM recipient_properties "
    "WHERE property_id = ${})",
}


class RecipientPath(msgspec.Struct):
    recipient_id: Id


class RecipientQuery(msgspec.Struct, forbid_unknown_fields=True):
    """A recipient id is unique within its agency: ``agency`` says whose, needed only
    when the caller serves several agencies that each have a recipient of that id."""

    agency: Id | None = None


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
        "changed_at": iso(row[f"{channel}_changed_at"]),
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
        row = await self._pool.fetchrow(Q["preferences"], recipient_id, agency)
        return describe(row) if row is not None else None

    async def change(
        self,
        agency: str,
        recipient_id: str,
        *,
        wanted: dict[str, str],
        reason: str,
        never: bool | None,
        caller: Caller,
    ) -> RecipientPreferences | None:
        """Applies a change; bringing back a channel the bounce policy turned off is for
        support only (:class:`ApiError` 403 ``support_only`` for anyone else)."""
        async with self._pool.acquire() as connection, connection.transaction():
            current = await connection.fetchrow(Q["lock_preferences"], recipient_id, agency)
            if current is None:
                return None
            for channel, wants in wanted.items():
                if wants == current[f"{channel}_wants"]:
                    continue
                overrides = wants == "yes" and current[f"{channel}_changed_by_kind"] == "automatic"
                if overrides and SUPPORT not in caller.scopes:
                    raise ApiError(
                        403,
                        "support_only",
                        f"the bounce policy unsubscribed this {channel}: only support may "
                        "bring it back (contact support)",
                    )
                kind = "support" if overrides else "manager"
                await connection.execute(
                    Q["set_preference"],
                    recipient_id,
                    channel,
                    wants,
                    reason,
                    kind,
                    caller.name,
                    agency,
                )
                address = current["email" if channel == "email" else "phone"]
                lifted: list[str] = []
                if overrides and address is not None:
                    rows = await connection.fetch(
                        Q["lift_suppressions"], channel, address, caller.name, reason
                    )
                    lifted = [row["rule"] for row in rows]
                    await connection.execute(
                        Q["clear_address_counts"], channel, address_key(channel, address)
                    )
                action = "support_override" if overrides else "preference_changed"
                details = {"channel": channel, "wants": wants, "lifted_suppressions": lifted}
                await connection.execute(
                    Q["audit_preference"],
                    caller.name,
                    action,
                    recipient_id,
                    reason,
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
                    reason=reason,
                    kind=kind,
                )
                await outbox.add(connection, "recipient-events", [(recipient_id, event)])
            if never is not None:
                await connection.execute(
                    Q["set_never_auto_unsubscribe"], recipient_id, never, agency
                )
                await connection.execute(
                    Q["audit_preference"],
                    caller.name,
                    "never_auto_unsubscribe" if never else "auto_unsubscribe_allowed",
                    recipient_id,
                    reason,
                    "{}",
                    agency,
                )
            row = await connection.fetchrow(Q["preferences"], recipient_id, agency)
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
            row = await connection.fetchrow(Q["preferences"], recipient_id, agency)
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
            conditions.append(f"(agency_id, id) > (${len(values) - 1}, ${len(values)})")
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
        "rule": "support_override" if action == "support_override" else "manager",
        "reason": reason,
        "changed_by": kind,
        "occurred_at": now_iso(),
    }


def operations(preferences: Preferences) -> list[Operation]:
    async def whose(call: Call) -> str:
        return await preferences.agency_of(call.path.recipient_id, call.query.agency, call.caller)

    async def read(call: Call) -> Response:
        found = await preferences.get(await whose(call), call.path.recipient_id)
        if found is None:
            raise not_found("recipient")
        return answer(found)

    async def write(call: Call) -> Response:
        wanted, reason, never = parse_change(call.body)
        changed = await preferences.change(
            await whose(call),
            call.path.recipient_id,
            wanted=wanted,
            reason=reason,
            never=never,
            caller=call.caller,
        )
        if changed is None:
            raise not_found("recipient")
        return answer(changed)

    async def correct(call: Call) -> Response:
        corrected = await preferences.correct(
            await whose(call), call.path.recipient_id, call.body, call.caller.name
        )
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
            query=RecipientQuery,
            missing="recipient",
            tag="preferences",
        ),
        Operation(
            "PUT",
            "/v1/recipients/{recipient_id}/preferences",
            "Change a recipient's preferences (audited and announced)",
            write,
            scopes=("preferences:write",),
            answers=(
                Answer(200, "the new preferences", RecipientPreferences),
                missing,
                Answer(
                    403,
                    "bringing back a channel the bounce policy turned off is for support",
                    codes=("support_only",),
                ),
            ),
            path_params=RecipientPath,
            query=RecipientQuery,
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
            query=RecipientQuery,
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
