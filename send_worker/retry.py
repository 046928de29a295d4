"""Send outcomes and the retry policy, as pure functions.

A provider answer is one of: accepted (with the provider's message id), permanent (fail
the delivery now, with the provider's code and reason) or transient (try again later:
429, 5xx, timeouts, connection errors), after a backoff that grows exponentially with
jitter and never comes before the provider's ``X-RateLimit-Reset``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

from relaybook.platform import storable

BASE_S = 2.0
CAP_S = 600.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one delivery's send."""

    kind: str  # accepted | permanent | transient
    message_id: str | None = None
    code: str | None = None
    reason: str | None = None
    #: the provider's X-RateLimit-Reset (epoch seconds), for a 429
    retry_not_before: float | None = None

    @classmethod
    def accepted(cls, message_id: str) -> Outcome:
        return cls("accepted", message_id=storable.text(message_id))

    @classmethod
    def permanent(cls, code: str, reason: str) -> Outcome:
        # a provider's words go into the journal as they are, less what PostgreSQL
        # cannot store (a NUL would fail the whole wave's outcome)
        return cls("permanent", code=storable.text(code), reason=storable.text(reason[:500]))

    @classmethod
    def transient(cls, reason: str, not_before: float | None = None) -> Outcome:
        return cls("transient", reason=storable.text(reason[:500]), retry_not_before=not_before)


def http_outcome(status: int, reason: str, reset: str | None) -> Outcome:
    """Classifies a provider's HTTP error answer."""
    if status == 429:
        not_before = float(reset) if reset and reset.replace(".", "", 1).isdigit() else None
        return Outcome.transient(f"{status} rate limited: {reason}", not_before)
    if status >= 500:
        return Outcome.transient(f"{status} provider error: {reason}")
    return Outcome.permanent(str(status), reason)


def next_attempt(
    attempts: int, now: dt.datetime, draw: random.Random, not_before: float | None = None
) -> dt.datetime:
    """When to try again after ``attempts`` tries: a random point in the second half of an
    exponential window (2 s, 4 s, 8 s... capped at 10 min), so retries of many deliveries
    spread out, and never before the provider's reset time."""
    window = min(CAP_S, BASE_S * 2 ** max(0, attempts - 1))
    due = now + dt.timedelta(seconds=draw.uniform(window / 2, window))
    if not_before is not None:
        due = max(due, dt.datetime.fromtimestamp(not_before, dt.UTC))
    return due
