"""What a deployable hands the process that runs it."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp


async def _nothing() -> None:
    return None


@dataclasses.dataclass(frozen=True)
class Deployable:
    """An HTTP app (or None for a consumer-only deployable) and its background work."""

    app: ASGIApp | None
    start: Callable[[], Awaitable[None]] = _nothing
    stop: Callable[[], Awaitable[None]] = _nothing
