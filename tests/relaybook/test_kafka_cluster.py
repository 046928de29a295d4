"""The embedded Apache Kafka's configuration: what a test on it relies on."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaybook.kafka_cluster import EmbeddedKafka


def properties(cluster: EmbeddedKafka, node: int) -> dict[str, str]:
    text = cluster._properties(node, "1@127.0.0.1:1")
    return dict(line.split("=", 1) for line in text.splitlines())


def test_one_node_is_a_combined_node_whose_internal_topics_have_one_replica(
    tmp_path: Path,
) -> None:
    cluster = EmbeddedKafka(tmp_path, nodes=1)
    shown = properties(cluster, 1)
    assert shown["process.roles"] == "broker,controller"
    assert shown["offsets.topic.replication.factor"] == "1"
    assert shown["transaction.state.log.min.isr"] == "1"
    assert shown["min.insync.replicas"] == "1"
    assert shown["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{cluster.ports[0]}"
    assert shown["log.dirs"] == str(tmp_path.resolve() / "kafka" / "node-1" / "data")
    assert cluster.bootstrap_servers == f"127.0.0.1:{cluster.ports[0]}"


def test_three_nodes_replicate_everything_three_times_and_acknowledge_with_two(
    tmp_path: Path,
) -> None:
    cluster = EmbeddedKafka(tmp_path, nodes=3, port=cluster_port())
    assert cluster.ports[0] == cluster_port()
    assert len(set(cluster.ports + cluster.controller_ports)) == 6
    for node in (1, 2, 3):
        shown = properties(cluster, node)
        assert shown["node.id"] == str(node)
        assert shown["default.replication.factor"] == "3"
        assert shown["offsets.topic.replication.factor"] == "3"
        assert shown["transaction.state.log.replication.factor"] == "3"
        assert shown["min.insync.replicas"] == "2"
        assert shown["transaction.state.log.min.isr"] == "2"
        # tests and `up` use short consumer sessions on the embedded brokers
        assert int(shown["group.min.session.timeout.ms"]) <= 1000
    assert cluster.bootstrap_servers.count(",") == 2


def test_a_cluster_has_one_node_or_three(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 or 3 nodes"):
        EmbeddedKafka(tmp_path, nodes=2)


def cluster_port() -> int:
    return 39_092
