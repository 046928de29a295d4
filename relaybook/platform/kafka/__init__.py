"""Kafka plumbing over aiokafka, knowing no topic or message of its own (their owner hands
them in as :class:`Contracts`): reaching the cluster (:mod:`.connection`), creating topics
(:mod:`.topics`), a producer that waits for every replica (``acks=all``,
:mod:`.producer`), shared batches for concurrent callers (:mod:`.batching`) and a consumer
that commits offsets only after the work is durable (:mod:`.consumer`).

Every message is checked against its contract on both sides. A message that does not
follow its contract, or whose handling fails for good, is not dropped and does not stop
its consumer: it is set aside in the dead letters (:mod:`relaybook.platform.deadletters`)
with where it came from, and the consumer moves on.
"""

from relaybook.platform.kafka.batching import OverloadedError, SharedBatches
from relaybook.platform.kafka.connection import (
    BrokerError,
    UnacknowledgedError,
    check_reachable,
    client_options,
)
from relaybook.platform.kafka.consumer import STOP_TIMEOUT_S, Consumer, Handler, Record
from relaybook.platform.kafka.contracts import Contracts, Fields, Headers
from relaybook.platform.kafka.producer import (
    MAX_BATCH_BYTES,
    Producer,
    encode,
    murmur2,
    partition_of,
)
from relaybook.platform.kafka.topics import ensure_topics

__all__ = [
    "MAX_BATCH_BYTES",
    "STOP_TIMEOUT_S",
    "BrokerError",
    "Consumer",
    "Contracts",
    "Fields",
    "Handler",
    "Headers",
    "OverloadedError",
    "Producer",
    "Record",
    "SharedBatches",
    "UnacknowledgedError",
    "check_reachable",
    "client_options",
    "encode",
    "ensure_topics",
    "murmur2",
    "partition_of",
]
