"""The dispatcher deployable (port ``RELAYBOOK_API_PORT``): the API, plus the outbox relay
and the scheduler running beside it in every replica, and the event outbox's catch-up
loop (preference changes are announced through it).

The console's pages are served beside the API, on its port; the composition root
(:mod:`relaybook.tooling.dispatcher_console`) mounts them through ``pages``: the
dispatcher knows no page of the console."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatcher import journal, notices, openapi, preferences, resends
from dispatcher.api import Operation, mount
from dispatcher.outbox import Relay
from relaybook.access.auth import OPS, Authenticator
from relaybook.access.scope import ScopedPool
from relaybook.journal.reader import JournalReader
from relaybook.notices.resends import Resends
from relaybook.notices.store import NoticeStore
from relaybook.platform.deployable import Deployable
from relaybook.platform.http import create_app
from relaybook.platform.runtime import Infrastructure, admin_token
from relaybook.reachability.preferences import Preferences


@dataclasses.dataclass(frozen=True)
class Stores:
    """The API's stores, scoped to each request's caller: what the routes served beside
    ``/v1`` (the console's pages) share with it."""

    scoped: ScopedPool
    notices: NoticeStore
    journal: JournalReader
    preferences: Preferences
    resends: Resends


def stores(infra: Infrastructure) -> Stores:
    # the routes' queries see only their caller's agencies; the relay and the scheduler
    # work across agencies
    scoped = ScopedPool(infra.pool)
    agency = infra.settings.default_agency
    return Stores(
        scoped=scoped,
        notices=NoticeStore(scoped, agency),
        journal=JournalReader(scoped),
        preferences=Preferences(scoped, agency),
        resends=Resends(scoped),
    )


def build(
    infra: Infrastructure,
    *,
    pages: Callable[[Stores], Sequence[BaseRoute]] = lambda stores: (),
) -> Deployable:
    """``pages``: routes served beside the API's, given its stores (the console's)."""
    settings = infra.settings
    assert settings.database_url is not None
    shared = stores(infra)
    auth = Authenticator(infra.pool, admin_token(settings))
    relay = Relay(infra.pool, infra.producer, settings.database_url)
    ops = operations(shared.notices, shared.journal, shared.preferences, shared.resends)
    app: ASGIApp = create_app(
        "dispatcher",
        routes=[*mount(ops, auth), openapi.route(ops), *pages(shared)],
        checks={"database": infra.check_database, "broker": infra.check_broker},
        details=lambda request: auth.holds(request, OPS),
    )
    if settings.https:
        app = _StrictTransport(app)
    events = infra.events_outbox()

    async def start() -> None:
        await relay.start()
        await events.start()

    async def stop() -> None:
        await events.stop()
        await relay.stop()

    return Deployable(app=app, start=start, stop=stop)


class _StrictTransport:
    """Every answer carries HSTS: behind an https public URL, a browser that has been
    here once never comes back over plain http (where its cookie could be read)."""

    HEADER = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append(self.HEADER)
            await send(message)

        await self.app(scope, receive, send_with_hsts)


def operations(
    store: NoticeStore,
    reader: JournalReader,
    prefs: Preferences,
    resender: Resends,
) -> list[Operation]:
    """Every ``/v1`` call: what is mounted is what ``/openapi.json`` describes."""
    return [
        *notices.operations(store),
        *journal.operations(reader),
        *resends.operations(resender),
        *preferences.operations(prefs),
    ]
