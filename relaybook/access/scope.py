"""Whose data an API request may touch: the agencies of its caller, enforced twice.

The routes ask for what they need (a notice by id, the journal with its filters); the
database answers only with rows of the caller's agencies whatever the statement says,
because every connection :class:`ScopedPool` hands out works in a transaction as the
``relaybook_api`` role with the caller's agencies set for that transaction, and
row-level security (migration 0014) filters every table of an agency's data on them. A
query outside a request (no scope set) fails instead of seeing everything.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg

from relaybook.access.auth import Caller
from relaybook.platform.database import Connection

#: the caller of the request being served (set by the API and the console once it is known)
CURRENT: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)

_ENTER = """
SELECT set_config('role', 'relaybook_api', true),
       set_config('relaybook.all_agencies', $1, true),
       set_config('relaybook.agencies', $2::text[]::text, true)
"""


@contextlib.contextmanager
def serving(caller: Caller) -> Iterator[None]:
    """The block's queries (through a :class:`ScopedPool`) see what ``caller`` may."""
    token = CURRENT.set(caller)
    try:
        yield
    finally:
        CURRENT.reset(token)


def current() -> Caller:
    """The caller of the request being served."""
    caller = CURRENT.get()
    if caller is None:
        raise RuntimeError("a query of the API outside a request: no caller, no agencies")
    return caller


class ScopedPool:
    """The API's pool: what asyncpg's pool offers the routes, each connection inside a
    transaction scoped to the current request's caller."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        agencies = current().agencies
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                _ENTER, "on" if agencies is None else "off", sorted(agencies or ())
            )
            yield connection

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as connection:
            return await connection.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as connection:
            return await connection.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as connection:
            return await connection.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as connection:
            return await connection.execute(query, *args)
