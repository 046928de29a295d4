"""The dispatcher's port (the tooling binds it; the console's pages are served there
too). The dispatcher itself reads only platform settings."""

from __future__ import annotations

import dataclasses

from relaybook.platform.settings import _port, _setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class DispatcherSettings:
    api_port: int = _setting(_port, 8000, doc="dispatcher API and dashboard")
