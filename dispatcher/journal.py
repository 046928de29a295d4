"""The journal: every message, filterable, newest first, paged by keyset (a page never
repeats or skips a row because rows were added meanwhile); one message with its event
timeline; a notice's recipients with the state of each of their messages."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dispatcher.api import answers_errors, path_id
from dispatcher.auth import Authenticator
from dispatcher.store import iso
from dispatcher.validation import InvalidRequestError
from relaybook import sql
from relaybook.http import error

Q = sql.load("dispatcher")

STATUSES = ("queued", "sent", "delivered", "opened", "clicked", "failed", "skipped")
CHANNELS = ("email", "sms")
DEFAULT_LIMIT, MAX_LIMIT = 100, 500

#: query parameter -> (SQL condition on the journal, parser of the value)
FILTERS: dict[str, tuple[str, Callable[[str, str], Any]]] = {}
#: filters whose value is written into the statement rather than passed: a status is one
#: of STATUSES, and the status index holds only some of them (migration 0011), which the
#: planner sees only in the statement's text (a plan kept for any value cannot use it)
WRITTEN_IN = {"status"}


def _uuid(field: str, raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidRequestError(field, "must be a UUID") from None


def _text(field: str, raw: str) -> str:
    if not raw.strip() or len(raw) > 200:
        raise InvalidRequestError(field, "must be 1 to 200 characters")
    return raw


def _one_of(*allowed: str) -> Callable[[str, str], str]:
    def parse(field: str, raw: str) -> str:
        if raw not in allowed:
            raise InvalidRequestError(field, f"must be one of {', '.join(allowed)}")
        return raw

    return parse


def _moment(field: str, raw: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequestError(field, "must be an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise InvalidRequestError(field, "must say its time zone (e.g. Z or +01:00)")
    return moment


FILTERS.update(
    {
        "notice_id": ("d.notice_id = ${}", _uuid),
        "recipient_id": ("d.recipient_id = ${}", _text),
        "channel": ("d.channel = ${}", _one_of(*CHANNELS)),
        "status": ("d.status = '{}'", _one_of(*STATUSES)),
        "since": ("d.created_at >= ${}", _moment),
        "until": ("d.created_at < ${}", _moment),
        "source_service": (
            "d.notice_id IN (SELECT id FROM notices WHERE source_service = ${})",
            _text,
        ),
        "source_kind": ("d.notice_id IN (SELECT id FROM notices WHERE source_kind = ${})", _text),
        "source_reference": (
            "d.notice_id IN (SELECT id FROM notices WHERE source_reference = ${})",
            _text,
        ),
    }
)


def encode_cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def decode_cursor(raw: str, size: int) -> list[str]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidRequestError("cursor", "is not a cursor this API gave out") from None
    if (
        not isinstance(parts, list)
        or len(parts) != size
        or not all(isinstance(p, str) for p in parts)
    ):
        raise InvalidRequestError("cursor", "is not a cursor this API gave out")
    return parts


def parse_limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequestError("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def journal_statement(query: Mapping[str, str]) -> tuple[str, list[Any], int]:
    """The statement reading one page of the journal (with one row more than the page, to
    tell whether another follows), its values, and the page's size."""
    unknown = sorted(set(query) - {*FILTERS, "cursor", "limit"})
    if unknown:
        raise InvalidRequestError(unknown[0], "is not a journal filter")
    conditions, values = ["true"], []
    for name, (condition, parse) in FILTERS.items():
        if name not in query:
            continue
        value = parse(name, query[name])
        if name in WRITTEN_IN:
            conditions.append(condition.format(value))
        else:
            values.append(value)
            conditions.append(condition.format(len(values)))
    if "cursor" in query:
        created, delivery = decode_cursor(query["cursor"], 2)
        values += [_moment("cursor", created), _uuid("cursor", delivery)]
        conditions.append(f"(d.created_at, d.id) < (${len(values) - 1}, ${len(values)})")
    limit = parse_limit(query)
    return Q["journal"].format(where=" AND ".join(conditions), limit=limit + 1), values, limit


class JournalReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def page(self, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /v1/journal``: ``query`` is the request's query parameters."""
        text, values, limit = journal_statement(query)
        rows = await self._pool.fetch(text, *values)
        items = [_item(row) for row in rows[:limit]]
        more = len(rows) > limit
        last = rows[limit - 1] if more else None
        cursor = encode_cursor(last["created_at"].isoformat(), str(last["id"])) if last else None
        return {"items": items, "next_cursor": cursor}

    async def delivery(self, delivery_id: uuid.UUID) -> dict[str, Any] | None:
        """``GET /v1/deliveries/{id}``: the journal row, its notice, and its timeline."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(Q["delivery"], delivery_id)
            if row is None:
                return None
            events = await connection.fetch(Q["delivery_timeline"], delivery_id)
        timeline = []
        for event in events:
            payload = json.loads(event["payload"])
            payload.pop("schema", None)
            timeline.append(payload)
        return {
            **_item(row),
            "notice": {
                "id": str(row["notice_id"]),
                "title": row["title"],
                "source": {
                    "service": row["source_service"],
                    "kind": row["source_kind"],
                    "reference": row["source_reference"],
                },
            },
            "retry_of": str(row["retry_of"]) if row["retry_of"] else None,
            "resend_id": str(row["resend_id"]) if row["resend_id"] else None,
            "is_latest": row["is_latest"],
            "provider": row["provider"],
            "provider_message_id": row["provider_message_id"],
            "send_attempts": row["send_attempts"],
            "events": timeline,
        }

    async def notice_exists(self, notice_id: uuid.UUID) -> bool:
        return bool(await self._pool.fetchval(Q["notice_exists"], notice_id))

    async def recipients(self, notice_id: uuid.UUID, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /v1/notices/{id}/recipients``, in recipient id order."""
        status = _one_of(*STATUSES)("status", query["status"]) if "status" in query else None
        after = decode_cursor(query["cursor"], 1)[0] if "cursor" in query else ""
        limit = parse_limit(query)
        rows = await self._pool.fetch(Q["notice_recipients"], notice_id, after, status, limit + 1)
        items = [
            {"id": row["recipient_id"], "name": row["name"], **json.loads(row["channels"])}
            for row in rows[:limit]
        ]
        more = len(rows) > limit
        return {
            "items": items,
            "next_cursor": encode_cursor(rows[limit - 1]["recipient_id"]) if more else None,
        }


def _item(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "delivery_id": str(row["id"]),
        "notice_id": str(row["notice_id"]),
        "recipient_id": row["recipient_id"],
        "channel": row["channel"],
        "status": row["status"],
        "address": row["address"],
        "attempt": row["attempt"],
        "created_at": iso(row["created_at"]),
        "sent_at": iso(row["sent_at"]),
        "delivered_at": iso(row["delivered_at"]),
        "opened_at": iso(row["opened_at"]),
        "clicked_at": iso(row["clicked_at"]),
        "failed_at": iso(row["failed_at"]),
        "reason": row["reason"],
        "provider_code": row["provider_code"],
    }


def routes(reader: JournalReader, auth: Authenticator) -> list[Route]:
    @answers_errors
    async def journal(request: Request) -> Response:
        await auth.caller(request, "journal:read")
        return JSONResponse(await reader.page(request.query_params))

    @answers_errors
    async def delivery(request: Request) -> Response:
        await auth.caller(request, "journal:read")
        answer = await reader.delivery(path_id(request, "delivery_id", "delivery"))
        if answer is None:
            return error(404, "not_found", "no such delivery")
        return JSONResponse(answer)

    @answers_errors
    async def recipients(request: Request) -> Response:
        await auth.caller(request, "journal:read", "notices:write")
        notice_id = path_id(request, "notice_id", "notice")
        if not await reader.notice_exists(notice_id):
            return error(404, "not_found", "no such notice")
        return JSONResponse(await reader.recipients(notice_id, request.query_params))

    return [
        Route("/v1/journal", journal, methods=["GET"]),
        Route("/v1/deliveries/{delivery_id}", delivery, methods=["GET"]),
        Route("/v1/notices/{notice_id}/recipients", recipients, methods=["GET"]),
    ]
