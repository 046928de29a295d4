"""Resending what failed, without a new notice: for each scope, how many recipients,
emails and texts would go out (and how many are left out because the recipient cannot
be contacted there any more); the resend itself, as new attempts linked to the ones they
retry; and the history.

Which messages a scope takes is a pure function (:func:`plan`); the store runs it on the
notice's latest attempts with the notice row locked, so two resends at the same moment
never retry the same message twice: the second sees the first's queued attempts.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dispatcher.api import ApiError, answers_errors, json_body, path_id
from dispatcher.auth import Authenticator
from dispatcher.store import OUTBOX_CHANNEL, add_job_pages, iso
from dispatcher.validation import InvalidRequestError
from relaybook import sql
from relaybook.http import error

Q = sql.load("dispatcher")
SCOPES = ("failed", "undelivered", "selected")
DELIVERED = frozenset({"delivered", "opened", "clicked"})
#: a resendable notice; drafts and scheduled ones were never sent
SENT = frozenset({"sent", "partially_failed", "failed"})
MAX_BODY_BYTES = 8 * 1024 * 1024


class ResendError(ApiError):
    """A resend refused (409 ``no_failed_recipients``...)."""


@dataclasses.dataclass(frozen=True)
class Message:
    """A recipient's latest attempt on one channel."""

    delivery_id: uuid.UUID
    recipient_id: str
    channel: str
    status: str
    #: may be contacted there now: an address, a yes, no suppression
    reachable: bool


@dataclasses.dataclass(frozen=True)
class Plan:
    retry: list[Message]
    #: would be retried, but the recipient unsubscribed, was suppressed or lost the address
    excluded: list[Message]

    def counts(self) -> dict[str, Any]:
        return {
            **_count(self.retry),
            "excluded": _count(self.excluded),
        }


def _count(messages: Iterable[Message]) -> dict[str, int]:
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
    by_recipient: dict[str, list[Message]] = defaultdict(list)
    for message in messages:
        by_recipient[message.recipient_id].append(message)
    chosen: list[Message] = []
    for recipient, own in sorted(by_recipient.items()):
        if scope == "undelivered":
            if any(m.status in DELIVERED for m in own):
                continue
            chosen += [m for m in own if m.status in {"failed", "sent"}]
        elif scope == "failed" or recipient in selected:
            chosen += [m for m in own if m.status == "failed"]
    return Plan(
        retry=[m for m in chosen if m.reachable],
        excluded=[m for m in chosen if not m.reachable],
    )


def parse_request(body: Any) -> tuple[str, frozenset[str]]:
    if not isinstance(body, dict):
        raise InvalidRequestError("(body)", "must be a JSON object")
    unknown = sorted(set(body) - {"scope", "recipient_ids"})
    if unknown:
        raise InvalidRequestError(unknown[0], "is not a resend field")
    scope = body.get("scope")
    if scope not in SCOPES:
        raise InvalidRequestError("scope", f"must be one of {', '.join(SCOPES)}")
    ids = body.get("recipient_ids")
    if ids is not None and (
        not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids)
    ):
        raise InvalidRequestError("recipient_ids", "must be a list of recipient ids")
    if scope == "selected" and not ids:
        raise ResendError(422, "no_selection", "scope selected needs recipient_ids")
    if scope != "selected" and ids:
        raise InvalidRequestError("recipient_ids", "only scope selected takes recipient ids")
    return scope, frozenset(ids or ())


class Resends:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def options(self, notice_id: uuid.UUID, selected: frozenset[str]) -> dict[str, Any]:
        """Per scope: the recipients, emails and texts a resend would send now, and those
        left out because they cannot be contacted any more (``excluded``)."""
        async with self._pool.acquire() as connection:
            if not await connection.fetchval(Q["notice_exists"], notice_id):
                raise ResendError(404, "not_found", "no such notice")
            messages = await _messages(connection, notice_id)
        _check_known(messages, selected)
        answer = {scope: plan(messages, scope, selected).counts() for scope in SCOPES}
        answer["selected"]["available"] = bool(selected)
        return answer

    async def resend(
        self, notice_id: uuid.UUID, scope: str, selected: frozenset[str], caller: str
    ) -> dict[str, Any]:
        async with self._pool.acquire() as connection, connection.transaction():
            notice = await connection.fetchrow(Q["lock_notice"], notice_id)
            if notice is None:
                raise ResendError(404, "not_found", "no such notice")
            if notice["status"] in {"draft", "scheduled"}:
                raise ResendError(409, "notice_not_sent", f"the notice is {notice['status']}")
            if notice["status"] not in SENT:
                raise ResendError(
                    409, "notice_sending", "the notice is still being sent; resend once it is done"
                )
            messages = await _messages(connection, notice_id)
            _check_known(messages, selected)
            chosen = plan(messages, scope, selected)
            if not chosen.retry:
                detail = "nothing to resend in this scope: every message was delivered"
                if chosen.excluded:
                    detail = "nothing to resend: the recipients left cannot be contacted any more"
                raise ResendError(409, "no_failed_recipients", detail)
            counts = _count(chosen.retry)
            everyone = _count(plan(messages, "failed").retry)["recipients"]
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
            )
            retried = [m.delivery_id for m in chosen.retry]
            await connection.execute(Q["retire_attempts"], retried)
            await connection.execute(Q["insert_attempts"], retried, resend_id)
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

    async def history(self, notice_id: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(Q["resend_history"], notice_id)
        return [
            {
                "id": str(row["id"]),
                "created_at": iso(row["created_at"]),
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
        Message(row["id"], row["recipient_id"], row["channel"], row["status"], row["reachable"])
        for row in rows
    ]


def _check_known(messages: list[Message], selected: frozenset[str]) -> None:
    unknown = sorted(selected - {m.recipient_id for m in messages})
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise InvalidRequestError("recipient_ids", f"not recipients of this notice: {shown}")


def routes(resends: Resends, auth: Authenticator) -> list[Route]:
    @answers_errors
    async def options(request: Request) -> Response:
        await auth.caller(request, "journal:read", "notices:write")
        raw = request.query_params.get("recipient_ids", "")
        selected = frozenset(part.strip() for part in raw.split(",") if part.strip())
        return JSONResponse(
            await resends.options(path_id(request, "notice_id", "notice"), selected)
        )

    @answers_errors
    async def create(request: Request) -> Response:
        caller = await auth.caller(request, "notices:write")
        target = path_id(request, "notice_id", "notice")
        _, body = await json_body(request, MAX_BODY_BYTES)
        scope, selected = parse_request(body)
        answer = await resends.resend(target, scope, selected, caller.name)
        return JSONResponse(answer, 202)

    @answers_errors
    async def history(request: Request) -> Response:
        await auth.caller(request, "journal:read", "notices:write")
        target = path_id(request, "notice_id", "notice")
        items = await resends.history(target)
        if not items and not await resends.exists(target):
            return error(404, "not_found", "no such notice")
        return JSONResponse({"items": items})

    return [
        Route("/v1/notices/{notice_id}/resend-options", options, methods=["GET"]),
        Route("/v1/notices/{notice_id}/resends", create, methods=["POST"]),
        Route("/v1/notices/{notice_id}/resends", history, methods=["GET"]),
    ]
