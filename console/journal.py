"""The console's log book ("Communication > Journal de bord"): every message, the same
per source (one deposit call, one letter), one message with its timeline, and the list
as CSV.

The journal is :meth:`JournalReader.page` over a :class:`JournalQuery` decoded from the
page's query string as ``GET /v1/journal`` decodes it: a filter means one thing in both
and is refused for the same reasons (here with a 400 page naming it). The helpers below
the routes serve every list of the log book (the unreachable owners' too): filters from
a GET form, keyset links, reasons as a person reads them, and streamed CSV.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, unquote_to_bytes, urlencode
from zoneinfo import ZoneInfo

import msgspec
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from console.i18n import N_
from console.web import Console, PageError, View, not_found
from relaybook.access import scope
from relaybook.access.auth import Caller
from relaybook.access.scope import ScopedPool
from relaybook.journal.reader import CHANNELS, STATUSES, JournalQuery, JournalReader
from relaybook.platform import spreadsheet, sql
from relaybook.platform.decoding import InvalidRequestError, decode_query
from relaybook.platform.paging import MAX_LIMIT

Q = sql.load("console", "journal.sql")
T = TypeVar("T")

#: every filter of the log book's lists, as their forms label them
FILTERS = {
    "source_service": N_("Source service"),
    "source_kind": "Kind",
    "source_reference": "Reference",
    "property": "Property",
    "recipient_id": N_("Recipient id"),
    "notice_id": N_("Notice id"),
    "channel": "Channel",
    "status": "Status",
    "since": "Since",
    "until": "Until",
    "agency": "Agency",
    "cursor": "Page",
    "limit": N_("Rows per page"),
}
#: the filters chosen from a list
CHOICES = {"channel": CHANNELS, "status": STATUSES}
#: the providers' events a message's timeline names (message.html shows each by its type)
EVENTS = (
    N_("accepted"), N_("processed"), N_("deferred"), N_("bounced"), N_("dropped"),
    N_("spam_reported"), N_("unsubscribed"), N_("undelivered"),
)  # fmt: skip
SOURCE = ("source_service", "source_kind", "source_reference")
#: the journal's CSV columns (field -> header): its times, in the person's time zone...
TIMES = {
    "created_at": "Date",
    "sent_at": "Sent at",
    "delivered_at": "Delivered at",
    "opened_at": "Opened at",
    "clicked_at": "Clicked at",
    "failed_at": "Failed at",
}
#: ...then the rest
TEXTS = {
    "recipient_id": N_("Recipient id"),
    "name": N_("Recipient name"),
    "channel": "Channel",
    "status": "Status",
    "reason": "Reason",
    "provider_code": "Provider code",
    "source_service": N_("Source service"),
    "source_kind": "Kind",
    "source_reference": "Reference",
    "notice_id": N_("Notice id"),
    "title": N_("Notice title"),
    "attempt": "Attempt",
    "delivery_id": "Message",
}
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_SOURCES = "/ui/journal/sources/"
_UNLABELLED = dict.fromkeys(("title", "source_service", "source_kind", "source_reference", "name"))


async def labels(pool: ScopedPool, items: list[Any]) -> list[dict[str, Any]]:
    """Journal rows with their notice's title and source and their recipient's name."""
    found = await pool.fetch(Q["journal_labels"], [uuid.UUID(i["delivery_id"]) for i in items])
    by_id = {str(row["id"]): dict(row) for row in found}
    return [{**item, **by_id.get(item["delivery_id"], _UNLABELLED)} for item in items]


def routes(console: Console, scoped: ScopedPool, reader: JournalReader) -> list[BaseRoute]:
    async def journal(view: View) -> Response:
        return await _journal(view, scoped, reader, {})

    async def source_journal(view: View) -> Response:
        return await _journal(view, scoped, reader, _source_of(view))

    async def journal_csv(view: View) -> Response:
        query = decode_filters(view, given(view), JournalQuery)
        query = msgspec.structs.replace(query, cursor=None, limit=MAX_LIMIT)
        zone = view.session.time_zone
        header = [f"{view.t(label)} ({zone})" for label in TIMES.values()]
        header += [view.t(label) for label in TEXTS.values()]

        async def rows(cursor: str | None) -> tuple[list[list[object]], str | None]:
            page = await reader.page(msgspec.structs.replace(query, cursor=cursor))
            lines = [
                [local_time(item[name], zone) for name in TIMES]
                + [cell_text(view, name, item) for name in TEXTS]
                for item in await labels(scoped, page["items"])
            ]
            return lines, page["next_cursor"]

        with checked(view):
            first = await rows(None)
        return csv_download("journal.csv", view.caller, header, first, rows)

    async def message(view: View) -> Response:
        try:
            delivery_id = uuid.UUID(view.request.path_params["delivery_id"])
        except ValueError:
            raise not_found() from None
        found = await reader.delivery(delivery_id)
        if found is None:
            raise not_found()
        (labelled,) = await labels(scoped, [found])
        events = [{**event, "at": _moment(event.get("occurred_at"))} for event in found["events"]]
        return view.render(
            "message.html", message=labelled, events=events, why=functools.partial(why, view),
            when=lambda text: view.when(_moment(text)), source_path=_source_path(labelled),
        )  # fmt: skip

    return [
        console.page("/ui/journal", journal),
        console.page("/ui/journal.csv", journal_csv),
        console.page(_SOURCES + "{source:path}", source_journal),
        console.page("/ui/messages/{delivery_id}", message),
    ]


async def _journal(
    view: View, scoped: ScopedPool, reader: JournalReader, source: dict[str, str]
) -> Response:
    """The journal page, of one ``source`` (its fields fixed by the path) or of all."""
    params = given(view) | source
    with checked(view):
        page = await reader.page(decode_filters(view, params, JournalQuery))
    rows = await labels(scoped, page["items"])
    path = _source_path(source) if source else "/ui/journal"
    shown = {name: value for name, value in params.items() if name not in {"cursor", *source}}
    cursor = page["next_cursor"]
    return view.render(
        "journal.html", rows=rows, form=shown, here=path,
        source=[source[f] for f in SOURCE if f in source],
        filters=[name for name in FILTERS if name not in {"cursor", *source}],
        labels=FILTERS, choices=CHOICES, why=functools.partial(why, view),
        when=lambda text, short=True: view.when(_moment(text), short=short),
        source_path=_source_path,
        first=link(path, shown) if "cursor" in params else None,
        next=link(path, shown, cursor=cursor) if cursor else None,
        export=link("/ui/journal.csv", {**source, **shown}),
    )  # fmt: skip


def _source_of(view: View) -> dict[str, str]:
    """The source named by the path: a service, and maybe its kind and reference, each
    one segment (a ``/`` inside one is written ``%2F``, so the raw path is split)."""
    raw = view.request.scope.get("raw_path") or quote(view.request.url.path).encode()
    segments = raw.removeprefix(_SOURCES.encode()).split(b"/")
    if not 1 <= len(segments) <= len(SOURCE) or not all(segments):
        raise not_found()
    try:
        parts = [unquote_to_bytes(segment).decode() for segment in segments]
    except UnicodeDecodeError:
        raise not_found() from None
    return dict(zip(SOURCE, parts, strict=False))


def _source_path(source: Mapping[str, Any]) -> str:
    """The journal of a source (a message's: its notice's), or of its first fields."""
    return _SOURCES + "/".join(quote(source[field], safe="") for field in SOURCE if field in source)


# --- what every list of the log book shares


def given(view: View) -> dict[str, str]:
    """The query string's filters that have a value (a form sends its empty fields too);
    a parameter named twice keeps its last value, as the API's query does."""
    pairs = view.request.query_params.multi_items()
    return {name: value.strip() for name, value in pairs if value.strip()}


def decode_filters(view: View, params: Mapping[str, str], kind: type[T]) -> T:
    """``params`` decoded as the API decodes its query (a 400 page naming the filter at
    fault); a day alone, as the form's date fields give it, is that day in the person's
    time zone, ``until`` it included."""
    values = dict(params)
    with checked(view):
        for name in ("since", "until"):
            if _DAY.fullmatch(values.get(name, "")):
                values[name] = _day(name, values[name], view.session.time_zone)
        return decode_query(values.items(), kind)


def _day(name: str, text: str, zone: str) -> str:
    try:
        day = dt.date.fromisoformat(text) + dt.timedelta(days=name == "until")
    except (ValueError, OverflowError):
        raise InvalidRequestError(name, N_("is not a date")) from None
    return dt.datetime.combine(day, dt.time(), ZoneInfo(zone)).isoformat()


@contextlib.contextmanager
def checked(view: View) -> Iterator[None]:
    """A filter the API would refuse with a 422 is a 400 page naming it."""
    try:
        yield
    except InvalidRequestError as problem:
        field = view.t(FILTERS.get(problem.field, problem.field))
        raise PageError(
            400, N_("The filter “{field}” is not valid: {detail}."), field=field,
            detail=view.t(problem.detail).rstrip("."),
        ) from None  # fmt: skip


def link(path: str, params: Mapping[str, str], **more: str | None) -> str:
    values = {**params, **{name: value for name, value in more.items() if value is not None}}
    return f"{path}?{urlencode(values)}" if values else path


def why(view: View, item: Mapping[str, Any]) -> str:
    """Why a message did not arrive, as the person reads it: the reason it was never
    sent, or the provider's, with its code."""
    reason = _reason(view, item)
    code = item.get("provider_code")
    if code:
        coded = view.t("code {code}", code=code)
        return f"{reason} ({coded})" if reason else coded
    return reason


def _reason(view: View, item: Mapping[str, Any]) -> str:
    reason = item.get("reason") or ""
    return view.reason(reason)


def cell_text(view: View, name: str, item: Mapping[str, Any]) -> object:
    """A CSV cell: what the page shows for the field ``name`` of ``item``."""
    value = item.get(name)
    if name == "reason":
        return _reason(view, item)
    if name in {"channel", "status"} and value:
        return view.t(value)
    if isinstance(value, list):
        return " ".join(value)
    return value


def _moment(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def local_time(value: str | dt.datetime | None, zone: str) -> str:
    """A moment in a spreadsheet's terms, in the person's time zone."""
    moment = _moment(value) if isinstance(value, str) else value
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


#: one page of a CSV's rows, from the cursor of the page before; and the next one's cursor
Rows = Callable[[str | None], Awaitable[tuple[list[list[object]], str | None]]]


def csv_download(
    filename: str,
    caller: Caller,
    header: list[str],
    first: tuple[list[list[object]], str | None],
    rows: Rows,
) -> Response:
    """A CSV download of the ``first`` page (read by the page's handler, so that a filter
    refused is still its 400 page) and every page ``rows`` reads after it, written page
    by page as it is read: never the whole list in memory. Those are read once the
    handler has returned, outside its scope: each in the caller's scope again."""

    async def lines() -> AsyncIterator[str]:
        yield "\ufeff" + spreadsheet.line(header)  # the BOM: spreadsheets then read UTF-8
        page, cursor = first
        while True:
            yield "".join(map(spreadsheet.line, page))
            if cursor is None:
                return
            with scope.serving(caller):
                page, cursor = await rows(cursor)

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
