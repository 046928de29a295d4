"""The notice routes: thin handlers that authenticate, parse, call the store and answer."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dispatcher.api import answers_errors, json_body, path_id
from dispatcher.auth import Authenticator
from dispatcher.store import IdempotencyConflictError, NoticeStore, request_hash
from dispatcher.validation import InvalidRequestError, parse_notice
from relaybook.http import error

#: a 100,000-recipient notice with long names and addresses stays well under this
MAX_BODY_BYTES = 32 * 1024 * 1024


def routes(store: NoticeStore, auth: Authenticator) -> list[Route]:
    @answers_errors
    async def create(request: Request) -> Response:
        caller = await auth.caller(request, "notices:write")
        raw, body = await json_body(request, MAX_BODY_BYTES)
        notice = parse_notice(body, dt.datetime.now(dt.UTC))
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 200:
            raise InvalidRequestError("Idempotency-Key", "must be 1 to 200 characters")
        try:
            status, answer = await store.create(
                notice, caller.name, (key, request_hash(raw)) if key else None
            )
        except IdempotencyConflictError:
            return error(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request body",
            )
        return JSONResponse(answer, status)

    @answers_errors
    async def get(request: Request) -> Response:
        await auth.caller(request, "journal:read", "notices:write")
        answer = await store.get(path_id(request, "notice_id", "notice"))
        if answer is None:
            return error(404, "not_found", "no such notice")
        return JSONResponse(answer)

    @answers_errors
    async def send(request: Request) -> Response:
        await auth.caller(request, "notices:write")
        notice_id = path_id(request, "notice_id", "notice")
        answer = await store.get(notice_id)
        if answer is None:
            return error(404, "not_found", "no such notice")
        if not await store.release(notice_id):
            return error(409, "already_sent", f"the notice is {answer['status']} already")
        return JSONResponse(await store.get(notice_id), 202)

    return [
        Route("/v1/notices", create, methods=["POST"]),
        Route("/v1/notices/{notice_id}", get, methods=["GET"]),
        Route("/v1/notices/{notice_id}/send", send, methods=["POST"]),
    ]
