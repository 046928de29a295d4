"""What a request is answered with, whoever serves it: the formats its JSON writes a
date-time and a uuid in, and a refusal.

A service refuses a request for a reason of its own by raising :class:`RefusedError`
(a status, a snake_case code, a detail for people); the API answers it as
:class:`ErrorAnswer` (``{"error": code, "detail": ...}`` with that status), the console
as a page saying why.
"""

from __future__ import annotations

from typing import Annotated, NotRequired, TypedDict

import msgspec

#: a date-time as the API writes it (RFC 3339, UTC, ``Z``)
Timestamp = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
Uuid = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uuid"})]


class ErrorAnswer(TypedDict):
    """Every refusal: a snake_case ``error`` code, a ``detail`` for people, and for a 422
    about one field, that ``field`` (``recipients[3].email``)."""

    error: str
    detail: str
    field: NotRequired[str]


class RefusedError(Exception):
    """A request refused for a reason of its own: ``status`` and ``code`` make the
    contract's error answer (409 ``already_sent``, 404 ``not_found``...)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code


def not_found(what: str) -> RefusedError:
    return RefusedError(404, "not_found", f"no such {what}")
