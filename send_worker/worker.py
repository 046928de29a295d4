"""A batch of send jobs, handled: re-check, record the attempt, call the providers
concurrently, record what they said, announce it.

Per job: a delivery that is no longer queued, or already has a provider message id, was
handled before (a job seen again after a crash) and is not sent again; if a worker
recorded its outcome, the outcome is announced again, as recorded (same event id: the
tracker keeps one). One whose last attempt was at the provider when a worker crashed is
asked about first (unknown_outcomes.py). One whose recipient opted out, lost the address
or got suppressed since is skipped with that reason (its event through the outbox, in
the same transaction). The attempt is committed before the provider is called; the outcome next,
then its ``accepted`` / ``failed`` event is published, and only then are the batch's
offsets committed: a crash anywhere loses nothing, and a job that comes again announces
what was recorded but maybe not published. The outcome's event costs no outbox row (a
write, a read and a stamp for each email). Transient failures go back to the relay's
queue with a backoff instead of holding the batch up.

Emails go first: a worker's texts wait (up to ``sms_yield_s``) while its email lane is
sending, since one request carries 1000 emails and one text: on shared cores, running
both side by side made a notice's emails take twice as long and its texts no less. A
batch of texts waits before it is read, so the re-check is as fresh as the send.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import asyncpg
from prometheus_client import Counter

import schemas
from relaybook.content.messages import Rendered
from relaybook.content.templates import RenderError
from relaybook.notices.rendering import Renderer
from relaybook.platform import faults, outbox, sql
from relaybook.platform.kafka import STOP_TIMEOUT_S, BrokerError, Producer, Record
from relaybook.platform.logs import get_logger
from relaybook.platform.timestamps import iso
from send_worker.providers import MAX_PERSONALIZATIONS, Email, EmailContent, SendGrid, Twilio
from send_worker.retry import Outcome, next_attempt
from send_worker.settings import WorkerSettings
from send_worker.unknown_outcomes import HELD, UnknownOutcomes, Verdict

log = get_logger(__name__)
Q = sql.load("send_worker")
#: the outcomes the worker records: the deliveries' transitions (relaybook/deliveries)
DELIVERIES = sql.load("relaybook.deliveries")
#: the content of the notices it sends (relaybook/notices)
NOTICES = sql.load("relaybook.notices")
#: its attempts, numbered before each call (relaybook/sending)
ATTEMPTS = sql.load("relaybook.sending")

#: texts sent concurrently and recorded together
SMS_WAVE = 50
#: jobs of a batch handled together, from loading to recording: one email request
CHUNK = MAX_PERSONALIZATIONS

#: how long after an email batch the lane counts as still sending: fetching its next one
EMAIL_GAP_S = 0.2

#: an attempt's number and start time: a row of start_attempts, or of an attempt in doubt
Started = asyncpg.Record | Mapping[str, Any]

#: how often a worker looks for held deliveries whose due time came (look_again), how
#: many it takes at a time, and for how long it claims them
LOOK_AGAIN_EVERY_S = 2.0
LOOK_AGAIN_PAGE = 500
LEASE_S = 60.0

OUTCOMES = Counter("relaybook_sends_total", "Sends by channel and outcome", ["channel", "outcome"])


class SendWorker:
    def __init__(
        self,
        settings: WorkerSettings,
        pool: asyncpg.Pool,
        *,
        events: outbox.Outbox,
        producer: Producer,
        sendgrid: SendGrid,
        twilio: Twilio,
    ) -> None:
        """``events``: the outbox skips are announced through; ``producer`` publishes
        the providers' outcomes."""
        self._settings = settings
        self._pool = pool
        self._events = events
        self._producer = producer
        self._sendgrid = sendgrid
        self._twilio = twilio
        self._emails_first = Precedence(settings.sms_yield_s, EMAIL_GAP_S)
        self._draw = random.Random()  # noqa: S311 - retry jitter, not a secret
        self._renderer = Renderer()
        self._unknown = UnknownOutcomes(
            pool, twilio, settings.unknown_outcome_grace_s, self._renderer
        )
        self._closing = asyncio.Event()
        self._looking: asyncio.Task[None] | None = None

    def lane(self, channel: str) -> Callable[[list[Record]], Awaitable[None]]:
        """The handler of one channel's consumer group: the other channel's jobs are
        another group's."""

        async def handle(records: list[Record]) -> None:
            mine = [r for r in records if r.value["channel"] == channel]
            if not mine:
                return
            if channel == "email":
                async with self._emails_first.going():
                    await self.handle(mine)
            else:  # waits before anything is read: preferences are checked after the wait
                await self._emails_first.wait()
                await self.handle(mine)

        return handle

    async def handle(self, records: list[Record]) -> None:
        """Handles a batch of ``send-job`` messages: in chunks of up to one email request
        each, side by side, so one chunk's database work overlaps another's provider call."""
        if not records:
            return
        ids = list(dict.fromkeys(_by_notice(records)))  # a job seen twice is sent once
        chunks = [ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK)]
        await _all(self._send(chunk) for chunk in chunks)

    async def _send(self, ids: list[str]) -> None:
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(Q["load_deliveries"], ids)
        in_doubt = _in_doubt(rows)
        if in_doubt:  # a crash came while they were at the provider: the rare path
            verdict = await self._settle(in_doubt)
            settled = verdict.taken.keys() | verdict.held.keys()
            rows = [row for row in rows if row["id"] not in settled]
        due = [row for row in rows if row["status"] == "queued" and not row["provider_message_id"]]
        recorded = [row for row in rows if row["outcome"] is not None]
        if recorded:  # a job seen again: its event may not have been published
            await self._announce(recorded)
        due = await self._skip_unwanted(due)
        if due:
            async with self._pool.acquire() as connection:
                started = await connection.fetch(
                    ATTEMPTS["start_attempts"], [row["id"] for row in due]
                )
                content = await connection.fetch(
                    NOTICES["load_contents"], list({row["notice_id"] for row in due})
                )
            attempts = {row["id"]: row for row in started}
            notices = {row["id"]: row for row in content}
            due = [row for row in due if row["id"] in attempts]
            # Each wave's outcomes are committed and announced as soon as it is done, so a
            # crash repeats at most the waves in flight (an email request, or SMS_WAVE
            # texts); every wave ends even if another fails, so none is cut off mid-call.
            await _all(self._wave(wave, attempts, notices) for wave in _waves(due))

    async def _settle(self, in_doubt: list[asyncpg.Record]) -> Verdict:
        """Deliveries whose last attempt's outcome a crash left unknown: what the provider
        has is recorded as that attempt's acceptance (and announced), those it may still
        report wait on the retry queue (unknown_outcomes.py). The others, if queued, go
        again."""
        verdict = await self._unknown.settle(in_doubt)
        taken = [row for row in in_doubt if row["id"] in verdict.taken]
        if taken:
            await self._record(
                taken,
                {row["id"]: Outcome.accepted(verdict.taken[row["id"]]) for row in taken},
                {
                    row["id"]: {
                        "attempt": row["unknown_attempt"],
                        "started_at": row["unknown_since"],
                    }
                    for row in taken
                },
            )
        if verdict.held:
            async with self._pool.acquire() as connection:
                await connection.execute(
                    DELIVERIES["hold"], list(verdict.held), list(verdict.held.values()), HELD
                )
        log.info(
            "sends whose outcome a crash left unknown",
            found=len(taken),
            held=len(verdict.held),
            again=sum(
                1
                for row in in_doubt
                if row["status"] == "queued"
                and row["id"] not in verdict.taken
                and row["id"] not in verdict.held
            ),
        )
        return verdict

    def start(self) -> None:
        """Starts looking again at held deliveries that the providers' events moved on."""
        self._looking = asyncio.create_task(self._look_again(), name="held-sends")

    async def close(self) -> None:
        """Stops looking again, once a look under way is done (within ``STOP_TIMEOUT_S``:
        a look cut off between recording an outcome and announcing it leaves the event
        unpublished until its claim runs out, ``LEASE_S``)."""
        self._closing.set()
        if self._looking is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._looking), STOP_TIMEOUT_S)
        except TimeoutError:
            self._looking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._looking

    async def _look_again(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), LOOK_AGAIN_EVERY_S)
                return
            try:
                while await self.look_again() == LOOK_AGAIN_PAGE and not self._closing.is_set():
                    pass
            except Exception as problem:  # noqa: BLE001 - whatever it is, the loop goes on
                faults.report_retried(log, "held sends not looked at again yet", problem)

    async def look_again(self) -> int:
        """The relay sends a held delivery's job again only while it is queued, but the
        provider's events may move it on meanwhile (SendGrid's ``processed``, Twilio's
        callbacks, through the tracker): when such deliveries are due, a worker settles
        them itself (any worker, so none is lost with the one that held it), so their
        outcome is recorded and announced all the same. Returns how many it claimed.

        A delivery claimed but not in doubt is let go: a look cut off after recording
        the acceptance announces it first; a retry the provider's events moved on (its
        call timed out, then a bounce came) has nothing to announce. The claim stays on
        texts whose number's list could not be read, and on all of them while a server
        is away: they are looked at again once it runs out."""
        async with self._pool.acquire() as connection:
            claimed = await connection.fetch(DELIVERIES["claim_moved_on"], LEASE_S, LOOK_AGAIN_PAGE)
            ids = [row["id"] for row in claimed]
            rows = await connection.fetch(Q["load_deliveries"], ids) if ids else []
        in_doubt = _in_doubt(rows)
        unread: frozenset[uuid.UUID] = frozenset()
        try:
            if in_doubt:
                unread = (await self._settle(in_doubt)).unread
            cut_off = [row for row in rows if row["outcome"] == "accepted"]
            if cut_off:
                await self._announce(cut_off)
        except Exception as problem:
            if faults.is_transient(problem):
                raise
            # a bug, not an outage: said once, and the rows let go rather than claimed
            # and failing again every LEASE_S for ever
            log.exception("held sends looked at in vain", deliveries=len(ids))
        if ids:
            async with self._pool.acquire() as connection:
                await connection.execute(
                    DELIVERIES["release_moved_on"], [i for i in ids if i not in unread]
                )
        return len(ids)

    async def _skip_unwanted(self, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
        reasons: dict[uuid.UUID, str] = {
            row["id"]: row["skip_reason"] for row in rows if row["skip_reason"] is not None
        }
        if reasons:
            stamp = iso(dt.datetime.now(dt.UTC))
            skipped = [row for row in rows if row["id"] in reasons]
            events = [
                (
                    str(row["id"]),
                    _event(
                        row,
                        "skipped",
                        row["attempts_made"] + 1,
                        stamp,
                        address=row["address"],
                        reason=reasons[row["id"]],
                    ),
                )
                for row in skipped
            ]
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute(DELIVERIES["skip"], list(reasons), list(reasons.values()))
                await outbox.add(connection, "delivery-events", events, contracts=schemas.CONTRACTS)
            for row in skipped:
                OUTCOMES.labels(row["channel"], f"skipped_{reasons[row['id']]}").inc()
            try:
                await self._events.flush()
            except BrokerError as problem:  # recorded; the outbox's catch-up publishes them
                log.warning("events not published yet", error=str(problem))
        return [row for row in rows if row["id"] not in reasons]

    async def _wave(
        self,
        rows: list[asyncpg.Record],
        attempts: dict[uuid.UUID, asyncpg.Record],
        notices: dict[uuid.UUID, asyncpg.Record],
    ) -> None:
        """Sends one wave: one notice's emails, a request for each content they render to
        (one, unless the content is personal), each request's outcome recorded as soon as
        it is known; or texts side by side, recorded together."""
        rendered: dict[uuid.UUID, Rendered] = {}
        unrendered: dict[uuid.UUID, Outcome] = {}
        for row in rows:
            try:
                rendered[row["id"]] = self._renderer.render(row, notices[row["notice_id"]])
            except RenderError as problem:  # a loop's item without a variable it names
                unrendered[row["id"]] = Outcome.permanent("template_error", str(problem))
        if unrendered:
            failed = [row for row in rows if row["id"] in unrendered]
            await self._record(failed, unrendered, attempts)
        going = [row for row in rows if row["id"] in rendered]
        if going and going[0]["channel"] == "email":
            alike: dict[tuple[str, ...], list[asyncpg.Record]] = defaultdict(list)
            for row in going:
                alike[tuple(rendered[row["id"]].parts.values())].append(row)

            # recorded at once, not when the wave's last request is back: a provider's
            # event about an email (an asynchronous bounce, matched by its address) finds
            # it only once it is recorded as sent
            async def request(group: list[asyncpg.Record]) -> None:
                outcome = await self._send_emails(group, rendered, notices)
                outcomes = dict.fromkeys((row["id"] for row in group), outcome)
                await self._record(group, outcomes, attempts, rendered)

            await _all(request(group) for group in alike.values())
        elif going:
            texts = await asyncio.gather(
                *(
                    self._twilio.send(
                        str(row["id"]), row["address"], rendered[row["id"]].parts["text"]
                    )
                    for row in going
                )
            )
            outcomes = {row["id"]: outcome for row, outcome in zip(going, texts, strict=True)}
            await self._record(going, outcomes, attempts, rendered)

    async def _send_emails(
        self,
        rows: list[asyncpg.Record],
        rendered: Mapping[uuid.UUID, Rendered],
        notices: Mapping[uuid.UUID, asyncpg.Record],
    ) -> Outcome:
        """One request for emails of one notice that render to the same content."""
        parts = rendered[rows[0]["id"]].parts
        content = EmailContent(
            parts["subject"],
            parts["text"],
            parts.get("html"),
            notices[rows[0]["notice_id"]]["source_kind"],
        )
        emails = [
            Email(str(row["id"]), str(row["notice_id"]), row["address"], row["name"])
            for row in rows
        ]
        return await self._sendgrid.send(content, emails)

    async def _record(
        self,
        rows: list[asyncpg.Record],
        outcomes: dict[uuid.UUID, Outcome],
        attempts: Mapping[uuid.UUID, Started],
        rendered: Mapping[uuid.UUID, Rendered] | None = None,
    ) -> None:
        """Records each row's outcome with its attempt and, when it was rendered, what it
        sent (``rendered``)."""
        now = dt.datetime.now(dt.UTC)
        said = rendered or {}
        accepted: dict[str, list[Any]] = defaultdict(list)
        failed: dict[str, list[Any]] = defaultdict(list)
        retry: list[tuple[asyncpg.Record, dt.datetime, str]] = []
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for row in rows:
            outcome, attempt = outcomes[row["id"]], attempts[row["id"]]["attempt"]
            provider = "sendgrid" if row["channel"] == "email" else "twilio"
            if outcome.kind == "transient" and attempt >= self._settings.send_max_attempts:
                outcome = Outcome.permanent(
                    "unavailable", f"gave up after {attempt} attempts: {outcome.reason}"
                )
            counts[row["channel"], outcome.kind] += 1
            if outcome.kind == "transient":
                due = next_attempt(attempt, now, self._draw, outcome.retry_not_before)
                retry.append((row, due, f"retrying: {outcome.reason}"))
                continue
            target = accepted if outcome.kind == "accepted" else failed
            target[provider].append((row, outcome))
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                DELIVERIES["record_accepted"],
                (
                    *_attempted([row for row, _ in items], attempts, said),
                    [o.message_id for _, o in items],
                    provider,
                ),
            )
            for provider, items in accepted.items()
        ]
        statements += [
            (
                DELIVERIES["record_failed"],
                (
                    *_attempted([row for row, _ in items], attempts, said),
                    [o.reason for _, o in items],
                    [o.code for _, o in items],
                    provider,
                ),
            )
            for provider, items in failed.items()
        ]
        if retry:
            statements.append(
                (
                    DELIVERIES["schedule_retry"],
                    (
                        *_attempted([row for row, _, _ in retry], attempts, said),
                        [due for _, due, _ in retry],
                        [reason for _, _, reason in retry],
                    ),
                )
            )
        recorded: list[asyncpg.Record] = []
        async with self._pool.acquire() as connection:
            # one statement (a wave the provider took whole, the usual case) is a
            # transaction of its own: BEGIN and COMMIT would be two more round trips
            together = connection.transaction() if len(statements) > 1 else contextlib.nullcontext()
            async with together:
                for statement, arguments in statements:
                    recorded += await connection.fetch(statement, *arguments)
        for (channel, kind), count in counts.items():
            OUTCOMES.labels(channel, kind).inc(count)
        if retry:
            log.info("transient send failures; retrying later", count=len(retry), first=retry[0][2])
        await self._announce(recorded)

    async def _announce(self, recorded: list[asyncpg.Record]) -> None:
        """Publishes the events of outcomes as recorded (the OUTCOME columns of
        queries.sql); raises :class:`BrokerError` if the broker did not take them all, so
        the batch fails and its jobs come again to announce them."""
        stamps: dict[dt.datetime, str] = {}  # a statement's rows share their time
        events = []
        for row in recorded:
            at = row["outcome_at"]
            stamp = stamps.get(at) or stamps.setdefault(at, iso(at))
            accepted = row["outcome"] == "accepted"
            event = _event(
                row,
                row["outcome"],
                row["send_attempts"],
                stamp,
                provider=row["provider"],
                address=row["sent_to"],
                message_id=row["provider_message_id"] if accepted else None,
                reason=None if accepted else row["reason"],
                code=None if accepted else row["provider_code"],
            )
            events.append((event["delivery_id"], event))
        if events:
            await self._producer.send_many("delivery-events", events)


def _in_doubt(rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
    """The rows of ``load_deliveries`` whose last attempt a crash left without an answer."""
    return [row for row in rows if row["unknown_attempt"] and not row["provider_message_id"]]


class Precedence:
    """One kind of work before another in one process: the second waits while the first
    is going, or went less than ``gap_s`` ago (between two batches), but never longer
    than ``patience_s`` at a time, so it goes on, if more slowly, when the first never
    stops."""

    def __init__(self, patience_s: float, gap_s: float) -> None:
        self._patience_s = patience_s
        self._gap_s = gap_s
        self._going = 0
        self._stopped = asyncio.Event()  # set while the first kind is not going
        self._stopped.set()
        self._ended = -gap_s  # monotonic time the first kind last stopped going

    @contextlib.asynccontextmanager
    async def going(self) -> AsyncIterator[None]:
        """Marks the first kind of work as going while in the block."""
        self._going += 1
        self._stopped.clear()
        try:
            yield
        finally:
            self._going -= 1
            self._ended = time.monotonic()
            if not self._going:
                self._stopped.set()

    async def wait(self) -> None:
        """Returns when the first kind of work is not going, or after ``patience_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._patience_s):
                while True:
                    await self._stopped.wait()
                    pause = self._ended + self._gap_s - time.monotonic()
                    if pause <= 0:
                        return
                    await asyncio.sleep(pause)  # it may start again meanwhile


def _attempted(
    rows: list[asyncpg.Record],
    attempts: Mapping[uuid.UUID, Started],
    rendered: Mapping[uuid.UUID, Rendered],
) -> tuple[list[Any], ...]:
    """The deliveries, their attempts (numbers and start times, as ``start_attempts``
    returned them), the addresses they went to and what they said (CONTENT: language,
    hash, segments; None where not rendered): the first parameters of each statement
    recording an outcome."""
    started = [attempts[row["id"]] for row in rows]
    said = [rendered.get(row["id"]) for row in rows]
    return (
        [row["id"] for row in rows],
        [attempt["attempt"] for attempt in started],
        [attempt["started_at"] for attempt in started],
        [row["address"] for row in rows],
        [r.language if r else None for r in said],
        [r.sha256 if r else None for r in said],
        [r.segments.count if r and r.segments else None for r in said],
    )


def _by_notice(records: list[Record]) -> list[str]:
    """The batch's delivery ids, a notice's together (so its emails fill whole requests),
    as the jobs carry them: PostgreSQL reads them (a UUID object each cost 1.5 us)."""
    ordered = sorted(records, key=lambda record: record.value["notice_id"])
    return [record.value["delivery_id"] for record in ordered]


def _waves(rows: list[asyncpg.Record]) -> list[list[asyncpg.Record]]:
    """Emails grouped by notice in requests of up to 1000; texts in groups of ``SMS_WAVE``."""
    emails: dict[uuid.UUID, list[asyncpg.Record]] = defaultdict(list)
    texts = []
    for row in rows:
        if row["channel"] == "email":
            emails[row["notice_id"]].append(row)
        else:
            texts.append(row)
    waves = [
        batch[start : start + MAX_PERSONALIZATIONS]
        for batch in emails.values()
        for start in range(0, len(batch), MAX_PERSONALIZATIONS)
    ]
    waves += [texts[start : start + SMS_WAVE] for start in range(0, len(texts), SMS_WAVE)]
    return waves


def _event(
    row: asyncpg.Record,
    kind: str,
    attempt: int,
    stamp: str,
    *,
    provider: str = "relaybook",
    address: str | None = None,
    message_id: str | None = None,
    reason: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """A send outcome as a ``delivery-event``: ``accepted`` or ``failed`` (by the provider
    the worker called), or ``skipped`` (by relaybook itself, before any call)."""
    return {
        "schema": "delivery-event/v1",
        "agency": row["agency_id"],
        "event_id": f"relaybook:{row['id']}:{attempt}:{kind}",
        "type": kind,
        "channel": row["channel"],
        "provider": provider,
        "occurred_at": stamp,
        "received_at": stamp,
        "delivery_id": str(row["id"]),
        "provider_message_id": message_id,
        "address": address,
        "reason": reason,
        "provider_code": code,
        "attempt": attempt,
    }


async def _all(calls: Iterable[Awaitable[None]]) -> None:
    """Runs ``calls`` side by side to their end, then raises the first failure if any: a
    failing one must not leave the others running unwatched, nor cut them off in the
    middle of a provider call."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
