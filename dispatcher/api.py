"""What every dispatcher route shares: the contract's error answers for the exceptions
the core raises, and reading a JSON body with a size limit."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dispatcher.auth import ForbiddenError, UnauthorizedError
from dispatcher.validation import InvalidRequestError
from relaybook.http import PayloadTooLargeError, error, read_body

Handler = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    """A request refused for a reason of its own: ``status`` and ``code`` make the
    contract's error answer (409 ``already_sent``, 404 ``not_found``...)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code


def answers_errors(handler: Handler) -> Handler:
    """Turns the core's exceptions into the contract's answers: 401, 403, 413, 422 with
    the field at fault, or the :class:`ApiError`'s own."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
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
        except ApiError as problem:
            return error(problem.status, problem.code, str(problem))

    return wrapped


async def json_body(request: Request, limit: int) -> tuple[bytes, Any]:
    """The body as received and parsed; 413 over ``limit`` bytes, 422 if not JSON."""
    raw = await read_body(request, limit)
    try:
        return raw, orjson.loads(raw)
    except ValueError:
        raise InvalidRequestError("(body)", "is not valid JSON") from None


def path_id(request: Request, name: str, what: str) -> uuid.UUID:
    """The UUID path parameter ``name``; a 404 ``no such <what>`` when it is not one (no
    such row can exist)."""
    try:
        return uuid.UUID(request.path_params[name])
    except ValueError:
        raise ApiError(404, "not_found", f"no such {what}") from None
