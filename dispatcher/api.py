"""The dispatcher's route registry. Each :class:`Operation` declares its method, path,
scopes, and the types of its path parameters, query, headers, body and answers; the same
declaration mounts the route (authenticating, then decoding the request into those types
before the endpoint runs) and describes it in ``/openapi.json`` (``dispatcher.openapi``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relaybook.access import scope
from relaybook.access.auth import Authenticator, Caller, ForbiddenError, UnauthorizedError
from relaybook.platform.answers import RefusedError, not_found
from relaybook.platform.decoding import (
    InvalidRequestError,
    decode_body,
    decode_path,
    decode_query,
)
from relaybook.platform.http import PayloadTooLargeError, error, read_body
from relaybook.platform.storable import has_unstorable


@dataclasses.dataclass(frozen=True)
class Call:
    """A request as its endpoint gets it: authenticated and decoded into the operation's
    declared types (``None`` where it declares none)."""

    request: Request
    caller: Caller
    path: Any
    query: Any
    headers: Any
    body: Any
    #: the body's bytes as received (what an Idempotency-Key's request hash is of)
    raw: bytes


Endpoint = Callable[[Call], Awaitable[Response]]


@dataclasses.dataclass(frozen=True)
class Answer:
    """One documented answer: ``kind`` types a success's body; an error's body is the
    contract's error with one of ``codes``."""

    status: int
    description: str
    kind: Any = None
    codes: tuple[str, ...] = ()
    #: headers a success sets (name -> description)
    headers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    endpoint: Endpoint
    #: the caller needs one of these scopes
    scopes: tuple[str, ...]
    #: the success, and the errors particular to this call (404, 409...)
    answers: tuple[Answer, ...]
    path_params: type[Any] | None = None
    #: what a path naming nothing that can exist is a 404 about ("notice")
    missing: str = ""
    query: type[Any] | None = None
    headers: type[Any] | None = None
    body: type[Any] | None = None
    max_body: int = 0
    tag: str = ""

    def errors(self) -> list[Answer]:
        """Every error answer this call may give, the shared ones included."""
        shared = [
            Answer(401, "no token, or one that is not valid", codes=("unauthorized",)),
            Answer(403, "the token lacks the scope this call needs", codes=("forbidden",)),
            Answer(422, "a malformed request: `field` names what is at fault",
                   codes=("invalid_request",)),
            Answer(503, "PostgreSQL or Kafka is unavailable: retry after `Retry-After` seconds",
                   codes=("unavailable",)),
        ]  # fmt: skip
        if self.body is not None:
            shared.append(
                Answer(413, f"the body is over {self.max_body} bytes", codes=("payload_too_large",))
            )
        own = [answer for answer in self.answers if answer.status >= 400]
        merged: dict[int, Answer] = {}
        for one in [*shared, *own]:
            first = merged.get(one.status)
            merged[one.status] = (
                one
                if first is None
                else dataclasses.replace(
                    first,
                    description=f"{first.description}; {one.description}",
                    codes=(*first.codes, *one.codes),
                )
            )
        return [merged[status] for status in sorted(merged)]


def answer(body: Any, status: int = 200) -> Response:
    """An endpoint's JSON answer (encoded by msgspec, which writes typed dicts as fast as
    plain ones)."""
    return Response(msgspec.json.encode(body), status, media_type="application/json")


def mount(operations: Iterable[Operation], auth: Authenticator) -> list[Route]:
    """The routes serving ``operations``."""
    return [
        Route(op.path, _serve(op, auth), methods=[op.method], name=f"{op.method} {op.path}")
        for op in operations
    ]


def _serve(op: Operation, auth: Authenticator) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        try:
            caller = await auth.caller(request, *op.scopes)
            with scope.serving(caller):
                return await _call(op, request, caller)
        except UnauthorizedError as problem:
            return error(401, "unauthorized", str(problem), {"WWW-Authenticate": "Bearer"})
        except ForbiddenError as problem:
            return error(403, "forbidden", str(problem))
        except PayloadTooLargeError as problem:
            return error(413, "payload_too_large", str(problem))
        except InvalidRequestError as problem:
            return JSONResponse(
                {"error": "invalid_request", "detail": str(problem), "field": problem.field}, 422
            )
        except RefusedError as problem:
            return error(problem.status, problem.code, str(problem))

    return serve


async def _call(op: Operation, request: Request, caller: Caller) -> Response:
    """The request decoded into the operation's types, handed to its endpoint."""
    path = _path(request, op)
    query = decode_query(request.query_params.multi_items(), op.query or _NoParameters)
    headers = None
    if op.headers is not None:
        names = {f.encode_name.lower(): f.encode_name for f in msgspec.structs.fields(op.headers)}
        headers = decode_query(
            [(names[k], v) for k, v in request.headers.items() if k in names], op.headers
        )
    raw, body = b"", None
    if op.body is not None:
        raw = await read_body(request, op.max_body)
        body = decode_body(raw, op.body)
    return await op.endpoint(Call(request, caller, path, query, headers, body, raw))


class _NoParameters(msgspec.Struct, forbid_unknown_fields=True):
    """A call that takes no query parameter refuses any."""


def _path(request: Request, op: Operation) -> Any:
    if op.path_params is None:
        return None
    params: dict[str, str] = request.path_params
    try:
        return decode_path(params, op.path_params)
    except InvalidRequestError:
        if any(has_unstorable(value) for value in params.values()):
            raise
        # no row can have such an id
        raise not_found(op.missing) from None


class NoticePath(msgspec.Struct):
    notice_id: uuid.UUID
