"""The journal: every message, filterable, newest first, paged by keyset (a page never
repeats or skips a row because rows were added meanwhile); one message with its event
timeline; a notice's recipients with the state of each of their messages."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import msgspec

from relaybook.access.scope import ScopedPool
from relaybook.deliveries.answers import Channel, DeliveryStatus
from relaybook.journal.answers import (
    Delivery,
    JournalItem,
    JournalPage,
    NoticeRecipient,
    NoticeRecipients,
)
from relaybook.notices.listing import LIST_FILTERS
from relaybook.platform import sql, timestamps
from relaybook.platform.decoding import Id, InvalidRequestError, Moment, decode_query, in_utc
from relaybook.platform.paging import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    cursor_moment,
    decode_cursor,
    encode_cursor,
)

Q = sql.load("relaybook.journal")
NOTICES = sql.load("relaybook.notices")

STATUSES = ("queued", "sent", "delivered", "opened", "clicked", "failed", "skipped")
CHANNELS = ("email", "sms")

#: filter -> its SQL condition on the journal
FILTERS: dict[str, str] = {
    "notice_id": "d.notice_id = ${}",
    "recipient_id": "d.recipient_id = ${}",
    "channel": "d.channel = ${}",
    "status": "d.status = '{}'",
    "since": "d.created_at >= ${}",
    "until": "d.created_at < ${}",
    "source_service": "d.notice_id IN (SELECT id FROM notices WHERE source_service = ${})",
    "source_kind": "d.notice_id IN (SELECT id FROM notices WHERE source_kind = ${})",
    "source_reference": "d.notice_id IN (SELECT id FROM notices WHERE source_reference = ${})",
    "agency": "d.agency_id = ${}",
    "property": "d.notice_id IN (SELECT id FROM notices WHERE property_id = ${})",
}
#: filters on the notice that pick few notices (one deposit call, one co-ownership): the
#: page is then read notice by notice, each newest first by its own index, instead of by
#: scanning every newer message of every other notice (a deposit call of last month on a
#: journal of 1,000,000 messages: 267 ms a page, against ~6)
NOTICE_FILTERS = {
    name: LIST_FILTERS[name]  # the notices list's own conditions on them
    for name in ("source_service", "source_kind", "source_reference", "property")
}
NARROW = ("source_reference", "property")
#: filters whose value is written into the statement rather than passed: a status is one
#: of STATUSES, and the status index holds only some of them (migration 0011), which the
#: planner sees only in the statement's text (a plan kept for any value cannot use it)
WRITTEN_IN = {"status"}


class JournalQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``GET /v1/journal``: every filter given must hold; ``since`` and ``until`` are on
    when the message was created."""

    notice_id: uuid.UUID | None = None
    source_service: Id | None = None
    source_kind: Id | None = None
    source_reference: Id | None = None
    recipient_id: Id | None = None
    channel: Channel | None = None
    status: DeliveryStatus | None = None
    since: Moment | None = None
    until: Moment | None = None
    #: one agency's messages (among the caller's), and those about one of its properties
    agency: Id | None = None
    property: Id | None = None
    cursor: Cursor | None = None
    limit: Limit = DEFAULT_LIMIT


class RecipientsQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``GET /v1/notices/{id}/recipients``: ``status`` keeps those with a message in that
    state."""

    status: DeliveryStatus | None = None
    cursor: Cursor | None = None
    limit: Limit = DEFAULT_LIMIT


def journal_statement(query: JournalQuery | Mapping[str, str]) -> tuple[str, list[Any], int]:
    """The statement reading one page of the journal (with one row more than the page, to
    tell whether another follows), its values, and the page's size."""
    if not isinstance(query, JournalQuery):
        query = decode_query(query.items(), JournalQuery)
    by_notices = any(getattr(query, name) is not None for name in NARROW)
    conditions, values, notices = ["true"], [], ["true"]
    for name, condition in FILTERS.items():
        value = getattr(query, name)
        if value is None:
            continue
        if by_notices and name in NOTICE_FILTERS:
            values.append(value)
            notices.append(NOTICE_FILTERS[name].format(len(values)))
            continue
        if isinstance(value, dt.datetime):
            value = in_utc(name, value)
        if name in WRITTEN_IN:
            conditions.append(condition.format(value))
        else:
            values.append(value)
            conditions.append(condition.format(len(values)))
    if query.cursor is not None:
        created, delivery = decode_cursor(query.cursor, 2)
        try:
            delivery_id = uuid.UUID(delivery)
        except ValueError:
            raise InvalidRequestError("cursor", "is not a cursor this API gave out") from None
        values += [cursor_moment(created), delivery_id]
        conditions.append(f"(d.created_at, d.id) < (${len(values) - 1}, ${len(values)})")
    limit = query.limit
    where = " AND ".join(conditions)
    if by_notices:
        text = Q["journal_by_notices"].format(
            where=where, notices=" AND ".join(notices), limit=limit + 1
        )
        return text, values, limit
    return Q["journal"].format(where=where, limit=limit + 1), values, limit


class JournalReader:
    def __init__(self, pool: asyncpg.Pool | ScopedPool) -> None:
        self._pool = pool

    async def page(self, query: JournalQuery) -> JournalPage:
        """``GET /v1/journal``: ``query`` is the request's query parameters."""
        text, values, limit = journal_statement(query)
        rows = await self._pool.fetch(text, *values)
        items = [_item(row) for row in rows[:limit]]
        more = len(rows) > limit
        last = rows[limit - 1] if more else None
        cursor = encode_cursor(last["created_at"].isoformat(), str(last["id"])) if last else None
        return {"items": items, "next_cursor": cursor}

    async def delivery(self, delivery_id: uuid.UUID) -> Delivery | None:
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
        return bool(await self._pool.fetchval(NOTICES["notice_exists"], notice_id))

    async def recipients(
        self, notice_id: uuid.UUID, query: RecipientsQuery, after: str
    ) -> NoticeRecipients:
        """``GET /v1/notices/{id}/recipients``, in recipient id order, after the recipient
        id ``after``."""
        limit = query.limit
        rows = await self._pool.fetch(
            Q["notice_recipients"], notice_id, after, query.status, limit + 1
        )
        items = [_recipient(row) for row in rows[:limit]]
        more = len(rows) > limit
        return {
            "items": items,
            "next_cursor": encode_cursor(rows[limit - 1]["recipient_id"]) if more else None,
        }


def _recipient(row: asyncpg.Record) -> NoticeRecipient:
    channels = json.loads(row["channels"])
    item: NoticeRecipient = {"id": row["recipient_id"], "name": row["name"]}
    if "email" in channels:
        item["email"] = channels["email"]
    if "sms" in channels:
        item["sms"] = channels["sms"]
    return item


def _item(row: asyncpg.Record) -> JournalItem:
    return {
        "delivery_id": str(row["id"]),
        "notice_id": str(row["notice_id"]),
        "recipient_id": row["recipient_id"],
        "channel": row["channel"],
        "status": row["status"],
        "address": row["address"],
        "attempt": row["attempt"],
        "created_at": timestamps.iso(row["created_at"]),
        "sent_at": timestamps.iso_or_none(row["sent_at"]),
        "delivered_at": timestamps.iso_or_none(row["delivered_at"]),
        "opened_at": timestamps.iso_or_none(row["opened_at"]),
        "clicked_at": timestamps.iso_or_none(row["clicked_at"]),
        "failed_at": timestamps.iso_or_none(row["failed_at"]),
        "reason": row["reason"],
        "provider_code": row["provider_code"],
        "language": row["language"],
        "content_sha256": row["content_sha256"],
        "segments": row["segments"],
    }
