"""The owners a notice reached on no channel, and why on each: the agency sends them the
notice by post, from this list or its CSV.

"Reached on no channel" is read off the rows the notice's statistics count: each
recipient's latest attempt per channel (``is_latest``: a resend's attempt replaces the
one it retried). Unreachable means every one of them failed or was skipped; a message
still queued, or sent with no outcome yet, may still arrive. The query is
``console/journal.sql``'s, on the API's scoped pool; its notice filters are the notices
list's own (:data:`relaybook.notices.listing.LIST_FILTERS`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from typing import Any

import msgspec
from starlette.responses import Response
from starlette.routing import BaseRoute

from console.i18n import N_
from console.journal import (
    CHOICES,
    FILTERS,
    Q,
    cell_text,
    checked,
    csv_download,
    decode_filters,
    given,
    link,
    local_time,
    why,
)
from console.web import Console, View
from relaybook.access.scope import ScopedPool
from relaybook.journal.reader import CHANNELS
from relaybook.notices.listing import LIST_FILTERS, NoticeFilters
from relaybook.platform.decoding import InvalidRequestError, in_utc
from relaybook.platform.paging import (
    MAX_LIMIT,
    cursor_moment,
    decode_cursor,
    encode_cursor,
)

#: the CSV's columns: the notice's date, these (field -> header), and per channel its own
TEXTS = {
    "notice_id": N_("Notice id"),
    "title": N_("Notice title"),
    "source_service": N_("Source service"),
    "source_kind": "Kind",
    "source_reference": "Reference",
    "property_id": "Property",
    "recipient_id": N_("Recipient id"),
    "name": N_("Recipient name"),
    "properties": "Properties",
}
PER_CHANNEL = {
    "status": N_("{channel} status"),
    "reason": N_("{channel} reason"),
    "provider_code": N_("{channel} provider code"),
}


class UnreachableQuery(NoticeFilters, forbid_unknown_fields=True):
    """``/ui/unreachable``: one notice, or the notices ``GET /v1/notices`` filters on."""

    notice_id: uuid.UUID | None = None


#: the form's filters, in its order
SHOWN = ("notice_id", "source_service", "source_kind", "source_reference", "property",
         "since", "until", "agency", "limit")  # fmt: skip


def statement(query: UnreachableQuery) -> tuple[str, list[Any]]:
    """The statement of one page (one row more than the page, to tell whether another
    follows) and its values."""
    conditions, values = ["true"], []
    for name, condition in LIST_FILTERS.items():
        value = getattr(query, name, None)  # the list's status is not one of ours
        if value is None:
            continue
        values.append(in_utc(name, value) if isinstance(value, dt.datetime) else value)
        conditions.append(condition.format(len(values)))
    if query.notice_id is not None:
        values.append(query.notice_id)
        conditions.append(f"n.id = ${len(values)}")
    after = "''"
    if query.cursor is not None:
        created, notice, recipient = decode_cursor(query.cursor, 3)
        try:
            values += [cursor_moment(created), uuid.UUID(notice), recipient]
        except ValueError:
            raise InvalidRequestError("cursor", "is not a cursor this API gave out") from None
        at, notice_at, recipient_at = len(values) - 2, len(values) - 1, len(values)
        # the rest of the cursor's notice, then the notices before it
        conditions.append(f"(n.created_at, n.id) <= (${at}, ${notice_at})")
        after = f"CASE WHEN n.id = ${notice_at} THEN ${recipient_at}::text ELSE '' END"
    text = Q["unreachable"].format(
        where=" AND ".join(conditions), after=after, limit=query.limit + 1
    )
    return text, values


async def page(
    pool: ScopedPool, query: UnreachableQuery
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of unreachable owners, each with its channels' latest attempts
    (``channels``: channel -> status, reason, provider code, delivery id), and the next
    page's cursor."""
    text, values = statement(query)
    rows = await pool.fetch(text, *values)
    limit = query.limit
    last = rows[limit - 1] if len(rows) > limit else None
    cursor = None
    if last is not None:
        moment, notice = last["notice_created_at"].isoformat(), str(last["notice_id"])
        cursor = encode_cursor(moment, notice, last["recipient_id"])
    return [{**row, "channels": json.loads(row["channels"])} for row in rows[:limit]], cursor


def routes(console: Console, scoped: ScopedPool) -> list[BaseRoute]:
    async def listing(view: View) -> Response:
        params = given(view)
        with checked(view):
            rows, cursor = await page(scoped, decode_filters(view, params, UnreachableQuery))
        shown = {name: value for name, value in params.items() if name != "cursor"}
        return view.render(
            "unreachable.html", rows=rows, form=shown, here="/ui/unreachable", filters=SHOWN,
            labels=FILTERS,
            choices=CHOICES, why=functools.partial(why, view),
            when=lambda moment: view.when(moment, short=True),
            first=link("/ui/unreachable", shown) if "cursor" in params else None,
            next=link("/ui/unreachable", shown, cursor=cursor) if cursor else None,
            export=link("/ui/unreachable.csv", shown),
        )  # fmt: skip

    async def export(view: View) -> Response:
        query = decode_filters(view, given(view), UnreachableQuery)
        query = msgspec.structs.replace(query, cursor=None, limit=MAX_LIMIT)
        zone = view.session.time_zone
        date = view.t("Notice date")
        header = [f"{date} ({zone})"]
        header += [view.t(label) for label in TEXTS.values()]
        for channel in map(view.t, CHANNELS):
            header += [view.t(label, channel=channel) for label in PER_CHANNEL.values()]

        async def rows(cursor: str | None) -> tuple[list[list[object]], str | None]:
            found, after = await page(scoped, msgspec.structs.replace(query, cursor=cursor))
            lines: list[list[object]] = []
            for row in found:
                line: list[object] = [local_time(row["notice_created_at"], zone)]
                line += [cell_text(view, name, row) for name in TEXTS]
                for channel in CHANNELS:
                    got = row["channels"].get(channel, {})
                    line += [cell_text(view, name, got) for name in PER_CHANNEL]
                lines.append(line)
            return lines, after

        with checked(view):
            first = await rows(None)
        return csv_download("unreachable.csv", view.caller, header, first, rows)

    return [
        console.page("/ui/unreachable", listing),
        console.page("/ui/unreachable.csv", export),
    ]
