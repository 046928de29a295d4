"""The notice routes: thin endpoints that call the store and answer."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec
from starlette.responses import Response

from dispatcher.answers import Notice, NoticesPage, NoticeStatus
from dispatcher.api import Answer, ApiError, Call, NoticePath, Operation, answer
from dispatcher.store import IdempotencyConflictError, NoticeStore, Q, request_hash, summarize
from dispatcher.validation import NoticeBody, parse_notice
from relaybook.platform.answers import not_found
from relaybook.platform.decoding import Id, InvalidRequestError, Moment, in_utc
from relaybook.platform.paging import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    cursor_moment,
    decode_cursor,
    encode_cursor,
)

#: a 100,000-recipient notice with long names and addresses stays well under this
MAX_BODY_BYTES = 32 * 1024 * 1024


class NoticeHeaders(msgspec.Struct, forbid_unknown_fields=True):
    #: the same key and body answers the first answer again; another body under the same
    #: key is 409 ``idempotency_key_reused``
    idempotency_key: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")] | None
    ) = msgspec.field(default=None, name="Idempotency-Key")


class NoticeFilters(msgspec.Struct, forbid_unknown_fields=True):
    """What picks notices (LIST_FILTERS), and a page of them: every filter given must
    hold; ``since`` and ``until`` are on when the notice was created."""

    source_service: Id | None = None
    source_kind: Id | None = None
    source_reference: Id | None = None
    agency: Id | None = None
    property: Id | None = None
    since: Moment | None = None
    until: Moment | None = None
    cursor: Cursor | None = None
    limit: Limit = DEFAULT_LIMIT


class NoticesQuery(NoticeFilters, forbid_unknown_fields=True):
    """``GET /v1/notices``: the filters, and ``status`` (may repeat: any of them)."""

    status: list[NoticeStatus] | None = None


#: filter -> its SQL condition on the notices list
LIST_FILTERS = {
    "status": "n.status = ANY(${}::text[])",
    "source_service": "n.source_service = ${}",
    "source_kind": "n.source_kind = ${}",
    "source_reference": "n.source_reference = ${}",
    "agency": "n.agency_id = ${}",
    "property": "n.property_id = ${}",
    "since": "n.created_at >= ${}",
    "until": "n.created_at < ${}",
}


def list_statement(query: NoticesQuery) -> tuple[str, list[Any]]:
    """The statement of one page of the notices list (one row more than the page, to
    tell whether another follows) and its values."""
    conditions, values = ["true"], []
    for name, condition in LIST_FILTERS.items():
        value = getattr(query, name)
        if value is None:
            continue
        values.append(in_utc(name, value) if isinstance(value, dt.datetime) else value)
        conditions.append(condition.format(len(values)))
    if query.cursor is not None:
        created, notice_id = decode_cursor(query.cursor, 2)
        try:
            values += [cursor_moment(created), uuid.UUID(notice_id)]
        except ValueError:
            raise InvalidRequestError("cursor", "is not a cursor this API gave out") from None
        conditions.append(f"(n.created_at, n.id) < (${len(values) - 1}, ${len(values)})")
    return Q["notices"].format(where=" AND ".join(conditions), limit=query.limit + 1), values


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
