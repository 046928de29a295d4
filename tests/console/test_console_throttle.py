"""The sign-in throttle's policy (relaybook.access.throttle.wait): which limit holds an
attempt back, and for how long, from the counters the attempt found."""

from __future__ import annotations

import datetime as dt

import pytest

from relaybook.access.throttle import LIMITS, Attempt, Counter, Counters, wait

NOW = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)
#: a window that started 5 minutes ago: 10 minutes left
ENDS = NOW + dt.timedelta(minutes=10)
NONE = Counter()


def failed(failures: int, last: dt.timedelta = 30 * S) -> Counter:
    """A counter of ``failures`` in the current window, the last admitted ``last`` ago."""
    return Counter(failures, ENDS, NOW - last)


KNOWN = Counter(0, ENDS, NOW - dt.timedelta(days=2), NOW + dt.timedelta(days=28))


@pytest.mark.parametrize(
    ("pair", "email", "address", "total", "expected"),
    [
        # nothing yet, and below every limit
        (NONE, NONE, NONE, NONE, None),
        (failed(4), failed(9), failed(19), failed(199), None),
        # (email, address): refused until the window ends
        (failed(5), failed(5), failed(5), failed(5), ENDS - NOW),
        # one address trying many emails
        (failed(0), failed(0), failed(20), failed(20), ENDS - NOW),
        # many addresses trying many emails
        (failed(0), failed(0), failed(1), failed(200), ENDS - NOW),
        # one email from many addresses: a delay after its last attempt, doubling...
        (NONE, failed(10, 1 * S), failed(1), failed(10), 4 * S),
        (NONE, failed(11, 1 * S), failed(1), failed(11), 9 * S),
        (NONE, failed(13, 1 * S), failed(1), failed(13), 39 * S),
        # ...up to a minute, however many failures
        (NONE, failed(14, 1 * S), failed(1), failed(14), 59 * S),
        (NONE, failed(150, 1 * S), failed(1), failed(150), 59 * S),
        # and none once the delay has passed
        (NONE, failed(10, 6 * S), failed(1), failed(10), None),
        # an address the email signed in from lately: only its own failures count
        (KNOWN, failed(500, 1 * S), failed(500), failed(5000), None),
        (Counter(5, ENDS, NOW, KNOWN.known_until), NONE, NONE, NONE, ENDS - NOW),
        # an address known once, no longer
        (Counter(0, ENDS, None, NOW - S), failed(20, 1 * S), NONE, NONE, 59 * S),
        # the longest of the waits
        (failed(5), failed(20, 1 * S), failed(20), failed(200), ENDS - NOW),
    ],
)
def test_an_attempt_waits_for_the_longest_limit_it_is_over(
    pair: Counter, email: Counter, address: Counter, total: Counter, expected: dt.timedelta | None
) -> None:
    assert wait(Counters(NOW, pair, email, address, total)) == expected


def test_the_limits_let_the_email_be_slowed_only_past_what_one_address_may_try() -> None:
    """The soft limit of an email starts above the hard one of (email, address): the
    failures of one address never slow the owner down elsewhere."""
    assert LIMITS.email_failures > LIMITS.pair_failures
    assert LIMITS.email_max_delay <= dt.timedelta(minutes=1)


def test_counters_are_keyed_by_hashes_and_an_ipv6_subscriber_by_its_64() -> None:
    attempt = Attempt.of(" Jane@Example.org", "2001:db8:1:2:aaaa::1")
    assert attempt == Attempt.of("jane@example.org", "2001:db8:1:2:bbbb::7")
    assert attempt.pair != Attempt.of("jane@example.org", "2001:db8:1:3::1").pair
    assert attempt.email == Attempt.of("jane@example.org", "192.0.2.1").email
    assert all(len(key) == 32 and b"jane" not in key for key in attempt.keys)
    assert len(set(attempt.keys)) == 4
