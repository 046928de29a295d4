"""The console's "Copropriété > Préférences de communication": a property's owners with
their email and SMS yes / no / not applicable, who changed each, when and why; an owner's
page with the history of their preferences and, for a manager, the form that changes them.

Reads and changes go through the API's :class:`Preferences` store, scoped to the person
signed in, so its rules are the API's: bringing back a channel the bounce policy turned
off is support's alone (``403 support_only``), and every change is audited with its
author and reason. What the store does not answer (the properties, an owner's audit
trail, the failures behind an automatic unsubscribe) is read through the scoped pool,
where row-level security keeps it to the person's agencies.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote, urlencode

import msgspec
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from console.i18n import N_
from console.web import Console, PageError, View, not_found
from relaybook.access.auth import SUPPORT, Caller
from relaybook.access.scope import ScopedPool
from relaybook.platform import sql
from relaybook.platform.answers import RefusedError
from relaybook.platform.decoding import Id, InvalidRequestError, convert, decode_query
from relaybook.platform.paging import Cursor, decode_cursor, encode_cursor
from relaybook.reachability import authority
from relaybook.reachability.answers import ChannelPreference, RecipientPreferences
from relaybook.reachability.preferences import (
    CHANNELS,
    Change,
    OverviewQuery,
    PreferenceChange,
    Preferences,
    RecipientQuery,
    parse_change,
)

Q = sql.load("console", "preferences.sql")
PROPERTIES_PAGE = 50
HISTORY_PAGE = 20
T = TypeVar("T")

WANTS = {"yes": N_("Yes"), "no": N_("No"), "not_applicable": N_("Not applicable")}
CHANNEL_NAMES = {"email": "Email", "sms": "SMS"}
AUTHORS = {
    "default": N_("Nobody (default)"),
    "owner": N_("The owner"),
    "manager": N_("A manager"),
    "support": N_("Platform support"),
    "automatic": N_("Automatic (bounce policy)"),
}
#: the failures the bounce policy counts, and its rules, as the evidence shows them
FAILURES = {
    "hard": N_("Hard failure"),
    "soft": N_("Temporary failure"),
    "complaint": N_("Spam complaint"),
    "provider_suppressed": N_("Blocked by the provider"),
}
RULES = {
    "hard_bounces": N_("Repeated hard failures"),
    "soft_bounces": N_("Repeated temporary failures"),
    "complaint": N_("Spam complaint"),
    "provider_suppressed": N_("Blocked by the provider"),
}
#: an owner's audit trail, entry by entry (an ``unsubscribe_<rule>`` is the policy's)
ACTIONS = {
    "preference_changed": N_("Preference changed"),
    "support_override": N_("Automatic unsubscribe reversed by support"),
    "never_auto_unsubscribe": N_("Never to be unsubscribed automatically"),
    "auto_unsubscribe_allowed": N_("May be unsubscribed automatically again"),
    "contact_corrected": N_("Contact details corrected"),
    "owner_request": N_("The owner's own request"),
    "unsubscribe_complaint": N_("The owner marked a message as spam"),
    "unsubscribe_opt_out": N_("The owner opted out (STOP)"),
    "resubscribe_opt_in": N_("The owner opted in again (START)"),
    "resubscribe_expired": N_("Subscribed again: the automatic unsubscribe expired"),
}
UNSUBSCRIBED = "Unsubscribed automatically"
SUPPORT_ONLY = N_(
    "Only support can bring back a channel that was unsubscribed automatically. "
    "Contact support to change this."
)
OWNER_OPTED_OUT = N_(
    "The owner opted out of this channel themselves (STOP, unsubscribe link or spam "
    "complaint): only the owner can bring it back, by replying START or by a request of "
    "theirs recorded with its evidence."
)
OWNER_NOTE = "The owner opted out themselves: only the owner can bring it back."
#: the refusals of the preferences store, by code, as the page says them
REFUSED = {authority.SUPPORT_ONLY: SUPPORT_ONLY, authority.OWNER_OPTED_OUT: OWNER_OPTED_OUT}
NO_REASON = N_("Say why you change these preferences (500 characters at most).")
BAD_FILTER = N_("The filter “{field}” is not valid.")
DONE = {
    "saved": N_("The preferences were saved."),
    "unchanged": N_("Nothing changed: the preferences were already so."),
}


class PropertiesQuery(msgspec.Struct, forbid_unknown_fields=True):
    """The list of properties: ``after`` is its own cursor (``cursor`` is the owners')."""

    after: Cursor | None = None


class OwnerQuery(RecipientQuery, forbid_unknown_fields=True):
    """An owner's page: the API's ``?agency=``, the property the person came from (for
    the way back), the history's page, and what was just done (after a change)."""

    property: Id | None = None
    before: Annotated[int, msgspec.Meta(ge=1)] | None = None
    done: Literal["saved", "unchanged"] | None = None


#: ``(agency, recipient, channel) -> (rule, failures)`` as the bounce policy recorded them
Evidence = dict[tuple[str, str, str], tuple[str | None, list[dict[str, Any]]]]


@dataclasses.dataclass(frozen=True)
class Failure:
    """One failure the bounce policy counted before unsubscribing."""

    kind: str
    provider_code: str | None
    when: str


@dataclasses.dataclass(frozen=True)
class ChannelView:
    """One channel of one owner, as the pages show it."""

    channel: str
    wants: str
    reason: str | None
    author: str
    author_name: str | None
    when: str
    #: turned off by the bounce policy: support alone brings it back
    automatic: bool
    #: turned off by the owner themselves: they alone bring it back
    by_owner: bool
    rule: str | None = None
    evidence: tuple[Failure, ...] = ()


def routes(console: Console, scoped: ScopedPool, prefs: Preferences) -> list[BaseRoute]:
    pages = Pages(scoped, prefs)
    reading = ("journal:read", "preferences:write")
    owner_path = "/ui/preferences/owners/{recipient_id:path}"
    return [
        console.page("/ui/preferences", pages.overview, scopes=reading),
        console.page(owner_path, pages.owner, scopes=reading),
        console.page(owner_path, pages.change, scopes=("preferences:write",), methods=("POST",)),
    ]


class Pages:
    """The preferences pages, on the API's store and pool (both scoped to the person)."""

    def __init__(self, scoped: ScopedPool, prefs: Preferences) -> None:
        self._scoped = scoped
        self._prefs = prefs

    async def overview(self, view: View) -> Response:
        given = [(name, value) for name, value in view.request.query_params.multi_items() if value]
        if all(name == "after" for name, _ in given):
            return await self._properties(view, given)
        query = _decode(given, OverviewQuery)
        if query.agency is not None and not view.caller.sees(query.agency):
            raise not_found()
        places = []
        if query.property is not None:
            places = await self._scoped.fetch(Q["property"], query.property, query.agency)
            if not places:
                raise not_found()
        try:
            page = await self._prefs.overview(query)
        except InvalidRequestError as problem:
            raise PageError(400, BAD_FILTER, field=problem.field) from None
        evidence = await _evidence(self._scoped, page["items"])
        owners = [
            (item, [_channel(view, item, c, evidence) for c in CHANNELS]) for item in page["items"]
        ]
        later = page["next_cursor"]
        return view.render(
            "preferences.html",
            query=query,
            places=places,
            owners=owners,
            owner_url=_owner_url,
            next_url=_with(given, cursor=later) if later else None,
            first_url=_with(given, cursor=None) if query.cursor else None,
            several=_several(view),
            wants=WANTS,
            authors=AUTHORS,
        )

    async def _properties(self, view: View, given: list[tuple[str, str]]) -> Response:
        """The properties to pick from, a page at a time (the person's agencies only)."""
        query = _decode(given, PropertiesQuery)
        after: list[str | None] = [None, None]
        if query.after is not None:
            try:
                after = list(decode_cursor(query.after, 2))
            except InvalidRequestError:
                raise PageError(400, BAD_FILTER, field="after") from None
        rows = await self._scoped.fetch(Q["properties"], *after, PROPERTIES_PAGE + 1)
        later = None
        if len(rows) > PROPERTIES_PAGE:
            last = rows[PROPERTIES_PAGE - 1]
            later = "?" + urlencode({"after": encode_cursor(last["agency_id"], last["id"])})
        return view.render(
            "preferences.html",
            properties=rows[:PROPERTIES_PAGE],
            next_url=later,
            first_url="/ui/preferences" if query.after else None,
            several=_several(view),
            property_url=_property_url,
            wants=WANTS,
            authors=AUTHORS,
        )

    async def owner(self, view: View) -> Response:
        return await self._owner_page(view, await _asked(view, self._prefs))

    async def change(self, view: View) -> Response:
        asked = await _asked(view, self._prefs)
        current = await self._prefs.get(asked.agency, asked.recipient_id)
        if current is None:
            raise not_found()
        chosen = {
            c: view.field(c)
            for c in CHANNELS
            if view.field(c) and _of(current, c)["wants"] != "not_applicable"
        }
        try:
            body = convert({**chosen, "reason": view.field("reason")}, PreferenceChange)
            change = parse_change(body)
        except InvalidRequestError as problem:
            error = NO_REASON if problem.field == "reason" else N_("Choose Yes or No.")
            return await self._owner_page(view, asked, status=400, error=error)
        changes = {c: w for c, w in change.wanted.items() if w != _of(current, c)["wants"]}
        if changes:
            try:
                await self._prefs.change(
                    asked.agency, asked.recipient_id, Change(changes, change.reason), view.caller
                )
            except RefusedError as refused:
                if refused.code not in REFUSED:
                    raise
                error = REFUSED[refused.code]
                return await self._owner_page(view, asked, status=refused.status, error=error)
        return RedirectResponse(asked.url(done="saved" if changes else "unchanged"), 303)

    async def _owner_page(
        self, view: View, asked: Asked, *, status: int = 200, error: str | None = None
    ) -> Response:
        """An owner's preferences, their history, and the form (again, with what was
        posted and the ``error``, when a change was refused)."""
        found = await self._prefs.get(asked.agency, asked.recipient_id)
        if found is None:
            raise not_found()
        evidence = await _evidence(self._scoped, [found])
        query = asked.query
        rows = await self._scoped.fetch(
            Q["history"], asked.recipient_id, asked.agency, query.before, HISTORY_PAGE + 1
        )
        older = None
        if len(rows) > HISTORY_PAGE:
            older = asked.url(before=rows[HISTORY_PAGE - 1]["id"])
        posted = view.form is not None
        back = _property_url(asked.agency, query.property) if query.property else "/ui/preferences"
        return view.render(
            "preference_owner.html",
            http_status=status,
            owner=found,
            channels=[_channel(view, found, c, evidence) for c in CHANNELS],
            history=[_entry(view, row) for row in rows[:HISTORY_PAGE]],
            older_url=older,
            newest_url=asked.url() if query.before else None,
            back_url=back,
            message=DONE[query.done] if query.done and not posted else None,
            error=error,
            chosen={c: view.field(c) for c in CHANNELS} if posted else {},
            reason=view.field("reason") if posted else "",
            form_url=asked.url(),
            editable=any(_of(found, c)["wants"] != "not_applicable" for c in CHANNELS),
            may_write=view.may("preferences:write"),
            is_support=view.may(SUPPORT),
            several=_several(view),
            wants=WANTS,
            channel_names=CHANNEL_NAMES,
        )


@dataclasses.dataclass(frozen=True)
class Asked:
    """The owner a page is about: their agency (as the API finds it), id, and the query."""

    agency: str
    recipient_id: str
    query: OwnerQuery

    def url(self, **params: object) -> str:
        """This owner's page (coming from the same property)."""
        return _owner_url(self.agency, self.recipient_id, property=self.query.property, **params)


async def _asked(view: View, prefs: Preferences) -> Asked:
    recipient_id = view.request.path_params["recipient_id"]
    try:
        convert(recipient_id, Id)
    except InvalidRequestError:
        raise not_found() from None
    query = _decode(view.request.query_params.multi_items(), OwnerQuery)
    return Asked(await _whose(prefs, recipient_id, query.agency, view.caller), recipient_id, query)


async def _whose(prefs: Preferences, recipient_id: str, given: str | None, caller: Caller) -> str:
    """The agency of the owner asked for, as the API finds it; the 404 page when none of
    the person's agencies has them."""
    try:
        return await prefs.agency_of(recipient_id, given, caller)
    except RefusedError:
        raise not_found() from None
    except InvalidRequestError:
        raise PageError(
            400, N_("Several of your agencies have an owner of this id: choose the agency.")
        ) from None


def _decode(params: Iterable[tuple[str, str]], kind: type[T]) -> T:
    """The query as ``kind`` (the API's own types), or the 400 page naming the filter."""
    try:
        return decode_query(params, kind)
    except InvalidRequestError as problem:
        raise PageError(400, BAD_FILTER, field=problem.field) from None


async def _evidence(scoped: ScopedPool, items: list[RecipientPreferences]) -> Evidence:
    """``(agency, recipient, channel) -> (rule, failures)`` of the automatic unsubscribes
    among ``items``, as the bounce policy recorded them (one query for the page)."""
    automatic = [i for i in items if any(_is_automatic(_of(i, c)) for c in CHANNELS)]
    if not automatic:
        return {}
    rows = await scoped.fetch(
        Q["unsubscribe_evidence"],
        [i["agency"] for i in automatic],
        [i["recipient_id"] for i in automatic],
    )
    return {
        (row["agency_id"], row["recipient_id"], row["channel"]): (
            row["rule"],
            json.loads(row["evidence"] or "[]"),
        )
        for row in rows
    }


def _of(item: RecipientPreferences, channel: str) -> ChannelPreference:
    return item["email"] if channel == "email" else item["sms"]


def _is_automatic(preference: ChannelPreference) -> bool:
    return preference["wants"] == "no" and preference["changed_by"] == "automatic"


def _channel(
    view: View,
    item: RecipientPreferences,
    channel: str,
    evidence: Evidence,
) -> ChannelView:
    preference = _of(item, channel)
    automatic = _is_automatic(preference)
    rule, failures = evidence.get((item["agency"], item["recipient_id"], channel), (None, []))
    return ChannelView(
        channel=channel,
        wants=preference["wants"],
        reason=preference["reason"],
        author=AUTHORS[preference["changed_by"]],
        author_name=preference["changed_by_name"],
        when=view.when(_moment(preference["changed_at"])),
        automatic=automatic,
        by_owner=preference["wants"] == "no" and preference["changed_by"] == "owner",
        rule=RULES.get(rule, rule) if automatic and rule else None,
        evidence=tuple(_failures(view, failures)) if automatic else (),
    )


def _failures(view: View, failures: list[dict[str, Any]]) -> Iterable[Failure]:
    for failure in failures:
        if not isinstance(failure, dict):
            continue
        kind = str(failure.get("kind", ""))
        code = failure.get("provider_code")
        yield Failure(
            FAILURES.get(kind, kind),
            str(code) if code is not None else None,
            view.when(_moment(failure.get("occurred_at"))),
        )


def _entry(view: View, row: Any) -> dict[str, Any]:
    """An audit entry of an owner's history, as the page shows it."""
    details = json.loads(row["details"] or "{}")
    action: str = row["action"]
    channel = details.get("channel")
    wants = details.get("wants")
    if action.startswith("unsubscribe_") and action not in ACTIONS:
        what = UNSUBSCRIBED
        rule = details.get("rule")
        detail = RULES.get(rule, rule) if isinstance(rule, str) else None
    else:
        what = ACTIONS.get(action, action)
        detail = None
    return {
        "when": view.when(row["at"]),
        "what": what,
        "detail": detail,
        "channel": CHANNEL_NAMES.get(channel) if isinstance(channel, str) else None,
        "wants": WANTS.get(wants) if isinstance(wants, str) else None,
        "actor": row["actor"],
        "reason": row["reason"],
        "evidence": list(_failures(view, details.get("evidence") or [])),
    }


def _moment(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def _several(view: View) -> bool:
    """Whether the person sees several agencies now (then each row says whose)."""
    agencies = view.caller.agencies
    return agencies is None or len(agencies) > 1


def _owner_url(agency: str, recipient_id: str, **params: object) -> str:
    """An owner's page: the platform's ids only, never a name or an address."""
    query = {"agency": agency, **{k: v for k, v in params.items() if v is not None}}
    return f"/ui/preferences/owners/{quote(recipient_id, safe='')}?{urlencode(query)}"


def _property_url(agency: str, property_id: str) -> str:
    return "/ui/preferences?" + urlencode({"agency": agency, "property": property_id})


def _with(given: list[tuple[str, str]], **changes: str | None) -> str:
    """The overview's URL with some parameters changed (None: removed)."""
    kept = [(name, value) for name, value in given if name not in changes]
    kept += [(name, value) for name, value in changes.items() if value is not None]
    return "/ui/preferences?" + urlencode(kept)
