"""The console's preferences pages (being built)."""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from dispatcher.console.web import Console


def routes(console: Console, *stores: Any) -> list[BaseRoute]:
    return []
