"""The bounce policy deployable's settings: its port. Its thresholds are the
reachability domain's (:class:`relaybook.reachability.settings.BounceSettings`)."""

from __future__ import annotations

import dataclasses

from relaybook.platform.settings import _port, _setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class BouncePolicySettings:
    bounce_policy_port: int = _setting(
        _port, 8004, doc="bounce policy's health, readiness and metrics"
    )
