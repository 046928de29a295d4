"""The console's sign-in throttle: how many wrong passwords an email, a client address and
everyone together may try, and how that is counted (migration 0021).

Every attempt is counted *before* its password is checked, under the row locks of its
counters (:meth:`Throttle.admit`): of a burst of concurrent attempts, only as many as the
limits allow are judged, the others are refused without looking at the password. An
attempt counts as a failure from then on, until its password proves right.

The limits (:class:`Limits`, one window of :attr:`Limits.window`):

- per (email, address), hard: the attacker's own address is refused (429) for the rest
  of the window; the person's sign-in forgets these failures;
- per address across emails, hard: one address trying many emails;
- in total, hard: many addresses trying many emails;
- per email across addresses, soft: past a few failures, each attempt must wait a delay
  after the last one judged, doubling up to a minute. A hard limit here would let anyone
  who knows an email lock its owner out for as long as they keep trying.

An address the email signed in from in the last :attr:`Limits.known` is *known*: only
its own (email, address) limit applies to it. The owner at their usual address is never
held up by others' failures, wherever those come from.

Counters are keyed by SHA-256 hashes: the table never holds an email nor an address.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import ipaddress
import json

import asyncpg

from relaybook.platform import sql

Q = sql.load("relaybook.access", "sessions.sql")


@dataclasses.dataclass(frozen=True)
class Limits:
    """The throttle's numbers, in one place."""

    #: failures are counted over a window this long, which starts at the first one
    window: dt.timedelta = dt.timedelta(minutes=15)
    #: failures of one email from one address before that pair is refused
    pair_failures: int = 5
    #: failures from one address, whatever the emails, before it is refused
    address_failures: int = 20
    #: failures from everywhere before every address not known is refused
    total_failures: int = 200
    #: failures of one email, from anywhere, before each attempt must wait a delay
    email_failures: int = 10
    #: the first delay, doubled at each failure after
    email_first_delay: dt.timedelta = dt.timedelta(seconds=5)
    #: the longest delay
    email_max_delay: dt.timedelta = dt.timedelta(seconds=60)
    #: how long an address stays known after a sign-in from it
    known: dt.timedelta = dt.timedelta(days=30)


LIMITS = Limits()


@dataclasses.dataclass(frozen=True)
class Counter:
    """One counter as an attempt finds it."""

    failures: int = 0
    #: when the window ends (the failures are forgotten then)
    window_ends: dt.datetime | None = None
    #: when the last attempt was admitted
    last_at: dt.datetime | None = None
    #: (email, address) counters: until when the address is known for the email
    known_until: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Counters:
    """An attempt's four counters, and the time it is judged at."""

    now: dt.datetime
    pair: Counter
    email: Counter
    address: Counter
    total: Counter


def wait(counters: Counters, limits: Limits = LIMITS) -> dt.timedelta | None:
    """How long the attempt must wait before it may be judged; None: judge it now."""
    now = counters.now
    waits = []

    def until_window_ends(counter: Counter, limit: int) -> None:
        if counter.failures >= limit and counter.window_ends is not None:
            waits.append(counter.window_ends - now)

    until_window_ends(counters.pair, limits.pair_failures)
    known = counters.pair.known_until is not None and counters.pair.known_until > now
    if not known:
        until_window_ends(counters.address, limits.address_failures)
        until_window_ends(counters.total, limits.total_failures)
        over = counters.email.failures - limits.email_failures
        if over >= 0 and counters.email.last_at is not None:
            delay = min(limits.email_max_delay, limits.email_first_delay * 2 ** min(over, 20))
            waits.append(counters.email.last_at + delay - now)
    longest = max(waits, default=dt.timedelta(0))
    return longest if longest > dt.timedelta(0) else None


def _key(kind: str, *parts: str) -> bytes:
    return hashlib.sha256(json.dumps([kind, *parts]).encode()).digest()


def _network(address: str | None) -> str:
    """What an address is counted as: itself for IPv4, its /64 for IPv6 (one subscriber
    commonly holds a whole /64)."""
    if not address:
        return ""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """The keys of one attempt's counters."""

    pair: bytes
    email: bytes
    address: bytes
    total: bytes

    @classmethod
    def of(cls, email: str, address: str | None) -> Attempt:
        email = email.strip().lower()
        network = _network(address)
        return cls(
            _key("pair", email, network), _key("email", email), _key("address", network),
            _key("total"),
        )  # fmt: skip

    @property
    def keys(self) -> list[bytes]:
        return [self.pair, self.email, self.address, self.total]


class Throttle:
    def __init__(self, pool: asyncpg.Pool, limits: Limits = LIMITS) -> None:
        self._pool = pool
        self.limits = limits

    async def admit(self, attempt: Attempt) -> dt.timedelta | None:
        """Counts the attempt as a failure and returns None if it may be judged now, or
        how long it must wait (then it is not counted). Concurrent attempts on a counter
        wait for each other: each sees those before it."""
        window = self.limits.window
        async with self._pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(Q["sign_in_counters"], sorted(attempt.keys), window)
            found = {row["key"]: row for row in rows}

            def counter(key: bytes) -> Counter:
                row = found[key]
                return Counter(
                    row["failures"], row["window_ends"], row["last_at"], row["known_until"]
                )

            counters = Counters(
                rows[0]["now"], counter(attempt.pair), counter(attempt.email),
                counter(attempt.address), counter(attempt.total),
            )  # fmt: skip
            waiting = wait(counters, self.limits)
            if waiting is None:
                await connection.execute(Q["sign_in_admitted"], attempt.keys)
        await self._pool.execute(Q["forget_sign_in_counters"], window)
        return waiting

    async def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the attempt was no failure after all. Forgets the
        failures of its (email, address), which becomes known."""
        others = [attempt.email, attempt.address, attempt.total]
        window = self.limits.window
        async with self._pool.acquire() as connection, connection.transaction():
            # locked in the order every attempt locks them: no deadlock with one
            await connection.fetch(Q["sign_in_counters"], sorted(attempt.keys), window)
            await connection.execute(
                Q["sign_in_succeeded"], attempt.pair, others, self.limits.known
            )
