"""What is shown is what happens (issue 33): random sequences of hard failures,
complaints, STOP/START, unsubscribe links and resubscribes, changes by a manager, by
support and on the owner's behalf, "never auto-unsubscribe" and address changes. After
each step, for each channel:

- the preference the API shows (and so the console, which reads the same store),
- the reason the fan-out skips a message for (or queues it),
- the resend dialog's "left out" list (a failed message of an earlier notice),
- the send worker's last check before it calls the provider

all agree, and all say what a plain model of the owner's and everyone's decisions says:
the owner's own opt-out is never lost or overruled, lifting one cause never lifts another.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaybook.access.auth import Caller
from relaybook.notices.resends import Resends
from relaybook.platform import sql
from relaybook.platform.answers import RefusedError
from relaybook.reachability.decisions import BouncePolicy
from relaybook.reachability.policy import Policy
from relaybook.reachability.preferences import Change, ContactChange, Preferences
from relaybook.tooling.settings import Settings
from tests.support import delivery_event

DELIVERIES = sql.load("relaybook.deliveries")
WORKER = sql.load("send_worker")
CHANNELS = ("email", "sms")
#: two addresses per channel to move between (one is shared by the whole run's owners)
ADDRESSES = {"email": ("a@example.org", "b@example.org"), "sms": ("+33611111111", "+33622222222")}

MANAGER = Caller("manager", frozenset({"preferences:write"}), None)
SUPPORT = Caller("desk", frozenset({"preferences:write", "support"}), None)

_numbers = itertools.count()


# --- the model -------------------------------------------------------------------------


@dataclasses.dataclass
class Model:
    """What relaybook should show, from the decisions alone."""

    address: dict[str, str | None]
    #: the owner's own opt-out, per (channel, address): STOP, unsubscribe link, complaint
    owner_block: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    #: an automatic suppression (threshold 1 in these runs), per (channel, address)
    auto_block: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    #: the recipient's own preference per channel: (wants, who)
    person: dict[str, tuple[str, str]] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(CHANNELS, ("yes", "default"))
    )
    never_auto: bool = False

    def blocks(self, channel: str) -> tuple[bool, bool]:
        address = self.address[channel]
        if address is None:
            return False, False
        key = (channel, address)
        return key in self.owner_block, key in self.auto_block and not self.never_auto

    def shown(self, channel: str) -> tuple[str, str]:
        owner, automatic = self.blocks(channel)
        wants, who = self.person[channel]
        if self.address[channel] is None:
            return "not_applicable", who
        if owner:
            return "no", "owner"
        if wants == "no":
            return "no", who
        if automatic:
            return "no", "automatic"
        return "yes", who

    def skip_reason(self, channel: str) -> str | None:
        wants, who = self.shown(channel)
        if wants == "not_applicable":
            return "no_address"
        if wants == "yes":
            return None
        return "auto_unsubscribed" if who == "automatic" else "opted_out"

    def refusal(self, channel: str, wants: str, *, for_owner: bool, support: bool) -> str | None:
        """The error code a change should get (None: it goes through)."""
        if wants != "yes":
            return None
        owner, automatic = self.blocks(channel)
        if (owner or self.person[channel] == ("no", "owner")) and not for_owner:
            return "owner_opted_out"
        if automatic and not support:
            return "support_only"
        return None

    def change(self, channel: str, wants: str, *, for_owner: bool, support: bool) -> None:
        owner, automatic = self.blocks(channel)
        current = self.person[channel]
        if wants == "no":
            if current[0] == "no" and (not for_owner or current[1] == "owner"):
                return
            self.person[channel] = ("no", "owner" if for_owner else "manager")
            return
        if current[0] == "yes" and not (owner or automatic):
            return
        who = "owner" if for_owner else "support" if automatic else "manager"
        self.person[channel] = ("yes", who)
        address = self.address[channel]
        if address is not None:
            if owner:
                self.owner_block.discard((channel, address))
            if automatic and support:
                self.auto_block.discard((channel, address))


# --- the steps -------------------------------------------------------------------------

#: provider events by what they mean, per channel (type, extra fields)
EVENTS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("hard", "email"): (
        "bounced",
        {"provider_code": "5.1.1", "bounce_type": "bounce", "bounce_classification": "invalid"},
    ),
    ("hard", "sms"): ("undelivered", {"provider_code": "30005"}),
    ("opt_out", "email"): ("unsubscribed", {}),
    ("opt_out", "sms"): ("opted_out", {"reason": "replied STOP"}),
    ("complaint", "email"): ("spam_reported", {}),
    ("opt_in", "email"): ("group_resubscribed", {}),
    ("opt_in", "sms"): ("opted_in", {"reason": "replied START"}),
}

channel = st.sampled_from(CHANNELS)
step = st.one_of(
    st.tuples(st.just("event"), st.sampled_from(sorted(EVENTS))),
    st.tuples(st.just("manager"), channel, st.sampled_from(("yes", "no"))),
    st.tuples(st.just("support"), channel, st.sampled_from(("yes", "no"))),
    st.tuples(st.just("owner"), channel, st.sampled_from(("yes", "no"))),
    st.tuples(st.just("address"), channel, st.sampled_from((0, 1, None))),
    st.tuples(st.just("never_auto"), st.booleans()),
)


@dataclasses.dataclass
class Run:
    pool: asyncpg.Pool
    agency: str
    recipient: str
    #: an earlier notice whose messages failed on both channels: what a resend would retry
    earlier: uuid.UUID
    policy: BouncePolicy
    preferences: Preferences
    model: Model


async def _start(pool: asyncpg.Pool) -> Run:
    number = next(_numbers)
    agency, recipient = f"agency-{number}", "owner"
    email, phone = ADDRESSES["email"][0], ADDRESSES["sms"][0]
    # each run its own agency, and its own addresses' history: suppressions of the same
    # addresses left by earlier runs are lifted
    await pool.execute("UPDATE suppressions SET lifted_at = now() WHERE lifted_at IS NULL")
    await pool.execute("INSERT INTO agencies (id) VALUES ($1)", agency)
    await pool.execute(
        "INSERT INTO recipients (agency_id, id, email, phone) VALUES ($1, $2, $3, $4)",
        agency,
        recipient,
        email,
        phone,
    )
    earlier = await _notice(pool, agency)
    await pool.execute(DELIVERIES["fan_out"], earlier, [recipient], CHANNELS, agency)
    await pool.execute(
        "UPDATE deliveries SET status = 'failed', reason = 'test' WHERE notice_id = $1", earlier
    )
    strict = Policy.from_settings(
        dataclasses.replace(Settings(), bounce_email_hard_threshold=1, bounce_sms_hard_threshold=1)
    )
    return Run(
        pool,
        agency,
        recipient,
        earlier,
        BouncePolicy(pool, strict),
        Preferences(pool),
        Model({"email": email, "sms": phone}),
    )


async def _notice(pool: asyncpg.Pool, agency: str) -> uuid.UUID:
    notice_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO notices (id, source_service, source_kind, source_reference, title, "
        "email_subject, sms_text, status, created_by, agency_id) "
        "VALUES ($1, 's', 'k', 'r', 't', 'subject', 'text', 'draft', 'test', $2)",
        notice_id,
        agency,
    )
    return notice_id


async def _event(run: Run, meaning: str, channel: str) -> None:
    address = run.model.address[channel]
    if address is None:
        return
    kind, fields = EVENTS[(meaning, channel)]
    await run.policy.handle([delivery_event(kind, address, **fields)])
    key = (channel, address)
    if meaning == "hard":
        run.model.auto_block.add(key)
    elif meaning in {"opt_out", "complaint"}:
        run.model.owner_block.add(key)
    elif key in run.model.owner_block:  # START: the owner's latest word, where they say yes
        run.model.owner_block.discard(key)
        if run.model.person[channel][0] == "yes":
            run.model.person[channel] = ("yes", "owner")


async def _change(run: Run, who: str, channel: str, wants: str) -> None:
    for_owner, support = who == "owner", who == "support"
    caller = SUPPORT if support else MANAGER
    change = Change(
        {channel: wants}, f"{who} says {wants}", None, "their letter" if for_owner else None
    )
    expected = run.model.refusal(channel, wants, for_owner=for_owner, support=support)
    refused = None
    try:
        await run.preferences.change(run.agency, run.recipient, change, caller)
    except RefusedError as problem:
        refused = problem.code
    assert refused == expected, (who, channel, wants)
    if refused is not None:
        return
    run.model.change(channel, wants, for_owner=for_owner, support=support)


async def _move(run: Run, channel: str, which: int | None) -> None:
    address = None if which is None else ADDRESSES[channel][which]
    contact = ContactChange(email=address) if channel == "email" else ContactChange(phone=address)
    await run.preferences.correct(run.agency, run.recipient, contact, "manager")
    run.model.address[channel] = address


async def _never_auto(run: Run, never: bool) -> None:
    await run.preferences.change(
        run.agency, run.recipient, Change({}, "manager's choice", never), MANAGER
    )
    run.model.never_auto = never


async def _apply(run: Run, taken: tuple[Any, ...]) -> None:
    match taken:
        case ("event", (meaning, channel)):
            await _event(run, meaning, channel)
        case ("manager" | "support" | "owner" as who, channel, wants):
            await _change(run, who, channel, wants)
        case ("address", channel, which):
            await _move(run, channel, which)
        case ("never_auto", never):
            await _never_auto(run, never)


# --- the four readers ------------------------------------------------------------------


async def _readers_agree(run: Run, steps: list[Any]) -> None:
    shown = await run.preferences.get(run.agency, run.recipient)
    assert shown is not None
    # the fan-out of a new notice, and the worker's check of its messages
    notice_id = await _notice(run.pool, run.agency)
    await run.pool.execute(DELIVERIES["fan_out"], notice_id, [run.recipient], CHANNELS, run.agency)
    fanned = {
        row["channel"]: row
        for row in await run.pool.fetch(
            "SELECT id, channel, status, reason FROM deliveries WHERE notice_id = $1", notice_id
        )
    }
    worker = {
        row["channel"]: row["skip_reason"]
        for row in await run.pool.fetch(
            WORKER["load_deliveries"], [row["id"] for row in fanned.values()]
        )
    }
    # the resend dialog on the earlier notice: retried, or left out and why
    plans = await Resends(run.pool).plans(run.earlier, frozenset())
    failed = plans["failed"]
    resend: dict[str, str | None] = {m.channel: None for m in failed.retry}
    resend |= {m.channel: m.reason for m in failed.excluded}

    for channel in CHANNELS:
        preference = shown[channel]  # type: ignore[literal-required]
        expected = run.model.shown(channel)
        where = f"{channel} after {steps}"
        assert (preference["wants"], preference["changed_by"]) == expected, where
        reason = run.model.skip_reason(channel)
        status = "queued" if reason is None else "skipped"
        assert (fanned[channel]["status"], fanned[channel]["reason"]) == (status, reason), where
        assert worker[channel] == reason, where
        assert resend[channel] == reason, where


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=14))
async def test_what_is_shown_is_what_every_send_obeys(pool: asyncpg.Pool, steps: list[Any]) -> None:
    run = await _start(pool)
    await _readers_agree(run, [])
    for number, taken in enumerate(steps):
        await _apply(run, taken)
        await _readers_agree(run, steps[: number + 1])
