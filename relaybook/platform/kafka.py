"""Kafka plumbing over aiokafka: topics, a JSON producer that waits for every replica
(``acks=all``) and a consumer that commits offsets only after the work is durable.

Every message is checked against its JSON Schema (``schemas/``) on both sides. A message
that does not follow its contract, or whose handling fails for good, is not dropped and
does not stop its consumer: it is set aside in the dead letters
(:mod:`relaybook.platform.deadletters`) with where it came from, and the consumer moves on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import os
import random
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    RequestTimedOutError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest
from prometheus_client import Counter, Gauge, Histogram

import schemas
from relaybook.platform import faults
from relaybook.platform.deadletters import DeadLetters
from relaybook.platform.logs import get_logger
from relaybook.platform.settings import Settings, SettingsError

log = get_logger(__name__)

#: relaybook's topics, without the configured prefix
TOPICS = ("send-jobs", "delivery-events", "recipient-events", "dead-letters")
#: the top-level fields also sent as headers, per topic, so that a consumer can pass over
#: messages that are not its own without decoding them (each send-worker lane its
#: channel), and route by agency without a lookup
HEADER_FIELDS: dict[str, tuple[str, ...]] = {
    "send-jobs": ("channel", "agency"),
    "delivery-events": ("agency",),
    "recipient-events": ("agency",),
}


PRODUCED = Counter(
    "relaybook_kafka_messages_produced_total", "Messages acknowledged by the broker", ["topic"]
)
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


#: a record batch's size: under a broker's default limit for one (message.max.bytes, 1 MiB)
MAX_BATCH_BYTES = 512 * 1024
#: how long a consumer's stop waits for the batch in hand before cancelling it: within
#: the shortest grace a supervisor gives a stopping process (`up` 20 s, compose 30 s)
STOP_TIMEOUT_S = 10.0


class BrokerError(faults.UnavailableError):
    """The broker cannot be reached or refused a request."""


class UnacknowledgedError(BrokerError):
    """Some records of a publication were not acknowledged: ``records`` are those, in
    their order (the others were)."""

    def __init__(self, message: str, records: Sequence[tuple[str | None, bytes, Headers]]) -> None:
        super().__init__(message)
        self.records = records


#: a record's headers (aiokafka's record builder takes a list only; never changed once made)
Headers = list[tuple[str, bytes]]


class Fields(Protocol):
    """A message's fields by name: a dict, or a database row holding them."""

    def get(self, name: str, /) -> Any: ...


def headers_for(topic: str, message: Fields) -> Headers:
    """The headers a message of one of relaybook's topics (unprefixed) carries: the
    values of its ``HEADER_FIELDS`` it has."""
    names = HEADER_FIELDS.get(topic)
    return _headers(names, tuple(message.get(name) for name in names)) if names else []


@functools.cache
def _headers(names: tuple[str, ...], values: tuple[Any, ...]) -> Headers:
    # one list per combination of values (a channel and an agency): encoding them for
    # every message was 8 % of the relay
    return [(name, str(value).encode()) for name, value in zip(names, values, strict=True) if value]


def encode(message: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (orjson: a tenth of the standard library's time, which was a
    third of the relay's)."""
    return orjson.dumps(message)


def client_options(settings: Settings) -> dict[str, Any]:
    """Where the cluster is and how to reach it: the keyword arguments every aiokafka
    producer, consumer and admin client of relaybook is built with, so that a secured
    cluster is reached by all of them or by none.

    Raises :class:`SettingsError` (one line) when the TLS files cannot be loaded."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = _ssl_context(
            settings.kafka_ssl_ca_file, settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file
        )
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


@functools.cache
def _ssl_context(
    ca_file: os.PathLike[str] | None,
    cert_file: os.PathLike[str] | None,
    key_file: os.PathLike[str] | None,
) -> ssl.SSLContext:
    # One context per process and files: loading them for every client costs a few ms each.
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=ca_file,
            certfile=cert_file,
            keyfile=key_file,
            # an encrypted key fails here instead of OpenSSL prompting on the terminal
            password=_no_passphrase,
        )
    except (ssl.SSLError, OSError) as error:
        files = ", ".join(str(path) for path in (ca_file, cert_file, key_file) if path)
        raise SettingsError(f"the Kafka TLS files ({files}) cannot be loaded: {error}") from None
    return context


def _no_passphrase() -> str:
    return ""


async def check_reachable(settings: Settings) -> None:
    """Returns once a bootstrap server answers a metadata request over relaybook's
    security settings; else raises :class:`BrokerError` saying why, in one line: the SASL
    credentials refused, the broker's certificate not trusted, or the server away.

    aiokafka's clients only log why they cannot bootstrap, and then raise "Unable to
    bootstrap": a process checks this first so that start-up stops with the reason."""
    options = client_options(settings)
    del options["bootstrap_servers"]
    problems = []
    for host, port, _ in collect_hosts(settings.kafka_bootstrap_servers or ""):
        try:
            connection = await create_conn(host, port, request_timeout_ms=10_000, **options)
        except (KafkaError, OSError, TimeoutError) as error:
            problems.append(_refusal(settings, f"{host}:{port}", error))
            continue
        try:
            # a broker that wants a client certificate closes the connection only now
            await connection.send(MetadataRequest([]))
        except (KafkaError, OSError, TimeoutError) as error:
            problems.append(_refusal(settings, f"{host}:{port}", error))
            continue
        finally:
            connection.close()
        return
    # every server's reason: they may differ (one away, another refusing the password)
    raise BrokerError("; ".join(problems) or "no bootstrap server")


def _refusal(settings: Settings, server: str, error: BaseException) -> str:
    """What an operator needs to hear of a failed connection to ``server``."""
    if isinstance(error, SaslAuthenticationFailed):
        return (
            f"Kafka at {server} refused the SASL credentials of user "
            f"{settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism}): check "
            f"RELAYBOOK_KAFKA_SASL_USERNAME and RELAYBOOK_KAFKA_SASL_PASSWORD ({error})"
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        trusted = (
            f"RELAYBOOK_KAFKA_SSL_CA_FILE={settings.kafka_ssl_ca_file}"
            if settings.kafka_ssl_ca_file is not None
            else "the system's authorities (RELAYBOOK_KAFKA_SSL_CA_FILE is not set)"
        )
        return (
            f"the TLS certificate of Kafka at {server} is not trusted by {trusted}: "
            f"{error.verify_message}"
        )
    said = str(error) if isinstance(error, KafkaError) else f"{type(error).__name__}: {error}"
    if isinstance(error, TimeoutError):
        said = "no answer within 10 s"
    return f"cannot reach Kafka at {server}: {said}"


async def ensure_topics(settings: Settings, names: Iterable[str] = TOPICS) -> None:
    """Creates relaybook's topics with the configured partition count when they are missing.

    Raises :class:`BrokerError` naming the topics the cluster did not create and why (no
    Create ACL for relaybook's principal, more replicas than brokers...), or when the
    cluster cannot be reached."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)
    try:
        await admin.start()
        await _create_missing(admin, settings, names)
    except KafkaError as error:
        raise BrokerError(
            f"cannot create topics on Kafka at {settings.kafka_bootstrap_servers}: {error}"
        ) from error
    finally:
        await admin.close()


async def _create_missing(
    admin: AIOKafkaAdminClient, settings: Settings, names: Iterable[str]
) -> None:
    existing = set(await admin.list_topics())
    missing = [topic for name in names if (topic := settings.topic(name)) not in existing]
    if not missing:
        return
    answer = await admin.create_topics(
        [
            NewTopic(topic, settings.kafka_partitions, settings.kafka_replication_factor)
            for topic in missing
        ]
    )
    # aiokafka raises none of the topics' errors: each is in the answer. Another replica
    # may have created a topic meanwhile; a timed-out creation may yet complete.
    errors = {
        topic: (code, said[0] if said else "")
        for topic, code, *said in answer.topic_errors
        if code not in {0, TopicAlreadyExistsError.errno}
    }
    deadline = time.monotonic() + 10
    while (
        any(code == RequestTimedOutError.errno for code, _ in errors.values())
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.5)
        existing = set(await admin.list_topics())
        errors = {topic: error for topic, error in errors.items() if topic not in existing}
    refused: dict[str, list[str]] = {}
    for topic, (code, said) in errors.items():
        refused.setdefault(f"{for_code(code).__name__}: {said}", []).append(topic)
    if refused:
        raise BrokerError(
            "Kafka did not create "
            + "; ".join(f"{', '.join(sorted(ts))} ({why})" for why, ts in refused.items())
        )
    log.info("topics created", topics=missing, partitions=settings.kafka_partitions)


_WORDS = struct.Struct("<I").iter_unpack


def murmur2(data: bytes) -> int:
    """The Java client's murmur2 (``Utils.murmur2``) as an unsigned 32-bit integer: the
    same value as aiokafka's, in half the time (that one reads the key byte by byte)."""
    m = 0x5BD1E995
    length = len(data)
    end = length & ~3
    h = 0x9747B28C ^ length
    for (word,) in _WORDS(data[:end]):
        k = (word * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ (((k ^ (k >> 24)) * m) & 0xFFFFFFFF)
    extra = length & 3
    if extra == 3:
        h ^= data[end + 2] << 16
    if extra >= 2:
        h ^= data[end + 1] << 8
    if extra:
        h = ((h ^ data[end]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_of(key: bytes | None, partitions: Sequence[int]) -> int:
    """The partition the Java client's default partitioner gives ``key``, so a key's
    partition is the same whichever client produced it; a message without a key goes to
    any of them."""
    if key is None:
        return random.choice(partitions)  # noqa: S311 - spreading, not a secret
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


class Producer:
    """JSON producer: every message is validated, then sent with ``acks=all``."""

    def __init__(self, settings: Settings, *, client_id: str = "relaybook") -> None:
        self._settings = settings
        self._producer = AIOKafkaProducer(
            **client_options(settings),
            client_id=client_id,
            acks="all",
            enable_idempotence=settings.kafka_enable_idempotence,
            # no waiting for more: the callers fill the batches themselves (send_encoded,
            # SharedBatches), and a linger only added to every webhook's answer (5 ms:
            # ingest at 4 posts in flight 22,600 events/s, p50 17.7 ms; 0: 47,500, 8.1 ms)
            linger_ms=0,
            # a batch a partition may be in aiokafka's queue: under load it is the whole
            # throughput of a round trip (16 KiB by default: ~30 webhook events)
            max_batch_size=MAX_BATCH_BYTES,
            request_timeout_ms=15_000,
        )

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as error:
            raise BrokerError(
                f"cannot reach Kafka at {self._settings.kafka_bootstrap_servers}: {error}"
            ) from error

    async def stop(self) -> None:
        await self._producer.stop()

    def full_topic(self, topic: str) -> str:
        return self._settings.topic(topic)

    async def partitions(self, full_topic: str) -> list[int]:
        try:
            partitions = sorted(await self._producer.partitions_for(full_topic) or ())
        except KafkaError as error:
            raise BrokerError(f"no partitions of {full_topic} known: {error}") from error
        if not partitions:  # a topic being created, or metadata from a broker starting up
            raise BrokerError(f"no partitions of {full_topic} known yet")
        return partitions

    def create_batch(self) -> Any:
        return self._producer.create_batch()

    async def send_batch(self, batch: Any, full_topic: str, partition: int) -> Any:
        """Queues a record batch; returns the future of its acknowledgement."""
        return await self._producer.send_batch(batch, full_topic, partition=partition)

    async def send_many(
        self, topic: str, messages: Sequence[tuple[str | None, dict[str, Any]]]
    ) -> None:
        """Publishes ``(key, message)`` pairs to one of relaybook's topics (unprefixed name)
        and returns once the broker acknowledged every one of them.

        Raises :class:`schemas.MessageError` before sending anything if one message breaks
        its contract, and :class:`BrokerError` if the broker did not acknowledge them all.
        """
        for _, message in messages:
            schemas.validate(message)
        await self.send_encoded(
            topic,
            [(key, encode(message), headers_for(topic, message)) for key, message in messages],
        )

    async def send_encoded(
        self, topic: str, records: Sequence[tuple[str | None, bytes, Headers]]
    ) -> None:
        """Publishes ``(key, JSON value, headers)`` records already checked against their
        contract (the outbox's, checked when they were written); waits for every
        acknowledgement like :meth:`send_many`.

        Raises :class:`UnacknowledgedError` naming the records the broker did not take when it
        took some: a caller that retries only those publishes none of the others twice.
        """
        full_topic = self._settings.topic(topic)
        try:
            partitions = await self.partitions(full_topic)
        except BrokerError as error:
            raise UnacknowledgedError(str(error), records) from error
        # Record batches filled here, one open per partition, instead of a send() and a
        # future per message (that bookkeeping cost more than the messages): a
        # partition's batches go out in order, so one key's messages stay in order.
        batches: list[tuple[int, Any, list[int]]] = []
        open_batches: dict[int, tuple[Any, list[int]]] = {}
        placed: dict[bytes, int] = {}  # a recipient's email and text share a key
        for index, (key, value, headers) in enumerate(records):
            encoded = key.encode() if key is not None else None
            record = {"key": encoded, "value": value, "timestamp": None, "headers": headers}
            if encoded is None:
                partition = partition_of(None, partitions)
            elif (partition := placed.get(encoded, -1)) < 0:
                partition = placed[encoded] = partition_of(encoded, partitions)
            filling = open_batches.get(partition)
            if filling is None or filling[0].append(**record) is None:
                filling = open_batches[partition] = (self._producer.create_batch(), [])
                batches.append((partition, *filling))
                filling[0].append(**record)  # the first record always fits
            filling[1].append(index)
        sent: list[tuple[Any, list[int]]] = []
        missed: list[int] = []
        problem: KafkaError | None = None
        for partition, batch, members in batches:
            try:
                sent.append(
                    (
                        await self._producer.send_batch(batch, full_topic, partition=partition),
                        members,
                    )
                )
            except KafkaError as error:
                problem = problem or error
                missed.extend(members)
        for acknowledged, members in sent:
            try:
                await acknowledged
            except KafkaError as error:
                problem = problem or error
                missed.extend(members)
        PRODUCED.labels(full_topic).inc(len(records) - len(missed))
        if missed:
            raise UnacknowledgedError(
                f"Kafka did not acknowledge {len(missed)} of {len(records)} records "
                f"of {full_topic}: {problem!r}",
                [records[index] for index in sorted(missed)],
            )

    async def send(self, topic: str, message: dict[str, Any], *, key: str | None = None) -> None:
        """Publishes one message and waits for its acknowledgement."""
        await self.send_many(topic, [(key, message)])

    async def send_raw(
        self, full_topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        """Publishes bytes as they are (dead letters keep the original bytes)."""
        try:
            await self._producer.send_and_wait(full_topic, value, key=key, headers=headers)
        except KafkaError as error:
            raise BrokerError(f"Kafka did not acknowledge {full_topic}: {error}") from error
        PRODUCED.labels(full_topic).inc()

    async def ping(self) -> None:
        """Raises :class:`BrokerError` unless the cluster answers a metadata request."""
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=5)
        except (KafkaError, TimeoutError) as error:
            raise BrokerError(f"Kafka does not answer: {error!r}") from error


class OverloadedError(faults.UnavailableError):
    """More records in flight than the bound: refused whole, at once (retry later)."""


OVERLOADED = Counter(
    "relaybook_kafka_publish_refused_total",
    "Publications refused whole because too many records were in flight",
    ["topic"],
)


class SharedBatches:
    """Publishes the records of concurrent callers in shared record batches, one open per
    partition, and lets each caller wait only for the acknowledgement of its own records.

    A partition's lane hands its batches to the producer one after the other: while one
    waits for the broker, the records of every caller arriving meanwhile fill the next, so
    the batches grow with the load instead of each caller sending its own small ones and
    queueing behind the others' (aiokafka keeps one batch a partition in its queue). The
    order of one key's records is kept: a lane sends in the order records came.

    At most ``max_in_flight`` records wait for their acknowledgement: past that a call is
    refused whole with :class:`OverloadedError` before any of its records is placed.
    """

    def __init__(self, producer: Producer, max_in_flight: int) -> None:
        self._producer = producer
        self._max = max_in_flight
        self._in_flight = 0
        self._lanes: dict[tuple[str, int], _Lane] = {}

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def send_many(
        self, topic: str, messages: Sequence[tuple[str | None, dict[str, Any]]]
    ) -> None:
        """Like :meth:`Producer.send_many`; :class:`OverloadedError` at once past the
        bound."""
        for _, message in messages:
            schemas.validate(message)
        full_topic = self._producer.full_topic(topic)
        count = len(messages)
        # one call alone may be larger than the bound: it is never refused for its size
        if self._in_flight and self._in_flight + count > self._max:
            OVERLOADED.labels(full_topic).inc()
            raise OverloadedError(f"{self._in_flight} records in flight already")
        self._in_flight += count
        try:
            partitions = await self._producer.partitions(full_topic)
            waits = set()
            # no await from the first record placed to the last: a call is in or out whole
            for key, message in messages:
                encoded = key.encode() if key is not None else None
                partition = partition_of(encoded, partitions)
                lane = self._lanes.get((full_topic, partition))
                if lane is None:
                    lane = self._lanes[full_topic, partition] = _Lane(
                        self._producer, full_topic, partition
                    )
                waits.add(lane.append(encoded, encode(message), headers_for(topic, message)))
            # asyncio.wait, not gather: a caller giving up must not cancel what others share
            await asyncio.wait(waits)
            for acknowledged in waits:
                acknowledged.result()
        finally:
            self._in_flight -= count
        PRODUCED.labels(full_topic).inc(count)


class _Lane:
    """One partition's open batch, the full ones waiting their turn, and the task handing
    them to the producer in order."""

    def __init__(self, producer: Producer, topic: str, partition: int) -> None:
        self._producer = producer
        self._topic = topic
        self._partition = partition
        self._open: Any = None
        self._open_done: asyncio.Future[None] | None = None
        self._full: collections.deque[tuple[Any, asyncio.Future[None]]] = collections.deque()
        self._sender: asyncio.Task[None] | None = None

    def append(self, key: bytes | None, value: bytes, headers: Headers) -> asyncio.Future[None]:
        """Places a record; the future is done once the broker acknowledged its batch."""
        record = {"key": key, "value": value, "timestamp": None, "headers": headers}
        if self._open is None or self._open.append(**record) is None:
            if self._open is not None:
                assert self._open_done is not None
                self._full.append((self._open, self._open_done))
            self._open = self._producer.create_batch()
            self._open_done = _acknowledgement()
            self._open.append(**record)  # the first record always fits
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name=f"lane {self._partition}")
        assert self._open_done is not None
        return self._open_done

    async def _send(self) -> None:
        while self._full or self._open is not None:
            if self._full:
                batch, done = self._full.popleft()
            else:
                assert self._open_done is not None
                batch, done = self._open, self._open_done
                self._open = self._open_done = None
            try:
                # returns once the batch is queued: the previous one has left for the broker
                sent = await self._producer.send_batch(batch, self._topic, self._partition)
            except KafkaError as error:
                done.set_exception(BrokerError(f"Kafka did not take {self._topic}: {error}"))
                continue
            sent.add_done_callback(functools.partial(_settle, done, self._topic))


def _acknowledgement() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    # retrieved even when every caller waiting for it gave up (no "never retrieved" noise)
    done.add_done_callback(lambda f: f.cancelled() or f.exception())
    return done


def _settle(done: asyncio.Future[None], topic: str, sent: asyncio.Future[Any]) -> None:
    if done.done():
        return
    if sent.cancelled():
        done.set_exception(BrokerError(f"Kafka did not acknowledge {topic}: cancelled"))
    elif (error := sent.exception()) is not None:
        done.set_exception(BrokerError(f"Kafka did not acknowledge {topic}: {error}"))
    else:
        done.set_result(None)


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
        settings: Settings,
        topics: Sequence[str],
        group: str,
        *,
        dead_letters: DeadLetters,
        max_batch: int = 500,
        gather_ms: int = 0,
        only: dict[str, str] | None = None,
        lanes: int = 1,
    ) -> None:
        """``gather_ms``: how long the broker may wait to fill a fetch (up to 1 MiB) so that
        batches are large; 0 answers with whatever is there at once (lowest latency).
        ``only``: header values (``HEADER_FIELD``) of the messages to handle; the others
        are passed over undecoded (and committed). A message without the header is
        handled. ``lanes``: how many calls of the handler a batch is split into, by
        key, run at once (the tracker's: each a transaction on its own connection, so
        that the database works on several cores); one key's messages stay in one call,
        in order. The offsets are committed once every call has returned."""
        self._only = {name: value.encode() for name, value in (only or {}).items()}
        self._settings = settings
        self._topics = [settings.topic(topic) for topic in topics]
        self._group = group
        self._dead_letters = dead_letters
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
            schemas.validate(value)
        except (ValueError, TypeError) as error:  # MessageError is a ValueError
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
