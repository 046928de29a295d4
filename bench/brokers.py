"""The broker a benchmark runs on (``--broker``), chosen here for every script: the
embedded Tansu, in memory (``tansu``, the default), or the embedded Apache Kafka of one
node (``kafka``) or three (``kafka3``: replication 3, min.insync.replicas=2).

On Apache Kafka, relaybook runs as production would: the idempotent producer on, every
topic replicated on every node, ``acks=all`` (relaybook's always); the floors produce
with the same settings (bench/floors.py), so that the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from relaybook.platform.settings import env_name
from relaybook.tooling.embedded import EmbeddedBroker
from relaybook.tooling.kafka_cluster import EmbeddedKafka
from relaybook.tooling.kafka_release import KAFKA_VERSION

BROKERS = ("tansu", "kafka", "kafka3")


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        choices=BROKERS,
        default="tansu",
        help="tansu: the embedded Tansu, in memory (default); kafka: an embedded Apache "
        "Kafka of one node; kafka3: of three (replication 3, min.insync.replicas=2)",
    )


def nodes(name: str) -> int:
    return 3 if name == "kafka3" else 1


def describe(name: str) -> str:
    """What the figures were measured on, and how durable an acknowledgement was there:
    for the header of every script's output."""
    if name == "tansu":
        return (
            "the embedded Tansu, in memory (an acknowledged message is in its memory "
            "only); acks=all, idempotent producer off"
        )
    count = nodes(name)
    return (
        f"the embedded Apache Kafka {KAFKA_VERSION}, {count} node{'s' if count > 1 else ''} "
        f"on this machine (replication {count}, min.insync.replicas {2 if count == 3 else 1}; "
        "flushed per Kafka's defaults: no fsync per message, the OS writes the page cache "
        "back); acks=all, idempotent producer on"
    )


def up_environment(name: str) -> dict[str, str]:
    """The variables that make `relaybook up` start this broker; `up` itself then turns
    the idempotent producer on and replicates the topics on every node."""
    environment = {env_name("embedded_broker"): "tansu" if name == "tansu" else "kafka"}
    if name != "tansu":
        environment[env_name("embedded_kafka_nodes")] = str(nodes(name))
    return environment


class Broker:
    """The broker ``name``, started in this process with its data (Apache Kafka's) under
    ``data_dir``. Start it from the main thread: its processes die with the thread that
    started them (see ``relaybook.tooling.embedded.die_with_parent``)."""

    def __init__(self, name: str, data_dir: Path) -> None:
        if name not in BROKERS:
            raise ValueError(f"no broker {name!r}: one of {', '.join(BROKERS)}")
        self.name = name
        self.description = describe(name)
        self._server: EmbeddedBroker | EmbeddedKafka = (
            EmbeddedBroker() if name == "tansu" else EmbeddedKafka(data_dir, nodes=nodes(name))
        )

    def start(self) -> dict[str, Any]:
        """Starts the broker; returns the settings that point relaybook at it, as
        production would run on it (``dataclasses.replace`` or ``Settings`` keywords)."""
        servers = self._server.start()
        if isinstance(self._server, EmbeddedBroker):
            return {"kafka_bootstrap_servers": servers}
        return {
            "kafka_bootstrap_servers": servers,
            "kafka_enable_idempotence": True,
            "kafka_replication_factor": self._server.replication_factor,
        }

    def stop(self) -> None:
        """Stops the broker and removes Apache Kafka's storage, which would otherwise pile
        up in the temporary directory run after run (a broker that failed to start is not
        stopped: its nodes' ``server.log`` stay to say why)."""
        self._server.stop()
        if isinstance(self._server, EmbeddedKafka):
            shutil.rmtree(self._server.root, ignore_errors=True)
