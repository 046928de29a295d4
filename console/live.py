"""Live pages: the deliveries a statement writes announce their notices on the
``relaybook_notice`` channel (migration 0017); one connection per process listens, and
hands each announcement to the pages of that notice open in a browser, as server-sent
events. Nobody watching, nobody listening: the connection opens with the first page and
closes with the last.

A stream lives no longer than its session: every :data:`SESSION_CHECK_S` it asks whether
the session still holds (not signed out, its person not disabled, not expired; without
marking it seen: a stream open in a forgotten tab is no activity of its person's), and
ends otherwise. A session holds at most :data:`STREAMS_PER_SESSION` streams in a process;
the next one is refused (429) rather than the oldest closed: a closed stream's page
reconnects a few seconds later, which would close the next oldest, and the tabs would
take turns for ever, while refusing leaves the pages already live as they are.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from console.i18n import N_
from console.web import View
from relaybook.platform.faults import is_transient
from relaybook.platform.logs import get_logger

log = get_logger(__name__)

CHANNEL = "relaybook_notice"
#: a comment line this often keeps proxies from closing a quiet stream, and tells us the
#: browser left
HEARTBEAT_S = 15.0
#: how often a stream checks that its session still holds: it ends at most this long
#: after the session did (and the database's answer)
SESSION_CHECK_S = 5.0
#: streams a session may hold at once in one process (a few tabs of notices)
STREAMS_PER_SESSION = 4
#: what a refused stream is told to wait: a tab closed behind a proxy is noticed at the
#: next heartbeat at worst
REFUSED_RETRY_S = int(HEARTBEAT_S)


class Announcements:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._watchers: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._connection: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        #: the streams open, by session (the hash of its cookie)
        self._streams: collections.Counter[bytes] = collections.Counter()

    def hold(self, session: bytes) -> Callable[[], None] | None:
        """Takes one of the session's places for a stream: returns what gives it back
        (once), or None when the session holds :data:`STREAMS_PER_SESSION` already."""
        if self._streams[session] >= STREAMS_PER_SESSION:
            return None
        self._streams[session] += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self._streams[session] -= 1
                if self._streams[session] <= 0:
                    del self._streams[session]

        return give_back

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


def response(announcements: Announcements, view: View, notice_id: uuid.UUID) -> Response:
    """The live stream of a notice's page, for the session of ``view``; 429 when that
    session holds its :data:`STREAMS_PER_SESSION` already."""
    give_back = announcements.hold(view.session.token_hash)
    if give_back is None:
        refused = view.console.error_page(
            view.request, view, 429,
            N_("This notice is open in too many tabs: close one to see live updates here."),
        )  # fmt: skip
        refused.headers["Retry-After"] = str(REFUSED_RETRY_S)
        return refused
    sessions, token_hash = view.console.sessions, view.session.token_hash

    async def alive() -> bool:
        return await sessions.alive(token_hash)

    return _Stream(stream(announcements, notice_id, alive), give_back)


class _Stream(StreamingResponse):
    """Server-sent events that give their session's place back however they end (the
    browser gone, the session ended, the server stopping), its events begun or not."""

    def __init__(self, content: AsyncIterator[bytes], give_back: Callable[[], None]) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
        )
        self._give_back = give_back

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._give_back()


async def stream(
    announcements: Announcements, notice_id: uuid.UUID, alive: Callable[[], Awaitable[bool]]
) -> AsyncIterator[bytes]:
    """The server-sent events of one notice's page: ``changed`` whenever its deliveries
    change, a heartbeat comment otherwise; ``ended``, and the end of the stream, once
    ``alive`` says no (asked every :data:`SESSION_CHECK_S`)."""
    clock = asyncio.get_running_loop().time
    yield b"retry: 3000\n\n"
    async with announcements.watch(notice_id) as changed:
        check_at, beat_at = clock() + SESSION_CHECK_S, clock() + HEARTBEAT_S
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(0.0, min(check_at, beat_at) - clock()))
            if clock() >= check_at:
                if not await _holds(alive):
                    yield b"event: ended\ndata: \n\n"
                    return
                check_at = clock() + SESSION_CHECK_S
            if changed.is_set():
                changed.clear()
                await announcements.listen()
                yield b"event: changed\ndata: \n\n"
                beat_at = clock() + HEARTBEAT_S
                await asyncio.sleep(0.5)  # a burst of statements is one refresh
            elif clock() >= beat_at:
                yield b": still here\n\n"
                beat_at = clock() + HEARTBEAT_S


async def _holds(alive: Callable[[], Awaitable[bool]]) -> bool:
    """Whether the session holds; not when the database cannot say (the page's next
    request finds out, and the browser reconnects once it may)."""
    try:
        return await alive()
    except Exception as problem:
        if not is_transient(problem):
            raise
        log.warning("live updates: the session could not be checked", error=type(problem).__name__)
        return False
