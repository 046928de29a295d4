"""The dispatcher deployable (port ``RELAYBOOK_API_PORT``): the API, plus the outbox relay
and the scheduler running beside it in every replica, and the event outbox's catch-up
loop (preference changes are announced through it)."""

from __future__ import annotations

from dispatcher import journal, notices, preferences, resends
from dispatcher.auth import Authenticator
from dispatcher.outbox import Relay
from dispatcher.store import NoticeStore
from relaybook.deployable import Deployable
from relaybook.http import create_app
from relaybook.runtime import Infrastructure, admin_token


def build(infra: Infrastructure) -> Deployable:
    settings = infra.settings
    assert settings.database_url is not None
    store = NoticeStore(infra.pool)
    auth = Authenticator(infra.pool, admin_token(settings))
    relay = Relay(infra.pool, infra.producer, settings.database_url)
    app = create_app(
        "dispatcher",
        routes=[
            *notices.routes(store, auth),
            *journal.routes(journal.JournalReader(infra.pool), auth),
            *preferences.routes(preferences.Preferences(infra.pool), auth),
            *resends.routes(resends.Resends(infra.pool), auth),
        ],
        checks={"database": infra.check_database, "broker": infra.check_broker},
    )
    events = infra.events_outbox()

    async def start() -> None:
        await relay.start()
        await events.start()

    async def stop() -> None:
        await events.stop()
        await relay.stop()

    return Deployable(app=app, start=start, stop=stop)
