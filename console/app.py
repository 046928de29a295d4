"""The console's routes: served by the dispatcher deployable beside ``/v1``, on its port
(the composition root, :mod:`relaybook.tooling.dispatcher_console`, mounts them)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from console import journal, notices, preferences, signin, unreachable
from console.live import Announcements
from console.web import Console
from relaybook.access.people import People
from relaybook.access.scope import ScopedPool
from relaybook.access.sessions import Sessions
from relaybook.access.settings import AccessSettings
from relaybook.access.throttle import Throttle
from relaybook.journal.reader import JournalReader
from relaybook.notices.resends import Resends
from relaybook.notices.store import NoticeStore
from relaybook.reachability.preferences import Preferences


def routes(  # noqa: PLR0917 - the API's stores, each once
    pool: asyncpg.Pool,
    scoped: ScopedPool,
    announcements: Announcements,
    store: NoticeStore,
    reader: JournalReader,
    prefs: Preferences,
    resender: Resends,
    people: People,
    *,
    sessions: AccessSettings,
    https: bool = False,
) -> list[BaseRoute]:
    """``pool``: the tables' owner's (sessions and people are no agency's data);
    ``scoped`` and the stores: the API's, scoped to each request's caller (a page's own
    queries of agency data go through ``scoped``); ``sessions``: how long a session lasts;
    ``https``: the console's public URL is https."""
    console = Console(Sessions(pool, sessions), pool, https=https)
    return [
        *signin.routes(console, people, Throttle(pool)),
        *notices.routes(console, scoped, store, reader, resender, announcements),
        *journal.routes(console, scoped, reader),
        *unreachable.routes(console, scoped),
        *preferences.routes(console, scoped, prefs),
        Mount(
            "/ui/static",
            StaticFiles(directory=Path(__file__).with_name("static")),
            name="console static",
        ),
    ]
