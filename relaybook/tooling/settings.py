"""The composition root's settings: :class:`Settings`, every owner's fragment in one
frozen dataclass, read from ``RELAYBOOK_*`` variables by :func:`load`; and the settings
of what only the tooling runs (the embedded servers).

Each fragment is declared beside its owner (``relaybook/platform/settings.py``,
``relaybook/reachability/settings.py``, ``send_worker/settings.py``...), with the
machinery of :mod:`relaybook.platform.settings`; ``relaybook settings`` lists them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bounce_policy.settings import BouncePolicySettings
from dispatcher.settings import DispatcherSettings
from provider_sandbox.settings import SandboxSettings
from relaybook.access.settings import AccessSettings
from relaybook.platform import settings as machinery
from relaybook.platform.settings import (
    Documented,
    PlatformSettings,
    SettingsError,
    _choice,
    _int,
    _port_or_zero,
    _setting,
    env_name,
)
from relaybook.reachability.settings import BounceSettings
from send_worker.settings import WorkerSettings
from tracker.settings import TrackerSettings
from webhook_ingest.settings import IngestSettings


def _kafka_nodes(raw: str) -> int:
    value = _int(raw)
    if value not in {1, 3}:
        raise ValueError("must be 1 or 3")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbeddedSettings:
    """The embedded servers `up` and `demo` start when the database or broker is unset."""

    broker_port: int = _setting(_port_or_zero, 0, doc="embedded broker port; 0 picks a free one")
    embedded_broker: str = _setting(
        _choice("tansu", "kafka"),
        "tansu",
        doc="embedded broker of `up`: tansu (in memory) or kafka (Apache Kafka, needs Java"
        " 17+ and Maven)",
    )
    embedded_kafka_nodes: int = _setting(
        _kafka_nodes, 1, doc="nodes of the embedded Apache Kafka: 1, or 3 (replication 3)"
    )


#: the settings of the ports the deployables serve on
PORTS = ("api_port", "ingest_port", "sandbox_port", "worker_port", "tracker_port",
         "bounce_policy_port")  # fmt: skip


# A dataclass orders its fields from its last base to its first: the bases are listed
# top-down (tooling, apps, domain, platform) so that the platform's settings come first.
@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings(
    EmbeddedSettings,
    DispatcherSettings,
    TrackerSettings,
    BouncePolicySettings,
    SandboxSettings,
    IngestSettings,
    WorkerSettings,
    AccessSettings,
    BounceSettings,
    PlatformSettings,
):
    """Everything a relaybook process is configured with: every owner's fragment."""

    def check(self) -> None:
        """No two deployables on one port."""
        seen: dict[int, str] = {}
        for name in PORTS:
            variable, port = env_name(name), getattr(self, name)
            if port in seen:
                raise SettingsError(f"{variable}={port}: the same port as {seen[port]}")
            seen[port] = variable


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """:class:`Settings` from ``environ`` (default: the process environment), checked:
    :func:`relaybook.platform.settings.load`."""
    return machinery.load(Settings, environ, **overrides)


def documented() -> list[Documented]:
    """Every setting: variable, default, meaning and the package declaring it."""
    return machinery.documented(Settings)
