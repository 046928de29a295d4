"""Recipients' preferences: read, changed by a manager, or restored by support after an
automatic unsubscribe (which also lifts the address's suppression and clears its failure
counts, so the next notice goes out). Every change is audited and announced on
``recipient-events``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bounce_policy.decisions import address_key
from dispatcher.api import answers_errors, json_body
from dispatcher.auth import Authenticator
from dispatcher.journal import decode_cursor, encode_cursor, parse_limit
from dispatcher.store import iso
from dispatcher.validation import InvalidRequestError, Recipient, parse_contact, parse_object
from relaybook import outbox, sql
from relaybook.http import error
from relaybook.timestamps import now_iso

Q = sql.load("dispatcher")
CHANNELS = ("email", "sms")
KINDS = ("default", "owner", "manager", "support", "automatic")
MAX_BODY_BYTES = 16 * 1024

#: overview filter -> (SQL condition, allowed values)
OVERVIEW_FILTERS = {
    "wants_email": (
        "CASE WHEN email IS NULL THEN 'not_applicable' ELSE email_wants END = ${}",
        ("yes", "no", "not_applicable"),
    ),
    "wants_sms": (
        "CASE WHEN phone IS NULL THEN 'not_applicable' ELSE sms_wants END = ${}",
        ("yes", "no", "not_applicable"),
    ),
    "reason": ("(email_changed_by_kind = ${0} OR sms_changed_by_kind = ${0})", KINDS),
}


def describe(row: asyncpg.Record) -> dict[str, Any]:
    """The contract's shape: per channel ``wants`` (``not_applicable`` without an
    address), the reason, who changed it (``changed_by``: default, owner, manager,
    support, automatic; ``changed_by_name``: the token or service) and when."""
    answer: dict[str, Any] = {"recipient_id": row["id"], "name": row["name"]}
    for channel, address in (("email", row["email"]), ("sms", row["phone"])):
        answer[channel] = {
            "wants": "not_applicable" if address is None else row[f"{channel}_wants"],
            "reason": row[f"{channel}_reason"],
            "changed_by": row[f"{channel}_changed_by_kind"],
            "changed_by_name": row[f"{channel}_changed_by"],
            "changed_at": iso(row[f"{channel}_changed_at"]),
        }
    answer["never_auto_unsubscribe"] = row["never_auto_unsubscribe"]
    return answer


def parse_change(body: Any) -> tuple[dict[str, str], str, bool | None]:
    """``({channel: yes|no}, reason, never_auto_unsubscribe or None)`` or
    :class:`InvalidRequestError`."""
    if not isinstance(body, dict):
        raise InvalidRequestError("(body)", "must be a JSON object")
    unknown = sorted(set(body) - {*CHANNELS, "reason", "never_auto_unsubscribe"})
    if unknown:
        raise InvalidRequestError(unknown[0], "is not a preference field")
    wanted = {}
    for channel in CHANNELS:
        if channel in body:
            if body[channel] not in ("yes", "no"):
                raise InvalidRequestError(channel, "must be yes or no")
            wanted[channel] = body[channel]
    never = body.get("never_auto_unsubscribe")
    if never is not None and not isinstance(never, bool):
        raise InvalidRequestError("never_auto_unsubscribe", "must be true or false")
    if not wanted and never is None:
        raise InvalidRequestError("(body)", "say email, sms or never_auto_unsubscribe")
    reason = body.get("reason")
    if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= 500:
        raise InvalidRequestError("reason", "is required: 1 to 500 characters saying why")
    return wanted, reason.strip(), never


class Preferences:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, recipient_id: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(Q["preferences"], recipient_id)
        return describe(row) if row is not None else None

    async def change(
        self,
        recipient_id: str,
        wanted: dict[str, str],
        reason: str,
        never: bool | None,
        caller: str,
    ) -> dict[str, Any] | None:
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

    async def correct(self, contact: Recipient, caller: str) -> dict[str, Any] | None:
        """``PATCH /v1/recipients/{id}``: the contact details a manager corrected (an
        address given as null is removed); answers them as they now are."""
        async with self._pool.acquire() as connection, connection.transaction():
            found = await connection.fetchval(
                Q["update_contact"],
                contact.id,
                contact.name is not None,
                contact.name,
                contact.email_given,
                contact.email,
                contact.phone_given,
                contact.phone,
            )
            if found is None:
                return None
            changed = [
                field
                for field, given in (
                    ("name", contact.name is not None),
                    ("email", contact.email_given),
                    ("phone", contact.phone_given),
                )
                if given
            ]
            await connection.execute(
                Q["audit_preference"],
                caller,
                "contact_corrected",
                contact.id,
                None,
                json.dumps({"fields": changed}),
            )
            row = await connection.fetchrow(Q["preferences"], contact.id)
        assert row is not None
        return {"id": row["id"], "name": row["name"], "email": row["email"], "phone": row["phone"]}

    async def overview(self, query: Mapping[str, str]) -> dict[str, Any]:
        unknown = sorted(set(query) - {*OVERVIEW_FILTERS, "cursor", "limit"})
        if unknown:
            raise InvalidRequestError(unknown[0], "is not a preferences filter")
        conditions, values = ["true"], []
        for name, (condition, allowed) in OVERVIEW_FILTERS.items():
            if name in query:
                if query[name] not in allowed:
                    raise InvalidRequestError(name, f"must be one of {', '.join(allowed)}")
                values.append(query[name])
                conditions.append(condition.format(len(values)))
        if "cursor" in query:
            values.append(decode_cursor(query["cursor"], 1)[0])
            conditions.append(f"id > ${len(values)}")
        limit = parse_limit(query)
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


def routes(preferences: Preferences, auth: Authenticator) -> list[Route]:
    @answers_errors
    async def read(request: Request) -> Response:
        await auth.caller(request, "journal:read", "preferences:write")
        answer = await preferences.get(request.path_params["recipient_id"])
        if answer is None:
            return error(404, "not_found", "no such recipient")
        return JSONResponse(answer)

    @answers_errors
    async def write(request: Request) -> Response:
        caller = await auth.caller(request, "preferences:write")
        _, body = await json_body(request, MAX_BODY_BYTES)
        wanted, reason, never = parse_change(body)
        answer = await preferences.change(
            request.path_params["recipient_id"], wanted, reason, never, caller.name
        )
        if answer is None:
            return error(404, "not_found", "no such recipient")
        return JSONResponse(answer)

    @answers_errors
    async def correct(request: Request) -> Response:
        caller = await auth.caller(request, "preferences:write")
        _, body = await json_body(request, MAX_BODY_BYTES)
        recipient_id = request.path_params["recipient_id"]
        contact = parse_contact(
            parse_object(body, "(body)", {"name", "email", "phone"}), recipient_id
        )
        answer = await preferences.correct(contact, caller.name)
        if answer is None:
            return error(404, "not_found", "no such recipient")
        return JSONResponse(answer)

    @answers_errors
    async def overview(request: Request) -> Response:
        await auth.caller(request, "journal:read", "preferences:write")
        return JSONResponse(await preferences.overview(request.query_params))

    return [
        Route("/v1/recipients/{recipient_id}/preferences", read, methods=["GET"]),
        Route("/v1/recipients/{recipient_id}/preferences", write, methods=["PUT"]),
        Route("/v1/recipients/{recipient_id}", correct, methods=["PATCH"]),
        Route("/v1/preferences", overview, methods=["GET"]),
    ]
