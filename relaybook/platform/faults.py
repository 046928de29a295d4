"""Which failures pass by themselves and which never will: the one rule every consumer
loop, background task and HTTP route of relaybook sorts its errors by.

*Transient*: a server is away or busy (connection lost or refused, timeouts, too many
connections, shutdown, serialization failure, deadlock, the broker unavailable). Trying
the same work again later succeeds, so consumers retry with backoff and the API answers
503 with ``Retry-After``.

*Permanent*: anything else: data PostgreSQL refuses (a NUL in a text, a constraint), a
message that breaks its contract, a bug in a handler. Trying again fails the same way,
so a consumer isolates the message that causes it and moves it to the dead letters,
and the API answers a 4xx for input it should have refused (a 500 is a bug).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

#: SQLSTATE classes of a server away or busy: connection exception, insufficient
#: resources, operator intervention (shutdown, cannot connect now, statement timeout),
#: system error, and transaction rollback (serialization failure, deadlock)
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58", "40"})
#: lock not available, object in use
_TRANSIENT_SQLSTATES = frozenset({"55P03", "55006"})


class UnavailableError(RuntimeError):
    """A server relaybook depends on cannot be used now; trying again later will do."""


def is_transient(problem: BaseException) -> bool:
    """True when ``problem`` (or what caused it) comes from a server being away or busy."""
    seen: set[int] = set()
    current: BaseException | None = problem
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_itself(current):
            return True
        current = current.__cause__
    return False


def _transient_itself(problem: BaseException) -> bool:
    if isinstance(problem, UnavailableError | KafkaError | OSError | TimeoutError):
        return True
    if isinstance(problem, asyncpg.PostgresError):
        state = problem.sqlstate or ""
        return state[:2] in _TRANSIENT_SQLSTATE_CLASSES or state in _TRANSIENT_SQLSTATES
    # asyncpg's own client errors: "connection is closed", "pool is closing", and the
    # protocol's state errors when a connection broke mid-statement ("cannot switch to
    # state"); InterfaceError's subclasses are about the call itself (an argument it
    # cannot encode): permanent
    return type(problem) in (asyncpg.InterfaceError, asyncpg.InternalClientError)


def reason(problem: BaseException) -> str:
    """A short, bounded label for metrics: what kind of permanent failure this is."""
    if isinstance(problem, asyncpg.PostgresError):
        state = problem.sqlstate or ""
        if state.startswith("22"):
            return "data_error"
        if state.startswith("23"):
            return "constraint_violation"
        return "database_error"
    if isinstance(problem, UnicodeError):
        return "encoding_error"
    if isinstance(problem, asyncpg.InterfaceError):
        return "data_error"
    return "handler_error"


def report_retried(logger: Any, event: str, problem: BaseException, **context: Any) -> None:
    """Logs the failure of a background step that will be tried again (the outbox relay,
    the event outbox's catch-up): a warning naming the cause when it is transient (it
    passes with the server's return), an error with its traceback otherwise (a bug, but
    one that must not end the loop: a loop that dies stops publishing in silence)."""
    if is_transient(problem):
        logger.warning(event, error=f"{type(problem).__name__}: {str(problem)[:300]}", **context)
    else:
        logger.error(event, exc_info=problem, **context)
