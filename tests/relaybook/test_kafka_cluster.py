"""The embedded Apache Kafka's configuration: what a test on it relies on."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from relaybook.tooling.kafka_cluster import EmbeddedKafka, ListenerSecurity


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


def test_a_secured_cluster_secures_the_clients_listener_only(tmp_path: Path) -> None:
    security = ListenerSecurity(
        "SASL_SSL", tmp_path / "broker.pem", tmp_path / "broker.key", scram_users={"rb": "pw"}
    )
    cluster = EmbeddedKafka(tmp_path, nodes=3, security=security)
    assert len(set(cluster.ports + cluster.controller_ports + cluster.internal_ports)) == 9
    for node in (1, 2, 3):
        shown = properties(cluster, node)
        port, internal = cluster.ports[node - 1], cluster.internal_ports[node - 1]
        assert shown["advertised.listeners"] == (
            f"CLIENT://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal}"
        )
        assert shown["listener.security.protocol.map"] == (
            "CLIENT:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
        )
        assert shown["inter.broker.listener.name"] == "INTERNAL"
        assert shown["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
        assert shown["listener.name.client.ssl.keystore.type"] == "PEM"
        assert "listener.name.client.ssl.client.auth" not in shown
        assert "authorizer.class.name" not in shown
    flag, credential = cluster._scram_arguments()
    assert flag == "--add-scram"
    # salted here: StorageTool's command line never holds the password
    assert re.fullmatch(
        r'SCRAM-SHA-512=\[name=rb,salt="[A-Za-z0-9+/=]{32}",'
        r'saltedpassword="[A-Za-z0-9+/=]{88}",iterations=8192\]',
        credential,
    )
    assert cluster.bootstrap_servers.split(",") == [f"127.0.0.1:{p}" for p in cluster.ports]


def test_mutual_tls_and_acls_when_asked(tmp_path: Path) -> None:
    security = ListenerSecurity(
        "SSL", tmp_path / "b.pem", tmp_path / "b.key", client_ca_file=tmp_path / "ca.pem"
    )
    shown = properties(EmbeddedKafka(tmp_path, security=security), 1)
    assert shown["listener.name.client.ssl.client.auth"] == "required"
    assert shown["listener.name.client.ssl.truststore.type"] == "PEM"
    assert shown["listener.name.client.ssl.truststore.location"] == str(tmp_path / "ca.pem")
    assert "listener.name.client.sasl.enabled.mechanisms" not in shown
    checked = dataclasses.replace(security, authorize=True)
    shown = properties(EmbeddedKafka(tmp_path, security=checked), 1)
    assert shown["authorizer.class.name"].endswith(".StandardAuthorizer")
    assert shown["super.users"] == "User:ANONYMOUS"  # the PLAINTEXT listeners' principal


def test_an_unsecured_cluster_serves_its_clients_and_brokers_on_one_plaintext_listener(
    tmp_path: Path,
) -> None:
    cluster = EmbeddedKafka(tmp_path, nodes=1)
    assert cluster.internal_ports == cluster.ports
    shown = properties(cluster, 1)
    assert shown["inter.broker.listener.name"] == "PLAINTEXT"
    assert not [name for name in shown if name.startswith(("listener.name.", "ssl.", "sasl."))]


@pytest.mark.parametrize(
    ("protocol", "users", "message"),
    [
        ("SASL_PLAINTEXT", {"rb": "pw"}, "speaks SSL or SASL_SSL"),
        ("SASL_SSL", {}, "SASL_SSL needs some"),
        ("SSL", {"rb": "pw"}, "SCRAM users go with SASL_SSL"),
        ("SASL_SSL", {"r,b": "pw"}, "no empty name or password"),
        ("SASL_SSL", {"rb": ""}, "no empty name or password"),
    ],
)
def test_a_listener_security_that_cannot_work_is_refused(
    tmp_path: Path, protocol: str, users: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ListenerSecurity(protocol, tmp_path / "c.pem", tmp_path / "k.pem", scram_users=users)
