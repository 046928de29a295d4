"""relaybook on a secured Apache Kafka: the embedded Kafka's client listener speaks
SASL_SSL (SCRAM-SHA-512) or mutual TLS with certificates this module makes; the whole
pipeline runs over it, and a wrong password or an untrusted certificate stops start-up
at once with one line saying so. Needs Java: runs in the ``--broker=kafka`` pass only."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import CreateAclsRequest

from relaybook.platform.kafka import (
    BrokerError,
    check_reachable,
    client_options,
    ensure_topics,
)
from relaybook.tooling.embedded import free_port_settings
from relaybook.tooling.kafka_cluster import EmbeddedKafka, ListenerSecurity
from relaybook.tooling.settings import Settings, load
from relaybook.tooling.system import System
from schemas import TOPICS
from tests.relaybook.certificates import Authority
from tests.support import ADMIN, PROVIDER_SETTINGS, Deployable, notice, until

pytestmark = pytest.mark.apache_kafka

USER, PASSWORD = "relaybook", "s3cret-scram-pw"
#: how long a refused start-up may take, at most (it takes about 2 s)
REFUSED_WITHIN_S = 30.0

# CreateAcls' codes (org.apache.kafka.common.acl and .resource)
TOPIC, GROUP = 2, 3
READ, WRITE, CREATE, DESCRIBE = 3, 4, 5, 8
PREFIXED, ALLOW = 4, 3
#: the ACLs README's "An existing cluster" gives relaybook's principal: (resource type,
#: name prefix, operation), the topics' prefix being relaybook's RELAYBOOK_TOPIC_PREFIX;
#: Write last: once it is in force, so are the others (the nodes apply them in order)
ACLS = (
    (TOPIC, "{prefix}", DESCRIBE),
    (TOPIC, "{prefix}", READ),
    (TOPIC, "{prefix}", CREATE),
    (GROUP, "relaybook-", READ),
    (TOPIC, "{prefix}", WRITE),
)


@dataclasses.dataclass(frozen=True)
class Secured:
    """The module's secured clusters and the files their clients use."""

    sasl_ssl: EmbeddedKafka
    ssl: EmbeddedKafka
    ca_file: Path
    stranger_ca_file: Path
    client_cert_file: Path
    client_key_file: Path

    def environment(
        self, protocol: str, *, password: str = PASSWORD, ca_file: Path | None = None
    ) -> dict[str, str]:
        """The settings (variables) of a client of the ``protocol`` cluster."""
        cluster = self.sasl_ssl if protocol == "SASL_SSL" else self.ssl
        variables = {
            "RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
            "RELAYBOOK_KAFKA_SECURITY_PROTOCOL": protocol,
            "RELAYBOOK_KAFKA_SSL_CA_FILE": str(ca_file or self.ca_file),
        }
        if protocol == "SASL_SSL":
            return variables | {
                "RELAYBOOK_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "RELAYBOOK_KAFKA_SASL_USERNAME": USER,
                "RELAYBOOK_KAFKA_SASL_PASSWORD": password,
            }
        return variables | {
            "RELAYBOOK_KAFKA_SSL_CERT_FILE": str(self.client_cert_file),
            "RELAYBOOK_KAFKA_SSL_KEY_FILE": str(self.client_key_file),
        }

    def settings(self, protocol: str, database_url: str, data_dir: Path) -> Settings:
        """A test's settings on the ``protocol`` cluster: its own database and topics."""
        return load(
            self.environment(protocol) | {"RELAYBOOK_DATABASE_URL": database_url},
            data_dir=data_dir,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
            kafka_partitions=3,
            kafka_replication_factor=1,
            kafka_enable_idempotence=True,
            kafka_session_timeout_ms=1000,
        )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A one-node Kafka whose clients speak SASL_SSL (SCRAM-SHA-512, user ``relaybook``)
    and one whose clients speak TLS with certificates both sides check; started side by
    side, once for the module."""
    root = tmp_path_factory.mktemp("secured-kafka")
    authority, stranger = Authority("relaybook test CA"), Authority("someone else's CA")
    server_cert, server_key = authority.issue(root, "broker")
    client_cert, client_key = authority.issue(root, "relaybook-client")
    clusters = Secured(
        sasl_ssl=EmbeddedKafka(
            root / "sasl-ssl",
            security=ListenerSecurity(
                "SASL_SSL", server_cert, server_key, scram_users={USER: PASSWORD}, authorize=True
            ),
        ),
        ssl=EmbeddedKafka(
            root / "ssl",
            security=ListenerSecurity(
                "SSL", server_cert, server_key, client_ca_file=authority.write(root / "ca.pem")
            ),
        ),
        ca_file=root / "ca.pem",
        stranger_ca_file=stranger.write(root / "stranger-ca.pem"),
        client_cert_file=client_cert,
        client_key_file=client_key,
    )
    with contextlib.ExitStack() as stack:
        for cluster in (clusters.sasl_ssl, clusters.ssl):
            stack.callback(cluster.stop)
            cluster.launch()
        for cluster in (clusters.sasl_ssl, clusters.ssl):
            cluster.wait_until_ready()
        yield clusters


def test_the_secured_listener_is_the_clients_and_the_brokers_talk_plaintext_among_themselves(
    secured: Secured,
) -> None:
    shown = dict(
        line.split("=", 1)
        for line in (secured.sasl_ssl.node_dir(1) / "server.properties").read_text().splitlines()
    )
    assert shown["listener.security.protocol.map"] == (
        "CLIENT:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
    )
    assert shown["advertised.listeners"] == (
        f"CLIENT://127.0.0.1:{secured.sasl_ssl.ports[0]},"
        f"INTERNAL://127.0.0.1:{secured.sasl_ssl.internal_ports[0]}"
    )
    assert shown["inter.broker.listener.name"] == "INTERNAL"
    log = (secured.sasl_ssl.node_dir(1) / "server.log").read_text()
    assert f"creating new entry for {USER} with mechanism SCRAM_SHA_512" in log
    assert "ssl.client.auth=required" not in shown  # SASL_SSL: the password authenticates
    ssl_shown = (secured.ssl.node_dir(1) / "server.properties").read_text()
    assert "listener.name.client.ssl.client.auth=required\n" in ssl_shown


async def grant(cluster: EmbeddedKafka, settings: Settings) -> None:
    """Grants ``User:relaybook`` the :data:`ACLS` on the topics of ``settings``, as the
    super user of the PLAINTEXT listeners; returns once they are in force."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=",".join(f"127.0.0.1:{port}" for port in cluster.internal_ports)
    )
    await admin.start()
    try:
        for resource, name, operation in ACLS:
            answer = await admin._send_request(
                CreateAclsRequest(
                    resource,
                    name.format(prefix=settings.topic_prefix),
                    PREFIXED,
                    f"User:{USER}",
                    "*",
                    operation,
                    ALLOW,
                )
            )
            assert [error for error, _ in answer.creation_responses] == [0]
    finally:
        await admin.close()

    async def may_write() -> bool:  # an idempotent producer starts: Write in force
        producer = AIOKafkaProducer(**client_options(settings), enable_idempotence=True)
        try:
            await producer.start()
        except KafkaError:
            return False
        finally:
            await producer.stop()
        return True

    await until(may_write, within=15)


async def test_the_tls_cluster_turns_away_a_client_without_a_certificate(
    secured: Secured, tmp_path: Path
) -> None:
    variables = secured.environment("SSL")
    del variables["RELAYBOOK_KAFKA_SSL_CERT_FILE"], variables["RELAYBOOK_KAFKA_SSL_KEY_FILE"]
    with pytest.raises(BrokerError, match=r"^cannot reach Kafka at .*: .*Connection at .* closed"):
        await check_reachable(load(variables, data_dir=tmp_path))


async def test_without_the_create_acl_start_up_stops_naming_the_topics_refused(
    secured: Secured, database_url: str, tmp_path: Path
) -> None:
    settings = secured.settings("SASL_SSL", database_url, tmp_path)
    with pytest.raises(BrokerError) as refused:
        await ensure_topics(settings, TOPICS)
    topics = ", ".join(sorted(settings.topic(name) for name in TOPICS))
    assert str(refused.value) == (
        f"Kafka did not create {topics} (TopicAuthorizationFailedError: Authorization failed.)"
    )


async def test_more_replicas_than_brokers_stops_start_up_naming_the_topics(
    secured: Secured, database_url: str, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        secured.settings("SSL", database_url, tmp_path), kafka_replication_factor=3
    )
    with pytest.raises(BrokerError, match=r"^Kafka did not create .*send-jobs.* \(InvalidRepl"):
        await ensure_topics(settings, TOPICS)


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SSL"])
async def test_a_notice_goes_out_and_its_webhooks_come_back_through_a_secured_cluster(
    secured: Secured, database_url: str, tmp_path: Path, protocol: str
) -> None:
    """Every producer, consumer and admin client goes through the secured listener: the
    relay publishes the send jobs, the workers send them to the sandbox, the sandbox's
    signed webhooks go through ingest onto delivery-events and the tracker records them.
    On SASL_SSL the nodes check ACLs, and relaybook has only those of :data:`ACLS`: it
    creates its topics itself, and its idempotent producer needs no IdempotentWrite."""
    settings = secured.settings(protocol, database_url, tmp_path)
    if protocol == "SASL_SSL":
        await grant(secured.sasl_ssl, settings)
    ports: dict[str, Any] = free_port_settings()
    configured = dataclasses.replace(
        settings,
        **ports,
        admin_token=ADMIN,
        sandbox_batch_interval_s=0.05,
        sandbox_open_rate=0.0,
        sandbox_click_rate=0.0,
        sandbox_machine_open_rate=0.0,
    )
    async with (
        System(configured) as system,
        httpx.AsyncClient(
            base_url=system.servers["dispatcher"].url,
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=30,
        ) as api,
    ):
        created = await api.post("/v1/notices", json=notice(2))
        assert created.status_code == 201, created.text
        recipients = f"/v1/notices/{created.json()['id']}/recipients"

        async def delivered() -> bool:
            items = (await api.get(recipients)).json()["items"]
            statuses = {item[channel]["status"] for item in items for channel in ("email", "sms")}
            return len(items) == 2 and statuses == {"delivered"}

        await until(delivered, within=60)
        for name in ("worker", "tracker", "bounce-policy", "ingest", "dispatcher"):
            ready = await api.get(f"{system.servers[name].url}/readyz")
            assert ready.status_code == 200, (name, ready.text)


@pytest.mark.parametrize(
    ("command", "protocol", "mistake", "said"),
    [
        (
            "up",
            "SASL_SSL",
            {"password": "not-the-password"},
            "Kafka at {server} refused the SASL credentials of user 'relaybook' "
            "(SCRAM-SHA-512): check RELAYBOOK_KAFKA_SASL_USERNAME and "
            "RELAYBOOK_KAFKA_SASL_PASSWORD ([Error 58] SaslAuthenticationFailed: ",
        ),
        (
            "worker",
            "SSL",
            {"ca_file": "stranger"},
            "the TLS certificate of Kafka at {server} is not trusted by "
            "RELAYBOOK_KAFKA_SSL_CA_FILE={ca_file}: unable to get local issuer certificate",
        ),
    ],
    ids=["wrong-sasl-password", "untrusted-certificate"],
)
def test_a_refused_connection_is_said_in_one_line_and_fails_readiness_naming_the_cause(
    secured: Secured,
    database_url: str,
    tmp_path: Path,
    command: str,
    protocol: str,
    mistake: dict[str, str],
    said: str,
) -> None:
    """No traceback, no silent retrying: the cause in one line at once. ``up`` (run in a
    terminal) then exits 1 having served nothing; a single deployable (run by an
    orchestrator) stays up, alive on ``/healthz`` and failing ``/readyz`` with the cause,
    asking the broker again until it takes it, and stops cleanly when told to."""
    settings = secured.settings(protocol, database_url, tmp_path)
    ca_file = secured.stranger_ca_file if "ca_file" in mistake else secured.ca_file
    environment = secured.environment(
        protocol, password=mistake.get("password", PASSWORD), ca_file=ca_file
    )
    if command == "worker":  # what it needs besides the broker, to get as far as the broker
        environment |= PROVIDER_SETTINGS
    deployable = Deployable(command, settings, tmp_path, **environment)
    expected = said.format(server=settings.kafka_bootstrap_servers, ca_file=ca_file)
    log = tmp_path / f"{command}.log"
    started = time.monotonic()
    process = deployable.start(command)
    try:
        if command == "up":
            code = process.wait(REFUSED_WITHIN_S)
        else:
            while expected not in (log.read_text() if log.exists() else ""):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() - started < REFUSED_WITHIN_S, log.read_text()
                time.sleep(0.1)
            port = deployable.env["RELAYBOOK_WORKER_PORT"]
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            assert ready.status_code == 503, ready.text
            assert ready.headers["Retry-After"]
            # which server, to anyone on the port; why, in the log only
            assert ready.json()["checks"]["broker"] == "failing", ready.text
            assert expected not in ready.text
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
            process.terminate()
            code = process.wait(REFUSED_WITHIN_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    lines = output.splitlines()
    assert code == (1 if command == "up" else 0), output
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    said = [line for line in lines if not line.startswith("{")]
    mentions = [line for line in said if "SASL" in line or "certificate" in line]
    assert len(mentions) == 1, output
    assert mentions[0].startswith(f"relaybook: {expected}"), output
    assert "Traceback" not in output
    # the failing /readyz logged why, once (up never served it)
    why = [entry["error"] for entry in logged if entry["event"] == "readiness check failing"]
    assert [error.startswith(f"UnavailableError: {expected}") for error in why] == (
        [] if command == "up" else [True]
    ), output
    assert [entry for entry in logged if entry["level"] in {"error", "critical"}] == []
    assert "not-the-password" not in output
    if command == "up":
        port = deployable.env["RELAYBOOK_API_PORT"]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
