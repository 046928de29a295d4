"""Sends a crash left without an answer: an attempt recorded as started (a row of
``send_attempts`` newer than the delivery's ``send_attempts``) whose outcome never was, so
the provider may or may not have the message. Neither provider takes an idempotency key,
and sending such a delivery again blindly sent 46 texts of 2,000 twice after a kill. So
before it goes again, the provider is asked:

- for a text, Twilio's Messages list: a text to the same number with the same body,
  created no earlier than the attempt started (less a little clock skew), that no
  delivery has recorded (a resend to the same person has the same body);
- for an email (SendGrid has no look-up), its own events (``delivery_events``, stored by
  the tracker): a ``processed``, ``delivered``, ``bounced``... about the delivery proves
  the email was taken, and names it.

Found, it is recorded as the attempt's acceptance, as if the answer had come. Not found,
it may still come: a text queued at Twilio is not listed as sent yet, and SendGrid posts
its events in batches about every 30 s. So the delivery waits on the relay's retry queue
until ``unknown_outcome_grace_s`` after its attempt started, is asked about again then,
and only goes again if there is still nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import NamedTuple

import asyncpg

from relaybook.content.templates import RenderError
from relaybook.notices.rendering import Renderer
from relaybook.platform import sql
from send_worker.providers import Listed, Twilio

Q = sql.load("send_worker")
NOTICES = sql.load("relaybook.notices")

#: SendGrid's events that prove it took an email
TAKEN = ("processed", "dropped", "delivered", "bounced", "deferred", "opened", "clicked")
#: how far Twilio's clock may be behind ours (its dates also drop the fraction of a second)
SKEW = dt.timedelta(seconds=10)
#: a number whose list could not be read is asked about again after this, at the soonest
LOOK_AGAIN_S = 30.0
#: the reason a held delivery shows meanwhile
HELD = "outcome unknown after a crash: waiting for the provider's word"


class Doubt(NamedTuple):
    """A text in doubt, as Twilio's list is searched for it."""

    delivery_id: uuid.UUID
    to: str
    body: str
    since: dt.datetime  # when its attempt started


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What became of deliveries in doubt. Those in neither map go again if still queued
    (the grace is over and nothing was found) and stay as they are if not."""

    taken: dict[uuid.UUID, str]  # the message the provider has, by its id
    held: dict[uuid.UUID, dt.datetime]  # back on the retry queue, due then
    #: texts whose number's list could not be read: nothing is known of them yet
    unread: frozenset[uuid.UUID] = frozenset()


def match(
    doubts: list[Doubt], listed: Mapping[str, list[Listed]], recorded: set[str]
) -> dict[uuid.UUID, str]:
    """The listed text that is each delivery's: to its number, with its body, created no
    earlier than its attempt started less ``SKEW``, recorded on no delivery. A text goes
    to one delivery at most (two recipients sharing a number get the same text), the
    earliest attempt taking the earliest text."""
    found: dict[uuid.UUID, str] = {}
    given = set(recorded)
    for doubt in sorted(doubts, key=lambda doubt: doubt.since):
        for text in sorted(listed.get(doubt.to, []), key=lambda text: text.created):
            if (
                text.sid not in given
                and text.body == doubt.body
                and text.created >= doubt.since - SKEW
            ):
                found[doubt.delivery_id] = text.sid
                given.add(text.sid)
                break
    return found


def held_until(
    since: dt.datetime, grace_s: float, now: dt.datetime, *, unread: bool = False
) -> dt.datetime | None:
    """When a queued delivery in doubt, nothing found, is asked about again: at the end
    of the grace (``since`` + ``grace_s``), and not before ``LOOK_AGAIN_S`` if the
    provider could not be asked (``unread``); None when it goes again now."""
    due = since + dt.timedelta(seconds=grace_s)
    if unread:
        due = max(due, now + dt.timedelta(seconds=min(grace_s, LOOK_AGAIN_S)))
    return due if due > now else None


class UnknownOutcomes:
    def __init__(
        self, pool: asyncpg.Pool, twilio: Twilio, grace_s: float, renderer: Renderer
    ) -> None:
        """``renderer``: the worker's, to render a text in doubt again as it was sent."""
        self._pool = pool
        self._twilio = twilio
        self._grace_s = grace_s
        self._renderer = renderer

    async def settle(self, rows: list[asyncpg.Record]) -> Verdict:
        """Asks the providers about deliveries in doubt (rows of ``load_deliveries`` with
        an ``unknown_attempt`` and no message id)."""
        taken: dict[uuid.UUID, str] = {}
        emails = [row["id"] for row in rows if row["channel"] == "email"]
        if emails:
            async with self._pool.acquire() as connection:
                events = await connection.fetch(Q["taken_by_events"], emails, list(TAKEN))
            taken = {row["id"]: row["message_id"] for row in events}
        texts = [row for row in rows if row["channel"] == "sms" and row["address"]]
        unread: set[str] = set()
        if texts:
            found, unread = await self._look_up(texts)
            taken |= found
        now = dt.datetime.now(dt.UTC)
        held: dict[uuid.UUID, dt.datetime] = {}
        for row in rows:
            if row["id"] in taken or row["status"] != "queued":
                continue
            due = held_until(
                row["unknown_since"],
                self._grace_s,
                now,
                unread=row["channel"] == "sms" and row["address"] in unread,
            )
            if due is not None:
                held[row["id"]] = due
        unasked = frozenset(
            row["id"] for row in texts if row["address"] in unread and row["id"] not in taken
        )
        return Verdict(taken, held, unasked)

    async def _look_up(self, rows: list[asyncpg.Record]) -> tuple[dict[uuid.UUID, str], set[str]]:
        """The texts found in Twilio's list, and the numbers whose list could not be read:
        one list call per number, side by side."""
        async with self._pool.acquire() as connection:
            notices = await connection.fetch(
                NOTICES["load_contents"], list({row["notice_id"] for row in rows})
            )
        by_id = {notice["id"]: notice for notice in notices}
        doubts = []
        for row in rows:
            notice = by_id.get(row["notice_id"])
            if notice is None or not notice["sms_text"]:
                continue
            try:  # the text as it was sent: rendering gives the same text again
                body = self._renderer.render(row, notice).parts["text"]
            except RenderError:
                continue  # it could not have been sent
            doubts.append(Doubt(row["id"], row["address"], body, row["unknown_since"]))
        since: dict[str, dt.datetime] = {}
        for doubt in doubts:
            since[doubt.to] = min(since.get(doubt.to, doubt.since), doubt.since)
        answers = await asyncio.gather(
            *(self._twilio.sent_to(to, start - SKEW) for to, start in since.items())
        )
        listed = {to: texts for to, texts in zip(since, answers, strict=True) if texts is not None}
        unread = {to for to, texts in zip(since, answers, strict=True) if texts is None}
        sids = [text.sid for texts in listed.values() for text in texts]
        recorded: set[str] = set()
        if sids:
            async with self._pool.acquire() as connection:
                recorded = {
                    row["provider_message_id"]
                    for row in await connection.fetch(Q["recorded_message_ids"], sids)
                }
        return match(doubts, listed, recorded), unread
