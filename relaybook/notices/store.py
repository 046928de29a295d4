"""Notices in PostgreSQL: creation with its fan-out in one transaction, release, and the
notice with its statistics. Every statement is set-based: a 100,000-recipient notice is
a handful of statements, not 100,000."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import asyncpg

from relaybook.access.scope import ScopedPool
from relaybook.content.templates import RenderError
from relaybook.deliveries.answers import Channel
from relaybook.notices.answers import (
    ChannelStats,
    Notice,
    NoticeSummary,
    Preview,
    PreviewMessage,
    Stats,
)
from relaybook.notices.rendering import Renderer
from relaybook.notices.request import NoticeRequest
from relaybook.platform import sql, timestamps
from relaybook.platform.answers import RefusedError
from relaybook.platform.database import Connection
from relaybook.platform.decoding import UNSET

Q = sql.load("relaybook.notices")
#: the deliveries' transitions (their one writer: relaybook/deliveries/__init__.py)
DELIVERIES = sql.load("relaybook.deliveries")
OUTBOX_CHANNEL = "relaybook_outbox"
#: recipients per job page: up to 5,000 send jobs on two channels
PAGE_RECIPIENTS = 2500


class IdempotencyConflictError(Exception):
    """The key was used before with another request body."""


def request_hash(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


class NoticeStore:
    def __init__(self, pool: asyncpg.Pool | ScopedPool, default_agency: str = "default") -> None:
        """``default_agency``: where a notice that names no agency goes."""
        self.pool = pool
        self.default_agency = default_agency

    async def create(
        self,
        notice: NoticeRequest,
        caller: str,
        idempotency: tuple[str, bytes] | None,
    ) -> tuple[int, Notice]:
        """Creates the notice, upserts its recipients and fans out its deliveries, in one
        transaction. With an idempotency ``(key, request hash)``, a repeat of the same
        request returns the first answer; another request under that key raises
        :class:`IdempotencyConflictError`."""
        agency = notice.agency or self.default_agency
        people = notice.recipients
        async with self.pool.acquire() as connection, connection.transaction():
            if idempotency is not None:
                replay = await self._claim(connection, caller, agency, *idempotency)
                if replay is not None:
                    return replay
            await connection.execute(Q["ensure_agency"], agency)
            places = sorted({p for person in people for p in person.properties})
            if notice.property_id is not None:
                places = sorted({*places, notice.property_id})
            if places:
                await connection.execute(Q["ensure_properties"], agency, places)
            notice_id = uuid.uuid4()
            await connection.execute(
                Q["insert_notice"],
                notice_id,
                notice.service,
                notice.kind,
                notice.reference,
                notice.title,
                notice.email_subject,
                notice.email_text,
                notice.email_html,
                notice.sms_text,
                notice.status,
                notice.send_at,
                caller,
                agency,
                notice.property_id,
                notice.default_language,
                json.dumps(notice.content) if notice.content else None,
            )
            await connection.execute(
                Q["upsert_recipients"],
                [p.id for p in people],
                [p.name for p in people],
                [None if p.email is UNSET else p.email for p in people],
                [None if p.phone is UNSET else p.phone for p in people],
                [p.email is not UNSET for p in people],
                [p.phone is not UNSET for p in people],
                agency,
                [None if p.language is UNSET else p.language for p in people],
                [p.language is not UNSET for p in people],
            )
            personal = [p for p in people if p.data is not None]
            if personal:
                await connection.execute(
                    Q["insert_notice_data"],
                    notice_id,
                    agency,
                    [p.id for p in personal],
                    [json.dumps(p.data) for p in personal],
                )
            links = [(p.id, place) for p in people for place in p.properties]
            if links:
                await connection.execute(
                    Q["link_properties"],
                    agency,
                    [person for person, _ in links],
                    [place for _, place in links],
                )
            ids = [p.id for p in people]
            await connection.execute(DELIVERIES["fan_out"], notice_id, ids, notice.channels, agency)
            await add_job_pages(
                connection, notice_id, None, ids, released=notice.status == "sending"
            )
            if notice.status == "sending":
                await connection.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
                await connection.execute(Q["settle_notice"], notice_id)
            answer = await self._describe(connection, notice_id)
            assert answer is not None
            if idempotency is not None:
                await connection.execute(
                    Q["store_idempotency_answer"], caller, idempotency[0], 201, json.dumps(answer)
                )
        return 201, answer

    async def _claim(
        self, connection: Connection, caller: str, agency: str, key: str, hashed: bytes
    ) -> tuple[int, Notice] | None:
        if await connection.fetchval(Q["claim_idempotency_key"], caller, key, hashed, agency):
            return None
        row = await connection.fetchrow(Q["idempotency_answer"], caller, key)
        assert row is not None
        if row["request_hash"] != hashed:
            raise IdempotencyConflictError(key)
        return row["status"], json.loads(row["response"])

    async def get(self, notice_id: uuid.UUID) -> Notice | None:
        async with self.pool.acquire() as connection:
            return await self._describe(connection, notice_id)

    async def preview(
        self, notice_id: uuid.UUID, recipient_id: str, channel: str | None
    ) -> Preview | None:
        """The messages ``recipient_id`` gets from the notice (on ``channel``, or every
        channel they have one on), rendered as the worker renders them; None if the notice
        does not exist or has no message for them. A content that cannot be rendered for
        them is a 422 ``template_error``."""
        async with self.pool.acquire() as connection:
            notice = await connection.fetchrow(Q["load_contents"], [notice_id])
            person = await connection.fetchrow(Q["preview_recipient"], notice_id, recipient_id)
        if notice is None or person is None:
            return None
        preview: Preview = {"notice_id": str(notice_id), "recipient_id": recipient_id}
        renderer = Renderer()
        for name in sorted(person["channels"]):
            if channel is not None and name != channel:
                continue
            try:
                rendered = renderer.render({**person, "channel": name}, notice)
            except RenderError as problem:
                raise RefusedError(422, "template_error", str(problem)) from None
            parts = rendered.parts
            message: PreviewMessage = {
                "language": rendered.language,
                "content_sha256": rendered.sha256,
                "text": parts["text"],
            }
            if name == "email":
                message["subject"] = parts["subject"]
                message["html"] = parts.get("html")
                preview["email"] = message
            elif rendered.segments is not None:
                message["segments"] = rendered.segments.count
                message["encoding"] = rendered.segments.encoding
                preview["sms"] = message
        return preview

    async def release(self, notice_id: uuid.UUID) -> bool:
        """Sends a draft or scheduled notice now; False if it was released already."""
        async with self.pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(Q["release_notice"], notice_id)
            assert row is not None
            if row["released"]:
                await connection.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
                await connection.execute(Q["settle_notice"], notice_id)
            return bool(row["released"])

    async def _describe(self, connection: Connection, notice_id: uuid.UUID) -> Notice | None:
        row = await connection.fetchrow(Q["notice"], notice_id)
        if row is None:
            return None
        rows = await connection.fetch(Q["notice_stats"], notice_id)
        counted = {stat["channel"]: _stats(stat) for stat in rows}
        summary = summarize(row)
        return {
            **summary,
            # every recipient has a delivery on every channel of the notice
            "recipients": rows[0]["recipients"] if rows else 0,
            "stats": _channel_stats(counted, summary["channels"]),
        }

    async def page(self, query: str, values: list[Any]) -> list[asyncpg.Record]:
        """The rows of one page of the notices list (the statement built by the route)."""
        return await self.pool.fetch(query, *values)


def summarize(row: asyncpg.Record) -> NoticeSummary:
    """A notice row as the API shows it, without its statistics."""
    channels: list[Channel] = []
    if row["email_subject"]:
        channels.append("email")
    if row["sms_text"]:
        channels.append("sms")
    return {
        "id": str(row["id"]),
        "agency": row["agency_id"],
        "property": row["property_id"],
        "source": {
            "service": row["source_service"],
            "kind": row["source_kind"],
            "reference": row["source_reference"],
        },
        "title": row["title"],
        "channels": channels,
        "status": row["status"],
        "send_at": timestamps.iso_or_none(row["send_at"]),
        "released_at": timestamps.iso_or_none(row["released_at"]),
        "created_at": timestamps.iso(row["created_at"]),
        "created_by": row["created_by"],
    }


def _stats(row: asyncpg.Record | None) -> Stats:
    def count(field: str) -> int:
        return int(row[field]) if row is not None else 0

    return {
        "queued": count("queued"),
        "sent": count("sent"),
        "delivered": count("delivered"),
        "opened": count("opened"),
        "clicked": count("clicked"),
        "failed": count("failed"),
        "skipped": count("skipped"),
    }


def _channel_stats(counted: dict[str, Stats], channels: list[Channel]) -> ChannelStats:
    stats: ChannelStats = {}
    if "email" in channels:
        stats["email"] = counted.get("email") or _stats(None)
    if "sms" in channels:
        stats["sms"] = counted.get("sms") or _stats(None)
    return stats


async def add_job_pages(
    connection: Connection,
    notice_id: uuid.UUID,
    resend_id: uuid.UUID | None,
    recipient_ids: list[str],
    *,
    released: bool,
) -> None:
    """Queues the send jobs of a fan-out (the notice's, or one resend's) for the relay, in
    the caller's transaction: pages of its recipients, due now or once the notice is
    released."""
    await connection.execute(
        Q["insert_job_pages"], notice_id, resend_id, released, PAGE_RECIPIENTS, recipient_ids
    )
