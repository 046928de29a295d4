"""Keyset paging shared by the lists: opaque cursors (what the last row of a page was)
and the ``limit`` parameter."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Annotated

import msgspec

from relaybook.platform.decoding import InvalidRequestError, Moment, convert, in_utc
from relaybook.platform.storable import has_unstorable

DEFAULT_LIMIT, MAX_LIMIT = 100, 500
#: rows per page
Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
#: the ``next_cursor`` of the page before
Cursor = Annotated[str, msgspec.Meta(max_length=2000)]


def encode_cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def decode_cursor(raw: str, size: int) -> list[str]:
    """The ``size`` texts ``raw`` holds; a 422 about ``cursor`` when it is not a cursor
    this API gave out."""
    try:
        parts = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidRequestError("cursor", "is not a cursor this API gave out") from None
    if (
        not isinstance(parts, list)
        or len(parts) != size
        or not all(isinstance(p, str) and not has_unstorable(p) for p in parts)
    ):
        raise InvalidRequestError("cursor", "is not a cursor this API gave out")
    return parts


def cursor_moment(raw: str) -> dt.datetime:
    """A date-time a cursor holds, in UTC."""
    try:
        moment = convert(raw, Moment)
    except InvalidRequestError:
        raise InvalidRequestError("cursor", "is not a cursor this API gave out") from None
    return in_utc("cursor", moment)
