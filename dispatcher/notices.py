"""The notice routes: thin endpoints that call the store and answer."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from starlette.responses import Response

from dispatcher.answers import Notice
from dispatcher.api import Answer, ApiError, Call, NoticePath, Operation, answer, not_found
from dispatcher.store import IdempotencyConflictError, NoticeStore, request_hash
from dispatcher.validation import NoticeBody, parse_notice

#: a 100,000-recipient notice with long names and addresses stays well under this
MAX_BODY_BYTES = 32 * 1024 * 1024


class NoticeHeaders(msgspec.Struct, forbid_unknown_fields=True):
    #: the same key and body answers the first answer again; another body under the same
    #: key is 409 ``idempotency_key_reused``
    idempotency_key: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")] | None
    ) = msgspec.field(default=None, name="Idempotency-Key")


def operations(store: NoticeStore) -> list[Operation]:
    async def create(call: Call) -> Response:
        notice = parse_notice(call.body, dt.datetime.now(dt.UTC))
        key = call.headers.idempotency_key
        try:
            status, created = await store.create(
                notice, call.caller.name, (key, request_hash(call.raw)) if key else None
            )
        except IdempotencyConflictError:
            raise ApiError(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request body",
            ) from None
        return answer(created, status)

    async def get(call: Call) -> Response:
        found = await store.get(call.path.notice_id)
        if found is None:
            raise not_found("notice")
        return answer(found)

    async def send(call: Call) -> Response:
        notice_id = call.path.notice_id
        found = await store.get(notice_id)
        if found is None:
            raise not_found("notice")
        if not await store.release(notice_id):
            raise ApiError(409, "already_sent", f"the notice is {found['status']} already")
        return answer(await store.get(notice_id), 202)

    missing = Answer(404, "no such notice", codes=("not_found",))
    return [
        Operation(
            "POST",
            "/v1/notices",
            "Publish a notice: a draft, scheduled at send_at, or sent now",
            create,
            scopes=("notices:write",),
            answers=(
                Answer(201, "the notice, with its fan-out's statistics", Notice),
                Answer(
                    409,
                    "the Idempotency-Key was used with another body",
                    codes=("idempotency_key_reused",),
                ),
            ),
            headers=NoticeHeaders,
            body=NoticeBody,
            max_body=MAX_BODY_BYTES,
            tag="notices",
        ),
        Operation(
            "GET",
            "/v1/notices/{notice_id}",
            "A notice with its status and per-channel statistics",
            get,
            scopes=("journal:read", "notices:write"),
            answers=(Answer(200, "the notice", Notice), missing),
            path_params=NoticePath,
            missing="notice",
            tag="notices",
        ),
        Operation(
            "POST",
            "/v1/notices/{notice_id}/send",
            "Send a draft or scheduled notice now",
            send,
            scopes=("notices:write",),
            answers=(
                Answer(202, "the notice, sending", Notice),
                missing,
                Answer(409, "the notice was sent already", codes=("already_sent",)),
            ),
            path_params=NoticePath,
            missing="notice",
            tag="notices",
        ),
    ]
