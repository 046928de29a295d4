"""The journal tracker's settings: its port, and how many transactions it runs at once."""

from __future__ import annotations

import dataclasses

from relaybook.platform.settings import _port, _positive_int, _setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackerSettings:
    tracker_port: int = _setting(_port, 8003, doc="journal tracker's health, readiness and metrics")
    tracker_lanes: int = _setting(
        _positive_int,
        3,
        doc="transactions a journal tracker runs at once on its batch, each on a database "
        "connection of its own: more of PostgreSQL's cores for a backlog",
    )
