"""The console's notices pages: the list; a notice's page with its funnel per channel, the
recipient table, the resend dialog (each scope's counts, and whom it would leave out and
why), the resend history; the resend itself; and the page's live updates.

They answer what the API answers, through its stores scoped to the person signed in, and
its rules: the list's filters are ``NoticesQuery``, the table is the API's recipients
page, and the dialog's counts and whom each scope leaves out, and why, are
``Resends.plans`` (the reasons the fan-out skips a message for).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from babel import Locale
from babel.numbers import format_decimal, format_percent
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from console.i18n import N_
from console.live import Announcements
from console.live import response as live_response
from console.web import Console, PageError, View, not_found
from relaybook.access.scope import ScopedPool
from relaybook.journal.reader import STATUSES, JournalReader, RecipientsQuery
from relaybook.notices.answers import ScopeCount, Stats
from relaybook.notices.listing import NoticesQuery, list_statement
from relaybook.notices.resends import (
    SCOPES,
    UNSENT,
    Message,
    OptionsQuery,
    ResendBody,
    ResendError,
    Resends,
    options_of,
    parse_request,
    refusal,
    selection,
)
from relaybook.notices.store import NoticeStore, summarize
from relaybook.platform import sql
from relaybook.platform.decoding import InvalidRequestError, convert, decode_query
from relaybook.platform.paging import Limit, decode_cursor, encode_cursor

Q = sql.load("console", "notices.sql")
T = TypeVar("T")

#: notices a page of the list shows (each with its counts per channel)
LIST_SIZE = 25
#: recipients a page of a notice's table shows
TABLE_SIZE = 50
#: the people named under a scope of the dialog as left out (the count says the rest)
LEFT_OUT_SHOWN = 10

BAD_FILTER = N_("The filter “{field}” is not valid.")
#: the statuses, in their order (their words are shared: console.i18n)
NOTICE_STATUSES = ("draft", "scheduled", "sending", "sent", "partially_failed", "failed")
SCOPE_LABELS = {
    "failed": N_("Failed only"),
    "undelivered": N_("All undelivered"),
    "selected": N_("Selected recipients"),
}
SCOPE_HELP = {
    "failed": N_("Recommended: only the failed channels are retried."),
    "undelivered": N_("Recipients who received the notice on no channel."),
    "selected": N_("The failed channels of the recipients ticked in the table."),
}
#: a refused resend, as the page tells it (the API's error codes)
PROBLEMS = {
    "no_failed_recipients": N_(
        "Nothing to resend in this scope: its messages were delivered "
        "meanwhile, or their recipients cannot be contacted any more."
    ),
    "notice_not_sent": N_("This notice has not been sent yet: there is nothing to resend."),
    "notice_sending": N_("This notice is still being sent: resend once it is done."),
    "no_selection": N_(
        "Tick at least one recipient in the table to resend to the selected recipients."
    ),
    "unknown_recipients": N_(
        "Some ticked recipients are not recipients of this notice: reload the page and try again."
    ),
}
Problem = Literal[
    "no_failed_recipients", "notice_not_sent", "notice_sending", "no_selection",
    "unknown_recipients",
]  # fmt: skip


class NoticePageQuery(RecipientsQuery, forbid_unknown_fields=True):
    """A notice's page: the API's recipients query for its table, the dialog opened
    without JavaScript, and what the resend posted last did (after its redirect)."""

    limit: Limit = TABLE_SIZE
    resend: Literal["open"] | None = None
    resent: uuid.UUID | None = None
    problem: Problem | None = None


@dataclasses.dataclass(frozen=True)
class LeftOut:
    who: str
    channel: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Scope:
    """One radio of the resend dialog."""

    name: str
    counts: ScopeCount
    left_out: list[LeftOut]


def routes(  # noqa: PLR0917 - app.py's call: the stores these pages use, each once
    console: Console,
    scoped: ScopedPool,
    store: NoticeStore,
    reader: JournalReader,
    resender: Resends,
    announcements: Announcements,
) -> list[BaseRoute]:
    pages = _Pages(scoped, store, reader, resender, announcements)
    base = "/ui/notices/{notice_id}"
    return [
        console.page("/ui/notices", pages.listing),
        console.page(base, pages.notice),
        console.page(f"{base}/resend-options", pages.resend_options),
        console.page(f"{base}/resends", pages.resend, scopes=("notices:write",), methods=("POST",)),
        console.page(f"{base}/live", pages.live),
    ]


@dataclasses.dataclass(frozen=True)
class _Pages:
    scoped: ScopedPool
    store: NoticeStore
    reader: JournalReader
    resender: Resends
    announcements: Announcements

    async def listing(self, view: View) -> Response:
        query = _list_query(view)
        with _filters():
            statement, values = list_statement(query)
        rows = await self.store.page(statement, values)
        shown = rows[:LIST_SIZE]
        last = rows[LIST_SIZE - 1] if len(rows) > LIST_SIZE else None
        counts: dict[str, dict[str, Mapping[str, int]]] = {}
        for row in await self.scoped.fetch(Q["notices_counts"], [row["id"] for row in shown]):
            counts.setdefault(str(row["notice_id"]), {})[row["channel"]] = dict(row)
        cursor = encode_cursor(last["created_at"].isoformat(), str(last["id"])) if last else None
        return view.render(
            "notices.html",
            notices=[summarize(row) for row in shown],
            counts=counts,
            filters=view.request.query_params,
            next_url=_with(view, cursor=cursor) if cursor else None,
            first_url=_with(view, cursor=None) if query.cursor else None,
            several=_several_agencies(view),
            **_helpers(view),
        )

    async def notice(self, view: View) -> Response:
        notice_id = _notice_id(view)
        query = _decoded(view.request.query_params.multi_items(), NoticePageQuery)
        with _filters():
            after = decode_cursor(query.cursor, 1)[0] if query.cursor else ""
        found = await self.store.get(notice_id)
        if found is None:
            raise not_found()
        table = await self.reader.recipients(notice_id, query, after)
        history = await self.resender.history(notice_id)
        status = found["status"]
        may_resend = view.may("notices:write")
        failed = sum(found["stats"][channel]["failed"] for channel in found["channels"])
        # the API's rule (a sent, partially failed or failed notice), with a failure to
        # resend: the contract's "at least one failed recipient"
        resendable = may_resend and refusal(status) is None and failed > 0
        opened = resendable and query.resend == "open"
        resent = None
        if query.resent is not None:
            resent = next((h for h in history if h["id"] == str(query.resent)), None)
        return view.render(
            "notice.html",
            notice=found,
            notice_id=str(notice_id),
            funnels=[(c, _funnel(view, c, found["stats"][c])) for c in found["channels"]],
            table=table,
            history=history,
            # there for a live update to reveal the button once failures come in
            dialog=may_resend and status not in UNSENT,
            resendable=resendable,
            opened=opened,
            scopes=await self._scopes(notice_id, frozenset()) if opened else None,
            resent=resent,
            problem=PROBLEMS[query.problem] if query.problem else None,
            status_filter=query.status,
            next_url=_table_page(view, table["next_cursor"]) if table["next_cursor"] else None,
            first_url=_table_page(view, None) if query.cursor else None,
            several=_several_agencies(view),
            **_helpers(view),
        )

    async def resend_options(self, view: View) -> Response:
        """The dialog's scopes for the recipients ticked (notice.js asks on opening)."""
        notice_id = _notice_id(view)
        query = _decoded(view.request.query_params.multi_items(), OptionsQuery)
        with _ticked_ids():
            selected = selection(query.recipient_ids)
        scopes = await self._scopes(notice_id, selected)
        return view.render("notice_scopes.html", scopes=scopes, **_helpers(view))

    async def resend(self, view: View) -> Response:
        """The dialog posted: the API's resend, then back to the notice's page saying what
        it did, or why it did nothing."""
        notice_id = _notice_id(view)
        if not await self.resender.exists(notice_id):
            raise not_found()
        scope = view.field("scope")
        if scope not in SCOPES:
            raise PageError(400, N_("Choose what to resend."))
        assert view.form is not None
        # ticked boxes go with any scope (one form, no script): only "selected" takes them
        ticked = [v for v in view.form.getlist("recipient_id") if isinstance(v, str)]
        body = {"scope": scope, "recipient_ids": ticked if scope == "selected" else None}
        try:
            chosen, selected = parse_request(convert(body, ResendBody))
            done = await self.resender.resend(notice_id, chosen, selected, view.caller.name)
        except ResendError as refused:
            if refused.status == 404:
                raise not_found() from None
            return _back(notice_id, problem=refused.code)
        except InvalidRequestError:
            # a ticked id no recipient of this notice has (or could have)
            return _back(notice_id, problem="unknown_recipients")
        return _back(notice_id, resent=done["resend_id"])

    async def live(self, view: View) -> Response:
        notice_id = _notice_id(view)
        if not await self.reader.notice_exists(notice_id):
            raise not_found()
        return live_response(self.announcements, view, notice_id)

    async def _scopes(self, notice_id: uuid.UUID, selected: frozenset[str]) -> list[Scope]:
        """Each scope's counts (the API's), and whom it leaves out and why: the resend's
        own plan."""
        try:
            with _ticked_ids():
                plans = await self.resender.plans(notice_id, selected)
        except ResendError:
            raise not_found() from None
        counts = options_of(plans, selected)
        each = {
            "failed": counts["failed"],
            "undelivered": counts["undelivered"],
            "selected": counts["selected"],
        }
        return [
            Scope(name, each[name], [_left_out(m) for m in plans[name].excluded]) for name in SCOPES
        ]


def _left_out(message: Message) -> LeftOut:
    assert message.reason is not None, "a plan leaves out only who cannot be contacted"
    return LeftOut(message.name or message.recipient_id, message.channel, message.reason)


def _notice_id(view: View) -> uuid.UUID:
    """The notice of the URL; one that cannot exist is a page that does not."""
    try:
        return uuid.UUID(view.request.path_params["notice_id"])
    except ValueError:
        raise not_found() from None


def _decoded(items: Iterable[tuple[str, str]], kind: type[T]) -> T:
    """Query parameters as the API decodes them; a 400 page naming the one at fault."""
    with _filters():
        return decode_query(items, kind)


@contextlib.contextmanager
def _filters() -> Iterator[None]:
    """A query parameter the API refuses (a cursor it never gave out...) is a 400 page
    naming it."""
    try:
        yield
    except InvalidRequestError as problem:
        # a repeated filter's field is "status[1]": the person knows it as "status"
        raise PageError(400, BAD_FILTER, field=problem.field.split("[")[0]) from None


@contextlib.contextmanager
def _ticked_ids() -> Iterator[None]:
    """A ticked recipient id that is none of the notice's recipients' (or that nobody's
    could be) is a 400 page saying so."""
    try:
        yield
    except InvalidRequestError:
        raise PageError(400, PROBLEMS["unknown_recipients"]) from None


def _list_query(view: View) -> NoticesQuery:
    """The list's filters as the API's query: empty fields are no filter, and the days
    of ``since`` and ``until`` (both included) are the person's, in their time zone."""
    zone = ZoneInfo(view.session.time_zone)
    items = []
    for name, given in view.request.query_params.multi_items():
        if not given.strip():
            continue
        value = given
        if name in {"since", "until"}:
            try:
                day = dt.date.fromisoformat(given)
            except ValueError:
                raise PageError(400, BAD_FILTER, field=name) from None
            if name == "until":
                day += dt.timedelta(days=1)
            value = dt.datetime.combine(day, dt.time(), zone).isoformat()
        items.append((name, value))
    return _decoded([*items, ("limit", str(LIST_SIZE))], NoticesQuery)


def _with(view: View, **changes: str | None) -> str:
    """This page's URL with some query parameters changed (None: removed)."""
    kept = [(k, v) for k, v in view.request.query_params.multi_items() if k not in changes]
    kept += [(k, v) for k, v in changes.items() if v is not None]
    url = view.request.url.path
    return f"{url}?{urlencode(kept)}" if kept else url


def _table_page(view: View, cursor: str | None) -> str:
    """Another page of a notice's table, with its filter (what a resend did is not said
    again there, nor is the dialog opened again)."""
    return _with(view, cursor=cursor, resent=None, problem=None, resend=None)


def _back(notice_id: uuid.UUID, **outcome: str) -> Response:
    """After a resend posted: the notice's page, saying what happened (post, redirect,
    get: reloading it posts nothing again)."""
    return RedirectResponse(f"/ui/notices/{notice_id}?{urlencode(outcome)}", 303)


def _several_agencies(view: View) -> bool:
    agencies = view.caller.agencies
    return agencies is None or len(agencies) > 1


def _funnel(view: View, channel: str, stats: Stats) -> dict[str, list[tuple[str, int, str]]]:
    """A channel's funnel (each step with its share of what was sent) and the states apart
    from it. A text is never opened nor clicked (no provider reports it): its funnel ends
    at delivered."""
    sent = stats["sent"]

    def share(value: int) -> str:
        if not sent:
            return ""
        return view.t("{share} of sent", share=format_percent(value / sent, locale=view.language))

    return {
        "steps": [
            (N_("Sent"), sent, ""),
            (N_("Delivered"), stats["delivered"], share(stats["delivered"])),
            *(
                [
                    (N_("Opened"), stats["opened"], share(stats["opened"])),
                    (N_("Clicked"), stats["clicked"], share(stats["clicked"])),
                ]
                if channel == "email"
                else []
            ),
        ],
        "apart": [
            (N_("Failed"), stats["failed"], ""),
            (N_("Skipped"), stats["skipped"], ""),
            (N_("Queued"), stats["queued"], ""),
        ],
    }


def _helpers(view: View) -> dict[str, Any]:
    """What the templates use beside ``t``: dates, counted nouns, labels."""

    def counted(n: int, one: str, other: str) -> str:
        form = Locale.parse(view.language).plural_form(n)
        text = one if form == "one" else other
        return view.t(text, n=format_decimal(n, locale=view.language))

    def when(value: str | dt.datetime | None, *, short: bool = True) -> str:
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return view.when(value, short=short)

    return {
        "counted": counted,
        "when": when,
        "number": lambda n: format_decimal(n, locale=view.language),
        # a status in words: the shared French, or the code made readable
        "in_words": lambda code: view.t(code).replace("_", " "),
        "notice_statuses": NOTICE_STATUSES,
        "delivery_statuses": STATUSES,
        "scope_labels": SCOPE_LABELS,
        "scope_help": SCOPE_HELP,
        "left_out_shown": LEFT_OUT_SHOWN,
        "channel_names": {"email": "Email", "sms": "SMS"},
    }
