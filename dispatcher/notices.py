"""The notice routes: thin endpoints that call the store (:mod:`relaybook.notices`) and
answer."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Literal

import msgspec
from starlette.responses import Response

from dispatcher.api import Answer, Call, NoticePath, Operation, answer
from relaybook.notices.answers import Notice, NoticesPage, Preview
from relaybook.notices.listing import NoticesQuery, list_statement
from relaybook.notices.request import NoticeBody, parse_notice
from relaybook.notices.store import IdempotencyConflictError, NoticeStore, request_hash, summarize
from relaybook.platform.answers import RefusedError, not_found
from relaybook.platform.decoding import Id, InvalidRequestError
from relaybook.platform.paging import encode_cursor

#: a 100,000-recipient notice with long names and addresses stays well under this
MAX_BODY_BYTES = 32 * 1024 * 1024


class NoticeHeaders(msgspec.Struct, forbid_unknown_fields=True):
    #: the same key and body answers the first answer again; another body under the same
    #: key is 409 ``idempotency_key_reused``
    idempotency_key: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")] | None
    ) = msgspec.field(default=None, name="Idempotency-Key")


class PreviewQuery(msgspec.Struct, forbid_unknown_fields=True):
    #: the recipient whose messages are shown
    recipient: Id
    #: one channel only; by default every channel the recipient has a message on
    channel: Literal["email", "sms"] | None = None


def operations(store: NoticeStore) -> list[Operation]:
    async def listing(call: Call) -> Response:
        statement, values = list_statement(call.query)
        rows = await store.page(statement, values)
        limit = call.query.limit
        last = rows[limit - 1] if len(rows) > limit else None
        page: NoticesPage = {
            "items": [summarize(row) for row in rows[:limit]],
            "next_cursor": (
                encode_cursor(last["created_at"].isoformat(), str(last["id"])) if last else None
            ),
        }
        return answer(page)

    async def create(call: Call) -> Response:
        notice = parse_notice(call.body, dt.datetime.now(dt.UTC))
        agency = notice.agency or call.caller.sole_agency or store.default_agency
        if not call.caller.sees(agency):
            raise InvalidRequestError("agency", "is not one of the agencies this caller serves")
        notice = dataclasses.replace(notice, agency=agency)
        key = call.headers.idempotency_key
        try:
            status, created = await store.create(
                notice, call.caller.name, (key, request_hash(call.raw)) if key else None
            )
        except IdempotencyConflictError:
            raise RefusedError(
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
            raise RefusedError(409, "already_sent", f"the notice is {found['status']} already")
        return answer(await store.get(notice_id), 202)

    async def preview(call: Call) -> Response:
        shown = await store.preview(call.path.notice_id, call.query.recipient, call.query.channel)
        if shown is None:
            raise not_found("notice with a message for this recipient")
        return answer(shown)

    missing = Answer(404, "no such notice", codes=("not_found",))
    return [
        Operation(
            "GET",
            "/v1/notices",
            "The notices list, newest first, filtered and paged",
            listing,
            scopes=("journal:read", "notices:write"),
            answers=(Answer(200, "one page of notices", NoticesPage),),
            query=NoticesQuery,
            tag="notices",
        ),
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
            "GET",
            "/v1/notices/{notice_id}/preview",
            "One recipient's messages as they get them: rendered, in their language",
            preview,
            scopes=("journal:read", "notices:write"),
            answers=(
                Answer(200, "the recipient's message on each channel", Preview),
                Answer(
                    404, "no such notice, or none of its messages is theirs", codes=("not_found",)
                ),
                Answer(
                    422,
                    "the content cannot be rendered for this recipient",
                    codes=("template_error",),
                ),
            ),
            path_params=NoticePath,
            query=PreviewQuery,
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
