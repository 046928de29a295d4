"""The notices list: what picks notices (:data:`LIST_FILTERS`), and the statement of one
page of it, newest first, paged by keyset."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec

from relaybook.notices.answers import NoticeStatus
from relaybook.notices.store import Q
from relaybook.platform.decoding import Id, InvalidRequestError, Moment, in_utc
from relaybook.platform.paging import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    cursor_moment,
    decode_cursor,
)


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
