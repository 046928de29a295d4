"""``relaybook up`` as production runs relaybook: each deployable in a process of its own.

This process starts what is embedded (PostgreSQL, the broker), applies the migrations,
creates the topics and serves the provider sandbox when no provider is configured; then it
starts ``relaybook dispatcher``, ``ingest``, ``worker``, ``tracker`` and
``bounce-policy``, each with the effective settings (the embedded servers' URLs, the
sandbox's credentials) in its environment, and supervises them:

- a deployable that dies is started again, after 1 s, then 2, 4... up to
  :data:`BACKOFF_MAX_S` while it keeps dying (back to 1 s once it has run a minute);
- one Ctrl-C or SIGTERM stops them all (SIGTERM, then SIGKILL after :data:`STOP_S`), and
  then what is embedded; the deployables run in sessions of their own, so a terminal's
  Ctrl-C reaches this process only, and they die with it whatever kills it;
- each writes its log lines to the same stderr, tagged with its name
  (``deployable=worker``), and counts only its own work in its ``/metrics``; the banner
  on stdout is this process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
from types import TracebackType
from typing import Self

import httpx

from relaybook.platform import settings as configuration
from relaybook.platform.http import bind, connectable
from relaybook.platform.logs import get_logger
from relaybook.tooling.embedded import die_with_parent
from relaybook.tooling.infrastructure import infrastructure, prepare_embedded_kafka
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import DEPLOYABLES, System, banner, needs_sandbox

log = get_logger(__name__)

#: the deployables `up` runs as processes, in start order (the consumers first: the
#: dispatcher's relay publishes as soon as it starts)
CHILDREN = ("worker", "tracker", "bounce-policy", "dispatcher", "ingest")
BACKOFF_MAX_S = 30.0
#: a deployable that ran this long is healthy again: its next restart waits 1 s
STEADY_S = 60.0
STOP_S = 20.0
READY_S = 120.0


@dataclasses.dataclass
class Child:
    name: str
    url: str
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 1.0


class Processes:
    """The deployables of ``relaybook up``, each in its own process (module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.children: dict[str, Child] = {}
        self.embedded: list[str] = []
        self._stack = contextlib.AsyncExitStack()
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self._sandbox_url: str | None = None

    @property
    def urls(self) -> dict[str, str]:
        found = {name: child.url for name, child in self.children.items()}
        if self._sandbox_url is not None:
            found = {"sandbox": self._sandbox_url, **found}
        return found

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await asyncio.gather(*(self._stop(child) for child in self.children.values()))
        await self._stack.aclose()
        if self.children:  # not when start-up stopped before anything ran
            log.info("relaybook stopped")

    async def _start(self) -> None:
        # Ports first: a taken port is reported before anything slow starts (each
        # deployable binds its own again once started).
        for name in CHILDREN:
            setting = DEPLOYABLES[name][0]
            assert setting is not None
            port, variable = getattr(self.settings, setting), configuration.env_name(setting)
            bind(port, variable, self.settings.listen_address).close()
        await prepare_embedded_kafka(self.settings)  # no Java: one line, nothing started
        if needs_sandbox(self.settings):
            sandbox = await self._stack.enter_async_context(System(self.settings, only={"sandbox"}))
            self.settings = sandbox.settings
            self._sandbox_url = sandbox.servers["sandbox"].url
        infra = await self._stack.enter_async_context(infrastructure(self.settings, pool_size=2))
        self.settings = infra.settings
        self.embedded = infra.embedded
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOOK_")}
        environment |= configuration.environment(self.settings)
        for name in CHILDREN:
            setting = DEPLOYABLES[name][0]
            assert setting is not None
            url = f"http://{self._host}:{getattr(self.settings, setting)}"
            child = self.children[name] = Child(name, url)
            await self._spawn(child, environment)
            self._watchers.append(
                asyncio.create_task(self._watch(child, environment), name=f"watch {name}")
            )
        await self._until_ready()
        log.info("relaybook ready", services=list(self.urls))

    @property
    def _host(self) -> str:
        """Where this process reaches its children: loopback when they listen everywhere."""
        return connectable(self.settings.listen_address)

    async def _spawn(self, child: Child, environment: dict[str, str]) -> None:
        child.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relaybook.tooling.cli",
            "--under-up",
            child.name,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            # their logs (stderr) join this process's; their banners (stdout) are this one's
            stdout=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        child.started_at = time.monotonic()

    async def _watch(self, child: Child, environment: dict[str, str]) -> None:
        """Starts ``child`` again whenever it dies, waiting longer while it keeps dying."""
        while True:
            assert child.process is not None
            code = await child.process.wait()
            if self._stopping:
                return
            if time.monotonic() - child.started_at >= STEADY_S:
                child.backoff_s = 1.0
            log.warning(
                "deployable exited; starting it again",
                deployable=child.name, exit_code=code, in_s=child.backoff_s,
            )  # fmt: skip
            await asyncio.sleep(child.backoff_s)
            child.backoff_s = min(BACKOFF_MAX_S, child.backoff_s * 2)
            child.restarts += 1
            await self._spawn(child, environment)

    async def _until_ready(self) -> None:
        """Returns once every deployable answers ``/readyz`` (the consumers: once in their
        groups); raises naming those that did not within :data:`READY_S`."""
        deadline = time.monotonic() + READY_S
        waiting = set(self.children)
        async with httpx.AsyncClient(timeout=2) as client:
            while waiting:
                for name in sorted(waiting):
                    with contextlib.suppress(httpx.HTTPError):
                        answer = await client.get(f"{self.children[name].url}/readyz")
                        if answer.status_code == 200:
                            waiting.discard(name)
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready after {READY_S:.0f} s: {', '.join(waiting)}")
                await asyncio.sleep(0.2)

    async def _stop(self, child: Child) -> None:
        process = child.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_S)
        except TimeoutError:
            log.warning("deployable did not stop; killed", deployable=child.name)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def banner(self, *, reveal_admin_token: bool = False) -> str:
        return banner(
            self.settings,
            self.urls,
            embedded=self.embedded,
            sandbox=self._sandbox_url is not None,
            reveal_admin_token=reveal_admin_token,
        )
