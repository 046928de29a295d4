"""The console's notices pages (being built: a placeholder list for now)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute

from dispatcher.console import i18n
from dispatcher.console.web import Console, View

i18n.french({"Notices": "Avis"})


def routes(console: Console, *stores: Any) -> list[BaseRoute]:
    async def listing(view: View) -> Response:
        return view.render("notices.html")

    return [console.page("/ui/notices", listing)]
