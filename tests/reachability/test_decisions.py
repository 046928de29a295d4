"""The policy against the real database: thresholds, windows, the reset by a success,
duplicates and replays counted once, a batch failing half-way leaving nothing, shared
addresses, a new address's clean slate, and failures that are the sender's."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from relaybook.platform import database
from relaybook.platform.kafka import Record
from relaybook.reachability import decisions
from relaybook.reachability.decisions import BouncePolicy
from relaybook.reachability.policy import Policy
from relaybook.tooling.settings import Settings
from tests.support import SHOWN, shown

_ids = itertools.count()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await database.create_pool(database_url, max_size=4)
    await created.execute(
        "INSERT INTO recipients (id, email, phone) VALUES "
        "('ann', 'ann@example.org', '+33611111111'), "
        "('bob', 'Ann@Example.org', NULL), "  # shares Ann's address, spelt differently
        "('cid', 'cid@example.org', '+33622222222')"
    )
    yield created
    await created.close()


@pytest.fixture
def policy(pool: asyncpg.Pool) -> BouncePolicy:
    return BouncePolicy(pool, Policy.from_settings(Settings()))


def event(
    kind: str, address: str = "ann@example.org", days_ago: float = 0, **fields: Any
) -> Record:
    channel = "sms" if address.startswith("+") else "email"
    when = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    value = {
        "schema": "delivery-event/v1",
        "event_id": f"test:{next(_ids)}",
        "type": kind,
        "channel": channel,
        "provider": "sendgrid" if channel == "email" else "twilio",
        "occurred_at": when.isoformat(),
        "received_at": when.isoformat(),
        "address": address,
        **fields,
    }
    return Record("delivery-events", 0, 0, None, value)


def hard(address: str = "ann@example.org", days_ago: float = 0) -> Record:
    return event(
        "bounced",
        address,
        days_ago,
        provider_code="5.1.1",
        bounce_type="bounce",
        bounce_classification="invalid address",
    )


async def wants(pool: asyncpg.Pool, recipient: str, channel: str = "email") -> tuple[str, str]:
    """The preference as shown, and obeyed: the contact rule's."""
    return await shown(pool, recipient, channel)


async def suppressed(pool: asyncpg.Pool, address: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT rule FROM suppressions WHERE lower(address) = lower($1) AND lifted_at IS NULL",
        address,
    )
    return [row["rule"] for row in rows]


async def test_three_hard_bounces_unsubscribe_every_recipient_of_the_address(
    pool: asyncpg.Pool, policy: BouncePolicy
) -> None:
    await policy.handle([hard(), hard()])
    assert await wants(pool, "ann") == ("yes", "default")

    await policy.handle([hard("ANN@example.org")])

    assert await wants(pool, "ann") == ("no", "automatic")
    assert await wants(pool, "bob") == ("no", "automatic")
    assert await wants(pool, "ann", "sms") == ("yes", "default")  # the other channel stays
    assert await suppressed(pool, "ann@example.org") == ["hard_bounces"]
    assert await pool.fetchval("SELECT expires_at FROM suppressions") is None  # until lifted
    reason = (await pool.fetchrow(SHOWN, "ann", "email", "default"))["reason"]
    assert reason.startswith("3 hard failures in 30 days (last: hard bounce 5.1.1")
    audit = await pool.fetch("SELECT subject_id, action, details FROM audit_log ORDER BY id")
    assert {row["subject_id"] for row in audit} == {"ann", "bob"}
    assert {row["action"] for row in audit} == {"unsubscribe_hard_bounces"}
    evidence = json.loads(audit[0]["details"])["evidence"]
    assert len(evidence) == 3
    assert {e["provider_code"] for e in evidence} == {"5.1.1"}
    announced = await pool.fetch("SELECT key, payload FROM outbox WHERE topic = 'recipient-events'")
    assert {row["key"] for row in announced} == {"ann", "bob"}
    assert json.loads(announced[0]["payload"])["type"] == "recipient.unsubscribed"


async def test_the_same_event_twice_or_replayed_counts_once(
    pool: asyncpg.Pool, policy: BouncePolicy
) -> None:
    first, second = hard(), hard()
    await policy.handle([first, first, second])
    await policy.handle([first, second])  # the batch again, after a crash before the commit
    assert await wants(pool, "ann") == ("yes", "default")
    assert await pool.fetchval("SELECT count(*) FROM address_events") == 2


async def test_a_batch_failing_half_way_counts_nothing_and_once_when_it_comes_again(
    pool: asyncpg.Pool, policy: BouncePolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = [hard(), hard(), hard()]

    async def crash(*_args: Any) -> None:
        raise ConnectionError("killed mid-batch")

    monkeypatch.setattr(decisions, "_unsubscribe", crash)
    with pytest.raises(ConnectionError):
        await policy.handle(batch)
    assert await pool.fetchval("SELECT count(*) FROM address_events") == 0

    monkeypatch.undo()
    await policy.handle(batch)
    await policy.handle(batch)
    assert await wants(pool, "ann") == ("no", "automatic")
    assert await pool.fetchval("SELECT count(*) FROM suppressions") == 1
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 2  # ann and bob, once


async def test_hard_bounces_older_than_the_window_do_not_count(
    pool: asyncpg.Pool, policy: BouncePolicy
) -> None:
    await policy.handle([hard(days_ago=40), hard(days_ago=35), hard()])
    assert await wants(pool, "ann") == ("yes", "default")


async def test_a_success_resets_the_soft_count(pool: asyncpg.Pool, policy: BouncePolicy) -> None:
    full = {"provider_code": "5.2.2", "bounce_type": "bounce"}
    await policy.handle([event("bounced", days_ago=3 - i / 10, **full) for i in range(4)])
    await policy.handle([event("delivered", days_ago=1)])
    await policy.handle([event("bounced", **full) for _ in range(4)])
    assert await wants(pool, "ann") == ("yes", "default")  # 4 since the success, not 8

    await policy.handle([event("bounced", **full)])
    assert await wants(pool, "ann") == ("no", "automatic")
    assert await suppressed(pool, "ann@example.org") == ["soft_bounces"]


async def test_sender_side_blocks_never_count(pool: asyncpg.Pool, policy: BouncePolicy) -> None:
    blocked = {
        "provider_code": "5.7.1",
        "bounce_type": "blocked",
        "bounce_classification": "reputation",
    }
    await policy.handle([event("bounced", **blocked) for _ in range(10)])
    await policy.handle([event("failed", "+33611111111", provider_code="30007") for _ in range(10)])
    assert await wants(pool, "ann") == ("yes", "default")
    assert await wants(pool, "ann", "sms") == ("yes", "default")
    kinds = await pool.fetch("SELECT DISTINCT kind FROM address_events")
    assert [row["kind"] for row in kinds] == ["sender_side"]  # recorded all the same


async def test_a_complaint_or_a_provider_suppression_acts_at_once(
    pool: asyncpg.Pool, policy: BouncePolicy
) -> None:
    await policy.handle([event("spam_reported")])
    assert await wants(pool, "ann") == ("no", "owner")  # the owner's own word: theirs to lift
    await policy.handle([event("dropped", "cid@example.org", reason="Bounced Address")])
    assert await suppressed(pool, "cid@example.org") == ["provider_suppressed"]


async def test_stop_and_start_are_the_owners_own(pool: asyncpg.Pool, policy: BouncePolicy) -> None:
    await pool.execute("UPDATE recipients SET never_auto_unsubscribe = true WHERE id = 'ann'")
    await policy.handle([event("opted_out", "+33611111111", reason="replied STOP")])
    assert await wants(pool, "ann", "sms") == ("no", "owner")  # the flag does not override
    assert await suppressed(pool, "+33611111111") == ["opt_out"]

    await policy.handle([event("opted_in", "+33611111111", reason="replied START")])
    assert await wants(pool, "ann", "sms") == ("yes", "owner")
    assert await suppressed(pool, "+33611111111") == []


async def test_never_auto_unsubscribe_keeps_the_preference(
    pool: asyncpg.Pool, policy: BouncePolicy
) -> None:
    await pool.execute("UPDATE recipients SET never_auto_unsubscribe = true WHERE id = 'ann'")
    await policy.handle([hard(), hard(), hard()])
    assert await wants(pool, "ann") == ("yes", "default")
    assert await wants(pool, "bob") == ("no", "automatic")


async def test_a_new_address_starts_with_a_clean_slate(
    pool: asyncpg.Pool, policy: BouncePolicy
) -> None:
    await policy.handle([hard("cid@example.org"), hard("cid@example.org")])
    await pool.execute("UPDATE recipients SET email = 'cid@new.example.org' WHERE id = 'cid'")
    await policy.handle([hard("cid@new.example.org")])
    assert await wants(pool, "cid") == ("yes", "default")


async def test_thresholds_and_windows_are_settings(pool: asyncpg.Pool) -> None:
    strict = Policy.from_settings(
        dataclasses.replace(Settings(), bounce_email_hard_threshold=1, bounce_sms_hard_threshold=1)
    )
    await BouncePolicy(pool, strict).handle(
        [hard("cid@example.org"), event("undelivered", "+33622222222", provider_code="30005")]
    )
    assert await wants(pool, "cid") == ("no", "automatic")
    assert await wants(pool, "cid", "sms") == ("no", "automatic")


async def test_an_unsubscribe_for_soft_failures_expires_with_a_clean_slate(
    pool: asyncpg.Pool, policy: BouncePolicy
) -> None:
    full = {"provider_code": "5.2.2", "bounce_type": "bounce"}
    await policy.handle([event("bounced", **full) for _ in range(5)])
    assert await wants(pool, "ann") == ("no", "automatic")
    expires = await pool.fetchval("SELECT expires_at FROM suppressions")
    assert dt.timedelta(days=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    assert await policy.expire() == 0  # not yet

    await pool.execute("UPDATE suppressions SET expires_at = now() - interval '1 second'")
    assert await policy.expire() == 1
    assert await wants(pool, "ann") == ("yes", "default")
    assert await suppressed(pool, "ann@example.org") == []
    await policy.handle([event("bounced", **full)])  # the old failures no longer count
    assert await wants(pool, "ann") == ("yes", "default")
    hard_rule = await pool.fetchval("SELECT count(*) FROM suppressions WHERE expires_at IS NULL")
    assert hard_rule == 0


async def test_a_stop_while_the_number_is_suppressed_for_failures_is_recorded_all_the_same(
    pool: asyncpg.Pool, policy: BouncePolicy
) -> None:
    """Issue 33: the owner's STOP came while the number was already unsubscribed for its
    failures, and was lost; then lifting the failures brought the texts back."""
    permanent = [event("undelivered", "+33611111111", provider_code="30005") for _ in range(3)]
    await policy.handle(permanent)
    assert await suppressed(pool, "+33611111111") == ["hard_bounces"]
    await policy.handle([event("opted_out", "+33611111111", reason="replied STOP")])
    assert sorted(await suppressed(pool, "+33611111111")) == ["hard_bounces", "opt_out"]
    assert await wants(pool, "ann", "sms") == ("no", "owner")  # the owner's cause shows first
    # the failures lifted (as support does): the STOP stays, and so does the "no"
    await pool.execute("UPDATE suppressions SET lifted_at = now() WHERE rule = 'hard_bounces'")
    assert await wants(pool, "ann", "sms") == ("no", "owner")
    await policy.handle([event("opted_out", "+33611111111")])  # a second STOP: still one
    assert await suppressed(pool, "+33611111111") == ["opt_out"]


async def test_start_lifts_the_owners_opt_out_and_nothing_else(
    pool: asyncpg.Pool, policy: BouncePolicy
) -> None:
    await policy.handle([event("undelivered", "+33611111111", provider_code="30005")] * 1)
    await policy.handle([event("opted_out", "+33611111111", reason="replied STOP")])
    await policy.handle(
        [event("undelivered", "+33611111111", provider_code="30005") for _ in range(3)]
    )
    assert sorted(await suppressed(pool, "+33611111111")) == ["hard_bounces", "opt_out"]
    await policy.handle([event("opted_in", "+33611111111", reason="replied START")])
    assert await suppressed(pool, "+33611111111") == ["hard_bounces"]
    assert await wants(pool, "ann", "sms") == ("no", "automatic")
    announced = await pool.fetch(
        "SELECT payload->>'type' AS type FROM outbox WHERE topic = 'recipient-events' ORDER BY id"
    )
    # START brought nobody back (the failures still keep the number off): no resubscribe
    assert [row["type"] for row in announced] == ["recipient.unsubscribed"] * 2
