"""What a relaybook process stands on, once started: the database's pool, the producer, the
consumers' health checks, the dead letters and the event outbox
(:class:`Infrastructure`); the admin token kept in the data dir; the garbage collector of
a long-running process. Starting it (embedded servers or configured ones, migrations,
topics) is the composition root's: :mod:`relaybook.tooling.infrastructure`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import asyncpg
from starlette.applications import Starlette

from relaybook.platform import database
from relaybook.platform.deadletters import DeadLetters
from relaybook.platform.http import Check, create_app
from relaybook.platform.kafka import Consumer, Producer
from relaybook.platform.logs import get_logger
from relaybook.platform.outbox import Outbox
from relaybook.platform.settings import PlatformSettings

log = get_logger(__name__)

#: the garbage collector's thresholds in a running service (Python's: 700, 10, 10)
GC_THRESHOLDS = (20_000, 20, 20)


@dataclasses.dataclass
class Infrastructure:
    """What the services of one process share. ``settings`` has the embedded servers' URLs
    filled in, so services never need to know whether they are embedded. It holds every
    setting (the composition root's ``Settings``); an app reads its own fragment through
    :func:`relaybook.platform.settings.section`."""

    settings: PlatformSettings
    pool: asyncpg.Pool
    producer: Producer
    embedded: list[str]

    async def check_database(self) -> None:
        """Ready when the database answers and its schema is at least the one this code
        expects. A newer schema is fine (migrations only add): during a rolling deploy the
        new release migrates while the old pods still serve, and a rollback runs on it."""
        version = await self.pool.fetchval("SELECT max(version) FROM schema_migrations")
        expected = database.newest_version()
        if version is None or version < expected:
            raise database.DatabaseError(
                f"schema at migration {version or 0}, the code needs {expected}: "
                "run `relaybook migrate`"
            )
        if version > expected:
            database.note_newer(version)

    async def check_broker(self) -> None:
        await self.producer.ping()

    def consumer_app(self, service: str, consumers: Iterable[Consumer]) -> Starlette:
        """``/healthz``, ``/readyz`` and ``/metrics`` of a deployable that consumes: ready
        once PostgreSQL and Kafka answer and each consumer has joined its group."""
        checks: dict[str, Check] = {"database": self.check_database, "broker": self.check_broker}
        checks |= {f"group {consumer.group}": consumer.check_joined for consumer in consumers}
        return create_app(service, routes=[], checks=checks)

    def dead_letters(self) -> DeadLetters:
        """Where this process's consumers set aside what they cannot handle."""
        return DeadLetters(self.pool, self.producer, self.settings.topic("dead-letters"))

    def events_outbox(self) -> Outbox:
        """The event outbox of this process's services, with the configured retention."""
        days = self.settings.outbox_retention_days
        return Outbox(self.pool, self.producer, retention=dt.timedelta(days=days) if days else None)


def admin_token_path(settings: PlatformSettings) -> Path:
    """Where the generated admin token is kept (when RELAYBOOK_ADMIN_TOKEN is unset)."""
    return Path(settings.data_dir) / "admin-token"


def admin_token(settings: PlatformSettings) -> str:
    """The configured admin token, else the one generated on first start and kept in the
    data dir (readable by its owner only)."""
    if settings.admin_token:
        return settings.admin_token
    path = admin_token_path(settings)
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


def settle_garbage_collector() -> None:
    """Tunes the garbage collector of a long-running process, once started. Each batch
    makes and drops tens of thousands of objects: with Python's thresholds, a send worker
    sending 100,000 emails collected 2,500 times, 19 of them through every object the
    process holds (80 ms each): 1.9 s in all, of 12 s. What exists once the process is
    started (modules, clients) is now out of the collector's sight for good, and it
    collects 40 times less often: 0.3 s for the same emails.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
