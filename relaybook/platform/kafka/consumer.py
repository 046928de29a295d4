"""The consumer: a member of a group that hands each batch of valid messages to a handler
and commits only after the handler's work is durable; what breaks its contract, or fails
for good, is set aside in the dead letters and the consumer moves on."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import Counter, Gauge, Histogram

from relaybook.platform import faults
from relaybook.platform.deadletters import DeadLetters
from relaybook.platform.kafka.connection import BrokerError, client_options
from relaybook.platform.kafka.contracts import Contracts
from relaybook.platform.logs import get_logger
from relaybook.platform.settings import PlatformSettings

log = get_logger(__name__)

CONSUMED = Counter(
    "relaybook_kafka_messages_consumed_total",
    "Messages consumed and committed",
    ["topic", "group"],
)
BATCH_SECONDS = Histogram(
    "relaybook_kafka_batch_seconds", "Time to handle and commit one consumed batch", ["group"]
)
LAG = Gauge(
    "relaybook_kafka_consumer_lag",
    "Messages not yet consumed, per partition (high watermark minus position)",
    ["topic", "partition", "group"],
)

#: the shortest grace a supervisor gives a stopping process (`up` 20 s, compose 30 s)
STOP_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class Record:
    """One consumed message that follows its contract."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict[str, Any]
    #: the message as consumed (aiokafka's ``ConsumerRecord``), to set it aside as it was
    message: Any = dataclasses.field(default=None, repr=False, compare=False)


Handler = Callable[[list[Record]], Awaitable[None]]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets an in-flight batch finish (and commit) before partitions are handed over."""

    def __init__(self, lock: asyncio.Lock, group: str) -> None:
        self._lock = lock
        self._group = group
        #: the group gave this member its share at least once (some partitions, or none)
        self.joined = False

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self._lock:
            log.info("partitions revoked", group=self._group, partitions=_names(revoked))
        for tp in revoked:
            # the new owner reports this partition's lag from now on: a value left here
            # would stay frozen in the series of this process
            with contextlib.suppress(KeyError):
                LAG.remove(tp.topic, str(tp.partition), self._group)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.joined = True
        log.info("partitions assigned", group=self._group, partitions=_names(assigned))


def _names(partitions: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)


class Consumer:
    """A member of consumer group ``group`` on some of relaybook's topics.

    :meth:`run` hands each batch of valid messages to ``handler`` and commits their offsets
    only after it returns: the handler makes its work durable (a database commit) first,
    so a crash at any point means the batch is consumed again, never lost. Handlers must
    therefore be idempotent (dedupe on event or job ids).
    """

    def __init__(
        self,
        settings: PlatformSettings,
        topics: Sequence[str],
        group: str,
        *,
        dead_letters: DeadLetters,
        contracts: Contracts,
        max_batch: int = 500,
        gather_ms: int = 0,
        only: dict[str, str] | None = None,
        lanes: int = 1,
    ) -> None:
        """``gather_ms``: how long the broker may wait to fill a fetch (up to 1 MiB) so that
        batches are large; 0 answers with whatever is there at once (lowest latency).
        ``only``: header values (the contracts' ``header_fields``) of the messages to
        handle; the others are passed over undecoded (and committed). A message without
        the header is handled. ``lanes``: how many calls of the handler a batch is split into, by
        key, run at once (the tracker's: each a transaction on its own connection, so
        that the database works on several cores); one key's messages stay in one call,
        in order. The offsets are committed once every call has returned."""
        self._only = {name: value.encode() for name, value in (only or {}).items()}
        self._settings = settings
        self._topics = [settings.topic(topic) for topic in topics]
        self._group = group
        self._dead_letters = dead_letters
        self._contracts = contracts
        self._max_batch = max_batch
        self._lanes = lanes
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._consumer = AIOKafkaConsumer(
            **client_options(settings),
            group_id=group,
            client_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=max_batch,
            fetch_min_bytes=1024 * 1024 if gather_ms else 1,
            fetch_max_wait_ms=gather_ms or 500,
            session_timeout_ms=settings.session_timeout_ms,
            rebalance_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, settings.session_timeout_ms // 10),
        )
        self._rebalance = _Rebalance(self._lock, group)
        self._last_lag_update = 0.0
        self._task: asyncio.Task[None] | None = None
        #: first offset of each partition in the batch being handled, to go back to
        self._inflight: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        try:
            await self._consumer.start()
        except KafkaError as error:
            raise BrokerError(
                f"cannot reach Kafka at {self._settings.kafka_bootstrap_servers}: {error}"
            ) from error
        self._consumer.subscribe(self._topics, listener=self._rebalance)

    async def start_running(self, handler: Handler, name: str) -> None:
        """Joins the group and runs :meth:`run` in the background until :meth:`stop`."""
        await self.start()
        self._task = asyncio.create_task(self.run(handler), name=name)

    @property
    def group(self) -> str:
        return self._group

    async def check_joined(self) -> None:
        """A readiness check: raises until this member has joined its group, and once its
        loop has ended."""
        if self._task is not None and self._task.done():
            raise BrokerError(f"the {self._group} consumer has stopped")
        if not self._rebalance.joined:
            raise BrokerError(f"not in the {self._group} group yet")

    async def stop(self, grace_s: float = STOP_TIMEOUT_S) -> None:
        """Lets the batch in hand finish (and commit) for up to ``grace_s`` seconds, then
        leaves the group. A batch still running then is cancelled uncommitted: the next
        owner of its partitions consumes it again (handlers are idempotent).

        The loop ends first (it starts no batch once ``_stopping`` is set), so the lock is
        free when the consumer leaves: leaving revokes the partitions, and the revocation
        takes the lock. Holding it here would deadlock whenever another member of the
        group is in the same process."""
        self._stopping.set()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            try:
                # asyncio.wait, not awaiting the task: a cancellation of this call is
                # raised here, not mistaken for the loop's own end
                done, _ = await asyncio.wait({task}, timeout=grace_s)
                if not done:
                    log.warning(
                        "the batch in hand did not finish in time; left uncommitted",
                        group=self._group,
                        grace_s=grace_s,
                    )
                    task.cancel()
                    await asyncio.wait({task}, timeout=grace_s)
            except asyncio.CancelledError:
                task.cancel()  # the caller gives up: the loop does too
                raise
            if task.done() and not task.cancelled() and (problem := task.exception()):
                log.error("the consumer's loop had ended", group=self._group, exc_info=problem)
        await self._consumer.stop()

    async def run(self, handler: Handler) -> None:
        """Consumes until :meth:`stop` is called. When a batch fails for a transient reason
        (the database or the broker away), nothing is committed: the consumer goes back to
        the committed offsets and tries the batch again after a growing pause, so nothing
        is skipped. A failure for good is isolated to its message (:meth:`_isolate`)."""
        self._task = self._task or asyncio.current_task()  # what :meth:`stop` waits for
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._poll_once(handler)
                failures = 0
            except Exception as problem:  # noqa: BLE001 - transient by now: retried later
                failures += 1
                log.warning(
                    "batch failed; it will be consumed again",
                    group=self._group,
                    error=f"{type(problem).__name__}: {str(problem)[:300]}",
                    failures=failures,
                )
                async with self._lock:
                    if self._stopping.is_set():
                        return
                    owned = self._consumer.assignment()
                    for tp, offset in self._inflight.items():
                        if tp in owned:
                            self._consumer.seek(tp, offset)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), min(30.0, 0.5 * 2 ** min(failures, 6))
                    )

    async def _poll_once(self, handler: Handler) -> None:
        batches = await self._consumer.getmany(timeout_ms=500, max_records=self._max_batch)
        if batches:
            async with self._lock:
                if self._stopping.is_set():
                    return
                # A rebalance may have taken partitions away since getmany returned: their
                # messages now belong to another member, which will consume them.
                owned = self._consumer.assignment()
                batches = {tp: messages for tp, messages in batches.items() if tp in owned}
                if batches:
                    self._inflight = {tp: messages[0].offset for tp, messages in batches.items()}
                    await self._handle(batches, handler)
        await self._update_lag()

    async def _handle(self, batches: dict[TopicPartition, list[Any]], handler: Handler) -> None:
        started = time.monotonic()
        lanes: list[list[Record]] = [[] for _ in range(self._lanes)]
        for messages in batches.values():
            for message in messages:
                if self._only and not self._wanted(message):
                    continue
                record = self._decode(message)
                if isinstance(record, str):
                    await self._dead_letters.record(
                        message, self._group, "contract_violation", record
                    )
                else:  # by key: one key's messages in one lane, in order
                    lanes[hash(message.key) % len(lanes)].append(record)
        busy = [lane for lane in lanes if lane]
        if len(busy) == 1:
            await self._handle_or_isolate(busy[0], handler)
        elif busy:
            # every lane runs to its end, even when another failed: a transaction is never
            # cut off halfway, and what did commit is done again (idempotently) on a retry
            outcomes = await asyncio.gather(
                *(self._handle_or_isolate(lane, handler) for lane in busy),
                return_exceptions=True,
            )
            failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            for other in failures[1:]:  # the first is raised, and told by run
                log.warning(
                    "another lane of the batch failed too",
                    group=self._group,
                    error=f"{type(other).__name__}: {str(other)[:300]}",
                )
            if failures:
                raise failures[0]
        try:
            await self._consumer.commit(
                {tp: messages[-1].offset + 1 for tp, messages in batches.items()}
            )
        except (CommitFailedError, IllegalStateError) as problem:
            # The group moved on while we worked: the work is durable and idempotent, so
            # the new owner's redelivery is harmless. Not committing is the safe side.
            log.warning("commit refused after a rebalance", group=self._group, error=str(problem))
            return
        for tp, messages in batches.items():
            CONSUMED.labels(tp.topic, self._group).inc(len(messages))
        BATCH_SECONDS.labels(self._group).observe(time.monotonic() - started)

    async def _handle_or_isolate(self, records: list[Record], handler: Handler) -> None:
        """Hands ``records`` to the handler. A failure for good is not the batch's: the
        batch is halved and each half handled again, down to the messages that fail on
        their own, which are set aside; the others are handled (handlers are idempotent,
        and each call is one transaction, so a failed call left nothing behind). A
        transient failure is raised: the whole batch is tried again later."""
        try:
            await handler(records)
        except Exception as problem:
            if faults.is_transient(problem):
                raise
            if len(records) == 1:
                await self._set_aside(records[0].message, problem)
                return
            log.warning(
                "batch failed for good; isolating the message at fault",
                group=self._group,
                messages=len(records),
                error=f"{type(problem).__name__}: {str(problem)[:300]}",
            )
            middle = len(records) // 2
            await self._handle_or_isolate(records[:middle], handler)
            await self._handle_or_isolate(records[middle:], handler)

    async def _set_aside(self, message: Any, problem: BaseException) -> None:
        log.error(
            "handling a message failed for good",
            group=self._group,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            exc_info=problem,
        )
        await self._dead_letters.record(
            message,
            self._group,
            faults.reason(problem),
            f"{type(problem).__name__}: {problem}",
        )

    def _wanted(self, message: Any) -> bool:
        # the headers as they come, not a dict of them: 0.34 instead of 0.53 us a message
        only = self._only
        return all(only.get(name, value) == value for name, value in message.headers or ())

    def _decode(self, message: Any) -> Record | str:
        """The message as a :class:`Record`, or why it breaks its contract."""
        try:
            value = orjson.loads(message.value)
            self._contracts.validate(value)
        except (ValueError, TypeError) as error:  # a broken contract is a ValueError
            return str(error)
        key = message.key.decode(errors="replace") if message.key is not None else None
        return Record(message.topic, message.partition, message.offset, key, value, message)

    async def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_update < 5:
            return
        self._last_lag_update = now
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            position = await self._consumer.position(tp)
            LAG.labels(tp.topic, str(tp.partition), self._group).set(max(0, highwater - position))
