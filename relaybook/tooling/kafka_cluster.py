"""Apache Kafka, embedded: one node or three in KRaft mode on 127.0.0.1, run from the
Maven Central artifacts (``RELAYBOOK_EMBEDDED_BROKER=kafka``).

The jars of a pinned version come from :mod:`relaybook.tooling.kafka_release` (fetched once per
machine; ``make kafka`` does it ahead of time); each node runs as its own JVM with a
small heap, its storage and its log file under the given data directory. Like the Tansu
broker, the nodes die with the process that started them, even when it is killed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from relaybook.platform.logs import get_logger
from relaybook.tooling.embedded import EmbeddedError, die_with_parent, free_ports
from relaybook.tooling.kafka_release import KAFKA_VERSION, classpath, require_java

log = get_logger(__name__)

#: FindCoordinator's key type of a consumer group
_GROUP = 0

#: per node: enough for tests and a development machine (the start scripts' default is 1 GiB)
HEAP = "384m"
#: PBKDF2 rounds of the SCRAM credentials the embedded cluster is formatted with
SCRAM_ITERATIONS = 8192
JVM_OPTIONS = (
    f"-Xmx{HEAP}",
    "-Xms128m",
    "-XX:+UseSerialGC",  # no parallel GC threads fighting for two cores
    "-Xss512k",
    "-Djava.awt.headless=true",
)

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
"""


@dataclasses.dataclass(frozen=True)
class ListenerSecurity:
    """How the client listener of an embedded Kafka is secured.

    ``protocol``: ``SSL`` or ``SASL_SSL``. ``cert_file``: the brokers' certificate chain
    (PEM, their own certificate first) and ``key_file`` its private key (PEM, not
    encrypted); both are written into one PEM key store per node. ``client_ca_file``:
    with it, clients must present a certificate these authorities signed (mutual TLS).
    ``scram_users``: for ``SASL_SSL``, the SCRAM-SHA-512 users (name -> password), created
    when the storage is formatted, that is on the first start of a data directory only.
    ``authorize``: the nodes check ACLs (``StandardAuthorizer``): a client of the secured
    listener may do only what ACLs grant its principal. The principal of the PLAINTEXT
    listeners, ``User:ANONYMOUS`` (the nodes themselves, and whoever connects to those
    ports on 127.0.0.1, as tests do to grant ACLs), is a super user.
    """

    protocol: str
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    scram_users: Mapping[str, str] = dataclasses.field(default_factory=dict)
    authorize: bool = False

    def __post_init__(self) -> None:
        if self.protocol not in {"SSL", "SASL_SSL"}:
            raise ValueError("a secured listener speaks SSL or SASL_SSL")
        if (self.protocol == "SASL_SSL") != bool(self.scram_users):
            raise ValueError("SCRAM users go with SASL_SSL, and SASL_SSL needs some")
        for name, password in self.scram_users.items():
            # StorageTool's --add-scram reads name=...,salt=... between brackets
            if not name or not password or any(c in name for c in ",=[]'\""):
                raise ValueError(
                    f"SCRAM user {name!r}: no empty name or password, no ,=[]'\" in a name"
                )


class EmbeddedKafka:
    """Apache Kafka in KRaft mode on 127.0.0.1: ``nodes`` combined broker-controller
    nodes (1, or 3 with replication 3 and ``min.insync.replicas=2``), data under
    ``data_dir / "kafka"``, kept across runs; the storage is formatted on first start.

    The controller quorum is a static ``controller.quorum.voters`` list, for one node as
    for three: the ports may then change from one start to the next on the same data,
    which a quorum formatted with ``--standalone`` (it records its voters' endpoints)
    would not allow.

    With ``security``, the clients' listener (:attr:`ports`) is secured, and the brokers
    replicate between themselves over a PLAINTEXT listener of their own
    (:attr:`internal_ports`), which also serves the readiness check.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        nodes: int = 1,
        port: int = 0,
        security: ListenerSecurity | None = None,
    ) -> None:
        if nodes not in {1, 3}:
            raise ValueError("an embedded Kafka has 1 or 3 nodes")
        self.nodes = nodes
        self.security = security
        self.root = data_dir.resolve() / "kafka"
        chosen = free_ports((2 if security is None else 3) * nodes)
        self.ports = [port or chosen[0], *chosen[1:nodes]]
        self.controller_ports = chosen[nodes : 2 * nodes]
        #: the PLAINTEXT listeners the brokers use between themselves: the clients' ones
        #: unless those are secured
        self.internal_ports = self.ports if security is None else chosen[2 * nodes :]
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def replication_factor(self) -> int:
        """The replication factor of topics: every node holds every partition."""
        return self.nodes

    @property
    def min_insync_replicas(self) -> int:
        return 2 if self.nodes == 3 else 1

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def node_dir(self, node: int) -> Path:
        """Node ``node``'s (1-based) directory: ``server.properties``, ``server.log``,
        and its storage in ``data/``."""
        return self.root / f"node-{node}"

    def start(self, timeout: float = 90.0) -> str:
        """Starts every node and waits until the cluster answers a metadata request with
        all its brokers; returns the bootstrap servers. Call it from a long-lived thread:
        the nodes die with the thread that started them (see ``die_with_parent``)."""
        started = time.monotonic()
        self.launch()
        try:
            self.wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info(
            "embedded kafka ready",
            version=KAFKA_VERSION,
            nodes=self.nodes,
            bootstrap_servers=self.bootstrap_servers,
            seconds=round(time.monotonic() - started, 1),
        )
        return self.bootstrap_servers

    def launch(self) -> None:
        """Configures (and on first start formats) every node and starts their JVMs,
        without waiting for them: :meth:`wait_until_ready` does (on any thread)."""
        jars = classpath()
        java = require_java()
        self._configure(java, jars)
        # one by one into the list: if a launch fails, :meth:`stop` still finds the
        # nodes started before it
        self._processes = []
        for node in range(1, self.nodes + 1):
            self._processes.append(self._launch(java, jars, node))

    def restart(self, node: int) -> None:
        """Starts node ``node`` (1-based) again after :meth:`kill`, without waiting."""
        process = self._processes[node - 1]
        if process.poll() is None:
            raise EmbeddedError(f"embedded kafka node {node} is still running")
        self._processes[node - 1] = self._launch(require_java(), classpath(), node)

    def _launch(self, java: str, jars: str, node: int) -> subprocess.Popen[bytes]:
        directory = self.node_dir(node)
        with (directory / "stdout.log").open("ab") as output:
            return subprocess.Popen(  # noqa: S603 - the JDK's java, our own arguments
                [
                    java,
                    *JVM_OPTIONS,
                    f"-Dlog4j2.configurationFile={directory / 'log4j2.properties'}",
                    f"-Dkafka.logs.dir={directory}",
                    "-cp",
                    jars,
                    "kafka.Kafka",
                    str(directory / "server.properties"),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=directory,
                # out of the terminal's process group: Ctrl-C stops relaybook,
                # which stops the nodes after its consumers, not all at once
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only calls prctl
            )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to every node at once (a node stopped alone waits for a quorum that
        is leaving too), SIGKILL to those still running after ``timeout`` seconds."""
        processes, self._processes = self._processes, []
        running = [process for process in processes if process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                log.warning("embedded kafka node killed after SIGTERM", pid=process.pid)
        if running:
            log.info("embedded kafka stopped")

    def kill(self, node: int) -> None:
        """SIGKILL one node (1-based), for failure tests; :meth:`stop` still stops the rest."""
        process = self._processes[node - 1]
        process.kill()
        process.wait()

    def active_controller(self) -> int:
        """The node (1-based) that leads the controller quorum now, as the quorum state
        of a running node records it. A leader that is not running is passed over (a
        node's record lags a leader's death until the next election)."""
        running = {node for node, p in enumerate(self._processes, 1) if p.poll() is None}
        for node in sorted(running):
            state = self.node_dir(node) / "data" / "__cluster_metadata-0" / "quorum-state"
            with contextlib.suppress(OSError, ValueError):
                leader = int(json.loads(state.read_text()).get("leaderId", -1))
                if leader in running:
                    return leader
        raise EmbeddedError("no running embedded kafka node leads the controller quorum")

    # --- configuration and storage

    def _configure(self, java: str, jars: str) -> None:
        voters = ",".join(
            f"{node}@127.0.0.1:{port}" for node, port in enumerate(self.controller_ports, 1)
        )
        cluster_id: str | None = None
        for node in range(1, self.nodes + 1):
            directory = self.node_dir(node)
            (directory / "data").mkdir(parents=True, exist_ok=True)
            properties = directory / "server.properties"
            properties.write_text(self._properties(node, voters))
            (directory / "log4j2.properties").write_text(
                _LOG4J2.format(file=directory / "server.log")
            )
            if self.security is not None:
                self._write_key_store(directory / "keystore.pem")
            if (directory / "data" / "meta.properties").exists():
                continue
            cluster_id = cluster_id or self._cluster_id(java, jars)
            self._run_tool(
                java,
                jars,
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(properties),
                *self._scram_arguments(),
            )

    def _write_key_store(self, path: Path) -> None:
        """The PEM key store of ``ssl.keystore.type=PEM``: the key, then the chain."""
        assert self.security is not None
        text = self.security.key_file.read_text().strip() + "\n"
        text += self.security.cert_file.read_text().strip() + "\n"
        path.touch(mode=0o600)
        path.chmod(0o600)  # touch's mode applies to a new file only: a kept one too
        path.write_text(text)

    def _scram_arguments(self) -> list[str]:
        """The users' credentials as StorageTool takes them, salted here (RFC 5802's
        SaltedPassword): not the password itself, though as good as it to sign in to this
        cluster (so given in an argument file, :meth:`_run_tool`)."""
        users = self.security.scram_users if self.security is not None else {}
        arguments = []
        for name, password in users.items():
            salt = secrets.token_bytes(24)
            salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
            arguments += [
                "--add-scram",
                f'SCRAM-SHA-512=[name={name},salt="{base64.b64encode(salt).decode()}",'
                f'saltedpassword="{base64.b64encode(salted).decode()}",'
                f"iterations={SCRAM_ITERATIONS}]",
            ]
        return arguments

    def _cluster_id(self, java: str, jars: str) -> str:
        """The id of the cluster being formatted: the one a node already holds, or new."""
        for node in range(1, self.nodes + 1):
            meta = self.node_dir(node) / "data" / "meta.properties"
            with contextlib.suppress(OSError):
                for line in meta.read_text().splitlines():
                    if line.startswith("cluster.id="):
                        return line.partition("=")[2].strip()
        return self._run_tool(java, jars, "random-uuid").strip()

    def _run_tool(self, java: str, jars: str, *arguments: str) -> str:
        """Runs StorageTool with ``arguments``. They go in a Java argument file readable
        by this user only, not on the command line, which every user of the machine can
        read: a SCRAM credential's salted password is enough to sign in with."""
        descriptor, name = tempfile.mkstemp(prefix="storage-tool-", dir=self.node_dir(1))
        argfile = Path(name)
        try:
            with os.fdopen(descriptor, "w") as out:
                # the main class too: java reads no @file after it
                for argument in ("kafka.tools.StorageTool", *arguments):
                    if "'" in argument or "\\" in argument:  # quoted as is, below
                        raise EmbeddedError("no ' or \\ in StorageTool's arguments")
                    out.write(f"'{argument}'\n")
            result = subprocess.run(  # noqa: S603 - the JDK's java, our own arguments
                [
                    java,
                    "-Xmx128m",
                    "-XX:+UseSerialGC",
                    "-XX:TieredStopAtLevel=1",  # a one-shot tool: quick start over fast code
                    f"-Dlog4j2.configurationFile={self.node_dir(1) / 'log4j2.properties'}",
                    "-cp",
                    jars,
                    f"@{argfile}",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            said = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise EmbeddedError(
                f"kafka StorageTool {arguments[0]} failed: {(said or ['no output'])[-1][:300]}"
            )
        return result.stdout

    def _properties(self, node: int, voters: str) -> str:
        replicas = self.replication_factor
        isr = self.min_insync_replicas
        port, controller = self.ports[node - 1], self.controller_ports[node - 1]
        settings = {
            "process.roles": "broker,controller",
            "node.id": node,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self.node_dir(node) / "data",
            # two cores: the defaults (3 network, 8 I/O threads) only contend
            "num.network.threads": 2,
            "num.io.threads": 2,
            "num.recovery.threads.per.data.dir": 1,
            "background.threads": 2,
            "default.replication.factor": replicas,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": isr,
            # fewer internal partitions: the first group or transaction is ready sooner
            "offsets.topic.num.partitions": 6,
            "transaction.state.log.num.partitions": 3,
            # the embedded broker serves tests and development: a group forms at once and
            # a departed member's partitions move on within the short session relaybook
            # gives the embedded brokers (RELAYBOOK_KAFKA_SESSION_TIMEOUT_MS)
            "group.initial.rebalance.delay.ms": 0,
            "group.min.session.timeout.ms": 500,
            # and a node that died is fenced (its partitions led elsewhere) within 3 s,
            # not the default 9 s
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 3000,
            "auto.create.topics.enable": "false",
        }
        if self.security is not None:
            settings |= self._secured_listeners(node)
        return "".join(f"{name}={value}\n" for name, value in settings.items())

    def _secured_listeners(self, node: int) -> dict[str, object]:
        """The settings of a node whose clients' listener (CLIENT) is secured; the brokers
        replicate over INTERNAL, in PLAINTEXT on 127.0.0.1 like the controllers."""
        assert self.security is not None
        port, internal = self.ports[node - 1], self.internal_ports[node - 1]
        controller = self.controller_ports[node - 1]
        settings: dict[str, object] = {
            "listeners": f"CLIENT://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal},"
            f"CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal}",
            "listener.security.protocol.map": f"CLIENT:{self.security.protocol},"
            "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "INTERNAL",
            "listener.name.client.ssl.keystore.type": "PEM",
            "listener.name.client.ssl.keystore.location": self.node_dir(node) / "keystore.pem",
        }
        if self.security.client_ca_file is not None:
            settings |= {
                "listener.name.client.ssl.client.auth": "required",
                "listener.name.client.ssl.truststore.type": "PEM",
                "listener.name.client.ssl.truststore.location": self.security.client_ca_file,
            }
        if self.security.protocol == "SASL_SSL":
            settings |= {
                "listener.name.client.sasl.enabled.mechanisms": "SCRAM-SHA-512",
                # without a login module for the mechanism the node does not start ("Could
                # not find a 'KafkaServer' ... entry in the JAAS configuration")
                "listener.name.client.scram-sha-512.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                ),
            }
        if self.security.authorize:
            settings |= {
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users": "User:ANONYMOUS",
                "allow.everyone.if.no.acl.found": "false",
            }
        return settings

    # --- readiness

    def wait_until_ready(self, timeout: float = 90.0) -> None:
        """Waits until every node is up and the cluster is ready for relaybook's clients."""
        deadline = time.monotonic() + timeout
        while True:
            for node, process in enumerate(self._processes, 1):
                if process.poll() is not None:
                    raise EmbeddedError(
                        f"embedded kafka node {node} exited at start (code "
                        f"{process.returncode}): {self._last_error(node)}"
                    )
            if self._listening() and self._answers_metadata():
                return
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"embedded kafka not ready after {timeout:.0f}s; see "
                    f"{self.node_dir(1) / 'server.log'}"
                )
            time.sleep(0.25)

    def _listening(self) -> bool:
        """Whether every node accepts connections (before that, a metadata request would
        only make the client log its refused connections)."""
        for port in dict.fromkeys(self.ports + self.internal_ports):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                return False
        return True

    def _answers_metadata(self) -> bool:
        """Whether the cluster is ready for relaybook's clients (:meth:`_metadata_complete`).
        Runs on a thread of its own: the caller may be inside an event loop already. Asks
        the PLAINTEXT listeners between brokers: a secured cluster's needs no credentials."""
        answer: list[bool] = []
        thread = threading.Thread(
            target=lambda: answer.append(asyncio.run(self._metadata_complete())),
            name="embedded-kafka-ready",
        )
        thread.start()
        thread.join()
        return bool(answer and answer[0])

    async def _metadata_complete(self) -> bool:
        """Every broker listed, a controller elected, and a group coordinator found."""
        from aiokafka import AIOKafkaClient  # noqa: PLC0415 - only while starting
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        servers = ",".join(f"127.0.0.1:{port}" for port in self.internal_ports)
        client = AIOKafkaClient(bootstrap_servers=servers, request_timeout_ms=2000)
        try:
            await asyncio.wait_for(client.bootstrap(), timeout=3)
            metadata = client.cluster
            if len(metadata.brokers()) < self.nodes or metadata.controller is None:
                return False
            # The first group lookup creates the offsets topic: done here, so that the
            # consumers that start next find their coordinator at once (they log an
            # error for every lookup the broker answers "not available").
            await asyncio.wait_for(client.coordinator_lookup(_GROUP, "relaybook-ready"), 5)
        except (KafkaError, OSError, TimeoutError):
            return False
        finally:
            await client.close()
        return True

    def _last_error(self, node: int) -> str:
        """The last ERROR line a node logged, to say why it stopped."""
        lines: list[str] = []
        for name in ("server.log", "stdout.log"):
            with contextlib.suppress(OSError):
                lines += (self.node_dir(node) / name).read_text(errors="replace").splitlines()
        errors = [line for line in lines if "ERROR" in line or "Exception" in line]
        return (errors or lines or ["no output"])[-1][:300]
