"""Live pages: the deliveries a statement writes announce their notices on the
``relaybook_notice`` channel (migration 0017); one connection per process listens, and
hands each announcement to the pages of that notice open in a browser, as server-sent
events. Nobody watching, nobody listening: the connection opens with the first page and
closes with the last."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg

from relaybook.logs import get_logger

log = get_logger(__name__)

CHANNEL = "relaybook_notice"
#: a comment line this often keeps proxies from closing a quiet stream, and tells us the
#: browser left
HEARTBEAT_S = 15.0


class Announcements:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._watchers: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._connection: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def watch(self, notice_id: uuid.UUID) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the notice's deliveries change (clear it once handled)."""
        event = asyncio.Event()
        self._watchers.setdefault(notice_id, set()).add(event)
        try:
            await self.listen()
            yield event
        finally:
            watchers = self._watchers.get(notice_id, set())
            watchers.discard(event)
            if not watchers:
                self._watchers.pop(notice_id, None)
            if not self._watchers:
                await self.close()

    async def listen(self) -> None:
        """Listens, unless this process does already (again after a lost connection)."""
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed():
                return
            connection = await asyncpg.connect(self._dsn)
            await connection.add_listener(CHANNEL, self._announced)
            connection.add_termination_listener(self._lost)
            self._connection = connection

    def _announced(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            notice_id = uuid.UUID(str(payload))
        except ValueError:
            return
        for event in self._watchers.get(notice_id, ()):
            event.set()

    def _lost(self, _connection: object) -> None:
        # the pages watching see a change (they fetch again, and find out whether the
        # database is back); the next watch connects again
        log.warning("live updates: the listening connection was lost")
        self._connection = None
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()

    async def close(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None and not connection.is_closed():
                await connection.close()


async def stream(announcements: Announcements, notice_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The server-sent events of one notice's page: ``changed`` whenever its deliveries
    change, a heartbeat comment otherwise."""
    yield b"retry: 3000\n\n"
    async with announcements.watch(notice_id) as changed:
        while True:
            try:
                await asyncio.wait_for(changed.wait(), HEARTBEAT_S)
            except TimeoutError:
                yield b": still here\n\n"
                continue
            changed.clear()
            await announcements.listen()
            yield b"event: changed\ndata: \n\n"
            await asyncio.sleep(0.5)  # a burst of statements is one refresh
