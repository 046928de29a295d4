"""The console's sessions, kept on the server: the browser holds an opaque random cookie,
the database only its SHA-256 (migration 0017). Each request reads the person again, so
disabling them, or changing their role or agencies, applies from their next click.

A session ends when its person signs out or is disabled, after ``idle`` without a
request, or ``lifetime`` after signing in whatever happens: settings of
:mod:`relaybook.access.settings` (``RELAYBOOK_CONSOLE_SESSION_IDLE_MINUTES``, 30, and
``RELAYBOOK_CONSOLE_SESSION_LIFETIME_HOURS``, 12). Wrong passwords are throttled by
:mod:`relaybook.access.throttle`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
import uuid

import asyncpg

from relaybook.access.auth import Caller
from relaybook.access.people import ROLES
from relaybook.access.settings import AccessSettings
from relaybook.platform import sql

Q = sql.load("relaybook.access", "sessions.sql")


@dataclasses.dataclass(frozen=True)
class Session:
    """A signed-in person, as of this request."""

    token_hash: bytes
    person: Caller
    #: the token every change made in this session must carry
    csrf: str
    #: the agency the person picked to work on (None: every agency they may see)
    agency: str | None
    time_zone: str
    role: str

    @property
    def caller(self) -> Caller:
        """The person, narrowed to the agency they picked: what the pages may see."""
        if self.agency is None:
            return self.person
        return dataclasses.replace(self.person, agencies=frozenset({self.agency}))


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Sessions:
    def __init__(self, pool: asyncpg.Pool, settings: AccessSettings | None = None) -> None:
        """``settings``: the sessions' lengths (default: the settings' defaults)."""
        settings = settings or AccessSettings()
        self._pool = pool
        self.idle: dt.timedelta = settings.session_idle
        self.lifetime: dt.timedelta = settings.session_lifetime

    async def open(self, person_id: uuid.UUID, time_zone: str) -> str:
        """A new session for that person; returns its cookie (shown only now). Also
        forgets expired sessions."""
        token = secrets.token_urlsafe(32)
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(Q["forget_expired_sessions"], self.idle)
            await connection.execute(
                Q["open_session"],
                _hash(token),
                person_id,
                secrets.token_urlsafe(32),
                time_zone,
                self.lifetime,
            )
        return token

    async def find(self, token: str) -> Session | None:
        """The live session of that cookie (and marks it seen), or None."""
        if not token or len(token) > 100:
            return None
        row = await self._pool.fetchrow(Q["find_session"], _hash(token), self.idle)
        if row is None:
            return None
        agencies = row["agencies"]
        person = Caller(
            row["email"],
            ROLES[row["role"]],
            None if agencies is None else frozenset(agencies),
            frozenset({row["role"]}),
            row["id"],
        )
        agency = row["agency"]
        if agency is not None and not person.sees(agency):
            agency = None  # their agencies changed since they picked it
        return Session(_hash(token), person, row["csrf"], agency, row["time_zone"], row["role"])

    async def alive(self, token_hash: bytes) -> bool:
        """Whether the session of that hash still holds (as :meth:`find` would find it),
        without marking it seen: what a live stream asks, which is no request of its
        person's."""
        held: bool = await self._pool.fetchval(Q["session_alive"], token_hash, self.idle)
        return held

    async def pick_agency(self, session: Session, agency: str | None) -> None:
        await self._pool.execute(Q["pick_agency"], session.token_hash, agency)

    async def close(self, session: Session) -> None:
        await self._pool.execute(Q["close_session"], session.token_hash)
