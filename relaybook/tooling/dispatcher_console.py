"""The dispatcher deployable as it runs: the API, with the console's pages served beside
it on the same port (``/ui/...``). Neither app imports the other: they meet here, in
the composition root."""

from __future__ import annotations

from starlette.routing import BaseRoute

import console.app
import dispatcher.app
from console.live import Announcements
from relaybook.access.people import People
from relaybook.access.settings import AccessSettings
from relaybook.platform.deployable import Deployable
from relaybook.platform.runtime import Infrastructure
from relaybook.platform.settings import section


def build(infra: Infrastructure) -> Deployable:
    settings = infra.settings
    assert settings.database_url is not None
    announcements = Announcements(settings.database_url)

    def pages(stores: dispatcher.app.Stores) -> list[BaseRoute]:
        return console.app.routes(
            infra.pool,
            stores.scoped,
            announcements,
            stores.notices,
            stores.journal,
            stores.preferences,
            stores.resends,
            People(infra.pool),
            sessions=section(settings, AccessSettings),
            https=settings.https,
        )

    api = dispatcher.app.build(infra, pages=pages)

    async def stop() -> None:
        await announcements.close()
        await api.stop()

    return Deployable(app=api.app, start=api.start, stop=stop)
