"""Resending what failed, without a new notice: for each scope, how many recipients,
emails and texts would go out (and who is left out, and why: the recipient cannot be
contacted there any more); the resend itself, as new attempts linked to the ones they
retry; and the history.

Which messages a scope takes is a pure function (:func:`plan`); the store runs it on the
notice's latest attempts with the notice row locked, so two resends at the same moment
never retry the same message twice: the second sees the first's queued attempts. Why a
recipient cannot be contacted on a channel now comes with those attempts
(``resend_candidates`` in ``relaybook/notices/queries.sql``, the fan-out's own reasons),
for the API's counts and the console's dialog alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import asyncpg
import msgspec

from relaybook.access.scope import ScopedPool
from relaybook.notices.answers import (
    Count,
    Resend,
    ResendOptions,
    ResendRecord,
    ResendScope,
    ScopeCount,
)
from relaybook.notices.request import MAX_RECIPIENTS
from relaybook.notices.store import OUTBOX_CHANNEL, add_job_pages
from relaybook.platform import sql, timestamps
from relaybook.platform.answers import RefusedError
from relaybook.platform.decoding import Id, InvalidRequestError

Q = sql.load("relaybook.notices")
#: the deliveries' transitions (their one writer: relaybook/deliveries/__init__.py)
DELIVERIES = sql.load("relaybook.deliveries")
SCOPES = ("failed", "undelivered", "selected")
DELIVERED = frozenset({"delivered", "opened", "clicked"})
#: never sent: nothing to resend
UNSENT = frozenset({"draft", "scheduled"})
#: a resendable notice (a failed one most of all); one still ``sending`` is resendable
#: once it is done
SENT = frozenset({"sent", "partially_failed", "failed"})
#: times a resend is tried when PostgreSQL breaks a deadlock with it
DEADLOCK_TRIES = 3


class ResendError(RefusedError):
    """A resend refused (409 ``no_failed_recipients``...)."""


def refusal(status: str) -> ResendError | None:
    """Why a notice in ``status`` may not be resent now (409 ``notice_not_sent`` for a
    draft or a scheduled one, 409 ``notice_sending`` while it is being sent), or None: a
    sent, partially failed or failed notice may be. The one rule the API's resend and the
    console's "Resend failures" button both follow."""
    if status in UNSENT:
        return ResendError(409, "notice_not_sent", f"the notice is {status}")
    if status not in SENT:
        return ResendError(
            409, "notice_sending", "the notice is still being sent; resend once it is done"
        )
    return None


@dataclasses.dataclass(frozen=True)
class Message:
    """A recipient's latest attempt on one channel."""

    delivery_id: uuid.UUID
    recipient_id: str
    channel: str
    status: str
    #: why the recipient cannot be contacted there now, as the fan-out skips a message:
    #: ``no_address``, ``auto_unsubscribed``, ``opted_out`` or ``suppressed``; None if
    #: they may be
    reason: str | None
    #: the recipient's, if the platform gave one
    name: str | None = None

    @property
    def reachable(self) -> bool:
        """May be contacted there now."""
        return self.reason is None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a scope retries, in recipient order, and what it leaves out."""

    retry: list[Message]
    #: would be retried, but the recipient unsubscribed, was suppressed or lost the
    #: address (each message's ``reason`` says which); in recipient and channel order
    excluded: list[Message]

    def counts(self) -> ScopeCount:
        retry = _count(self.retry)
        return {
            "recipients": retry["recipients"],
            "email": retry["email"],
            "sms": retry["sms"],
            "excluded": _count(self.excluded),
        }


def _count(messages: Iterable[Message]) -> Count:
    listed = list(messages)
    return {
        "recipients": len({m.recipient_id for m in listed}),
        "email": sum(m.channel == "email" for m in listed),
        "sms": sum(m.channel == "sms" for m in listed),
    }


def plan(messages: Iterable[Message], scope: str, selected: frozenset[str] = frozenset()) -> Plan:
    """The messages ``scope`` retries. ``failed``: the failed channels of every recipient
    with one; ``undelivered``: the failed or never-delivered channels of recipients who
    got the notice on no channel; ``selected``: the failed channels of the ``selected``
    recipients. Skipped and queued messages are never retried."""
    return _plan(_by_recipient(messages), scope, selected)


def _by_recipient(messages: Iterable[Message]) -> list[tuple[str, list[Message]]]:
    """Each recipient's messages, in recipient order (grouped once for every scope)."""
    grouped: dict[str, list[Message]] = defaultdict(list)
    for message in messages:
        grouped[message.recipient_id].append(message)
    return sorted(grouped.items())


def _plan(
    by_recipient: list[tuple[str, list[Message]]], scope: str, selected: frozenset[str]
) -> Plan:
    chosen: list[Message] = []
    for recipient, own in by_recipient:
        if scope == "undelivered":
            if any(m.status in DELIVERED for m in own):
                continue
            chosen += [m for m in own if m.status in {"failed", "sent"}]
        elif scope == "failed" or recipient in selected:
            chosen += [m for m in own if m.status == "failed"]
    excluded = [m for m in chosen if not m.reachable]
    # a few, listed by the console: sorted here rather than every candidate by the query
    excluded.sort(key=lambda m: (m.recipient_id, m.channel))
    return Plan(retry=[m for m in chosen if m.reachable], excluded=excluded)


class ResendBody(msgspec.Struct, forbid_unknown_fields=True):
    """``failed``: every failed channel; ``undelivered``: also what was never delivered, for
    recipients who got the notice on no channel; ``selected``: the failed channels of the
    ``recipient_ids`` (that scope only)."""

    scope: ResendScope
    recipient_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_RECIPIENTS)] | None = None


class OptionsQuery(msgspec.Struct, forbid_unknown_fields=True):
    #: comma-separated recipient ids: what the ``selected`` scope would resend
    recipient_ids: Annotated[str, msgspec.Meta(max_length=4000)] | None = None


def options_of(plans: Mapping[str, Plan], selected: frozenset[str]) -> ResendOptions:
    """The API's answer about ``plans`` (one per scope, ``selected`` being the recipients
    the ``selected`` scope was planned for)."""
    chosen = plans["selected"].counts()
    chosen["available"] = bool(selected)
    return {
        "failed": plans["failed"].counts(),
        "undelivered": plans["undelivered"].counts(),
        "selected": chosen,
    }


def parse_request(body: ResendBody) -> tuple[str, frozenset[str]]:
    ids = body.recipient_ids
    if body.scope == "selected" and not ids:
        raise ResendError(422, "no_selection", "scope selected needs recipient_ids")
    if body.scope != "selected" and ids:
        raise InvalidRequestError("recipient_ids", "only scope selected takes recipient ids")
    return body.scope, frozenset(ids or ())


def selection(raw: str | None) -> frozenset[str]:
    """``a,b`` as recipient ids; a 422 for one no recipient could have."""
    selected = frozenset(part.strip() for part in (raw or "").split(",") if part.strip())
    if any(len(part) > 200 for part in selected):
        raise InvalidRequestError("recipient_ids", "a recipient id is at most 200 characters")
    return selected


class Resends:
    def __init__(self, pool: asyncpg.Pool | ScopedPool) -> None:
        self._pool = pool

    async def options(self, notice_id: uuid.UUID, selected: frozenset[str]) -> ResendOptions:
        """Per scope: the recipients, emails and texts a resend would send now, and those
        left out because they cannot be contacted any more (``excluded``)."""
        return options_of(await self.plans(notice_id, selected), selected)

    async def plans(self, notice_id: uuid.UUID, selected: frozenset[str]) -> dict[str, Plan]:
        """Per scope (:data:`SCOPES`, ``selected`` for the ``selected`` recipients): what a
        resend would retry now, and the messages it would leave out, each with its
        recipient's name and why. A 404 :class:`ResendError` for a notice the caller cannot
        see, an :class:`InvalidRequestError` for a selected id no recipient of it has."""
        async with self._pool.acquire() as connection:
            if not await connection.fetchval(Q["notice_exists"], notice_id):
                raise ResendError(404, "not_found", "no such notice")
            messages = await _messages(connection, notice_id)
        _check_known(messages, selected)
        grouped = _by_recipient(messages)
        return {scope: _plan(grouped, scope, selected) for scope in SCOPES}

    async def resend(
        self, notice_id: uuid.UUID, scope: str, selected: frozenset[str], caller: str
    ) -> Resend:
        """Records a resend of ``notice_id``'s messages in ``scope``. Tried again, whole,
        when PostgreSQL picked it to break a deadlock: it locks the notice and then its
        messages, while a tracker recording a late event about one of them locks that
        message and then the notice, to settle it."""
        for _ in range(DEADLOCK_TRIES - 1):
            with contextlib.suppress(asyncpg.DeadlockDetectedError):
                return await self._resend(notice_id, scope, selected, caller)
        return await self._resend(notice_id, scope, selected, caller)  # again: a 503

    async def _resend(
        self, notice_id: uuid.UUID, scope: str, selected: frozenset[str], caller: str
    ) -> Resend:
        async with self._pool.acquire() as connection, connection.transaction():
            notice = await connection.fetchrow(Q["lock_notice"], notice_id)
            if notice is None:
                raise ResendError(404, "not_found", "no such notice")
            refused = refusal(notice["status"])
            if refused is not None:
                raise refused
            messages = await _messages(connection, notice_id)
            _check_known(messages, selected)
            grouped = _by_recipient(messages)
            chosen = _plan(grouped, scope, selected)
            if not chosen.retry:
                detail = "nothing to resend in this scope: every message was delivered"
                if chosen.excluded:
                    detail = "nothing to resend: the recipients left cannot be contacted any more"
                raise ResendError(409, "no_failed_recipients", detail)
            counts = _count(chosen.retry)
            everyone = _count(_plan(grouped, "failed", selected).retry)["recipients"]
            resend_id = uuid.uuid4()
            full = scope == "failed" or counts["recipients"] >= everyone
            await connection.execute(
                Q["insert_resend"],
                resend_id,
                notice_id,
                scope,
                caller,
                counts["recipients"],
                counts["email"],
                counts["sms"],
                full,
                notice["agency_id"],
            )
            retried = [m.delivery_id for m in chosen.retry]
            await connection.execute(DELIVERIES["retire_attempts"], retried)
            await connection.execute(DELIVERIES["add_resend_attempts"], retried, resend_id)
            await add_job_pages(
                connection,
                notice_id,
                resend_id,
                [m.recipient_id for m in chosen.retry],
                released=True,
            )
            await connection.execute(Q["notice_sending_again"], notice_id)
            await connection.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
        return {"resend_id": str(resend_id), **counts, "excluded": _count(chosen.excluded)}

    async def exists(self, notice_id: uuid.UUID) -> bool:
        return bool(await self._pool.fetchval(Q["notice_exists"], notice_id))

    async def history(self, notice_id: uuid.UUID) -> list[ResendRecord]:
        rows = await self._pool.fetch(Q["resend_history"], notice_id)
        return [
            {
                "id": str(row["id"]),
                "created_at": timestamps.iso(row["created_at"]),
                "requested_by": row["requested_by"],
                "scope": row["scope"],
                "recipients": row["recipients"],
                "email": row["email"],
                "sms": row["sms"],
                "full": row["full"],
            }
            for row in rows
        ]


async def _messages(connection: Any, notice_id: uuid.UUID) -> list[Message]:
    rows = await connection.fetch(Q["resend_candidates"], notice_id)
    return [
        Message(
            row["id"],
            row["recipient_id"],
            row["channel"],
            row["status"],
            row["reason"],
            row["name"],
        )
        for row in rows
    ]


def _check_known(messages: list[Message], selected: frozenset[str]) -> None:
    unknown = sorted(selected - {m.recipient_id for m in messages})
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise InvalidRequestError("recipient_ids", f"not recipients of this notice: {shown}")
