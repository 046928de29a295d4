"""Apache Kafka, embedded: one node or three in KRaft mode on 127.0.0.1, run from the
Maven Central artifacts (``RELAYBOOK_EMBEDDED_BROKER=kafka``).

The jars of a pinned version come from :mod:`relaybook.kafka_release` (fetched once per
machine; ``make kafka`` does it ahead of time); each node runs as its own JVM with a
small heap, its storage and its log file under the given data directory. Like the Tansu
broker, the nodes die with the process that started them, even when it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from relaybook.embedded import EmbeddedError, die_with_parent, free_ports
from relaybook.kafka_release import KAFKA_VERSION, classpath, require_java
from relaybook.logs import get_logger

log = get_logger(__name__)

#: FindCoordinator's key type of a consumer group
_GROUP = 0

#: per node: enough for tests and a development machine (the start scripts' default is 1 GiB)
HEAP = "384m"
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


class EmbeddedKafka:
    """Apache Kafka in KRaft mode on 127.0.0.1: ``nodes`` combined broker-controller
    nodes (1, or 3 with replication 3 and ``min.insync.replicas=2``), data under
    ``data_dir / "kafka"``, kept across runs; the storage is formatted on first start.

    The controller quorum is a static ``controller.quorum.voters`` list, for one node as
    for three: the ports may then change from one start to the next on the same data,
    which a quorum formatted with ``--standalone`` (it records its voters' endpoints)
    would not allow.
    """

    def __init__(self, data_dir: Path, *, nodes: int = 1, port: int = 0) -> None:
        if nodes not in {1, 3}:
            raise ValueError("an embedded Kafka has 1 or 3 nodes")
        self.nodes = nodes
        self.root = data_dir.resolve() / "kafka"
        chosen = free_ports(2 * nodes)
        self.ports = [port or chosen[0], *chosen[1:nodes]]
        self.controller_ports = chosen[nodes:]
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
        jars = classpath()
        java = require_java()
        self._configure(java, jars)
        for node in range(1, self.nodes + 1):
            directory = self.node_dir(node)
            with (directory / "stdout.log").open("ab") as output:
                self._processes.append(
                    subprocess.Popen(  # noqa: S603 - the JDK's java, our own arguments
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
                )
        try:
            self._wait_until_ready(timeout)
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
            if (directory / "data" / "meta.properties").exists():
                continue
            cluster_id = cluster_id or self._cluster_id(java, jars)
            self._run_tool(
                java, jars, "format", "--cluster-id", cluster_id, "--config", str(properties)
            )

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
        result = subprocess.run(  # noqa: S603 - the JDK's java, our own arguments
            [
                java,
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",  # a one-shot tool: quick start over fast code
                f"-Dlog4j2.configurationFile={self.node_dir(1) / 'log4j2.properties'}",
                "-cp",
                jars,
                "kafka.tools.StorageTool",
                *arguments,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
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
            "auto.create.topics.enable": "false",
        }
        return "".join(f"{name}={value}\n" for name, value in settings.items())

    # --- readiness

    def _wait_until_ready(self, timeout: float) -> None:
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
        for port in self.ports:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                return False
        return True

    def _answers_metadata(self) -> bool:
        """Whether the cluster is ready for relaybook's clients (:meth:`_metadata_complete`).
        Runs on a thread of its own: the caller may be inside an event loop already."""
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

        client = AIOKafkaClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000)
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
