"""The deployables of one process, wired together: what ``relaybook up`` runs (all of them)
and what each single-deployable command runs (one of them)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Self

from starlette.types import ASGIApp

import bounce_policy.app
import send_worker.app
import tracker.app
import webhook_ingest.app
from provider_sandbox import app as sandbox_app
from provider_sandbox import credentials as sandbox_credentials
from provider_sandbox.app import Sandbox
from relaybook.platform.deployable import Deployable
from relaybook.platform.http import HttpServer, bind
from relaybook.platform.logs import get_logger
from relaybook.platform.runtime import Infrastructure, admin_token, admin_token_path
from relaybook.tooling import dispatcher_console
from relaybook.tooling.infrastructure import Started, infrastructure, prepare_embedded_kafka
from relaybook.tooling.settings import Settings

log = get_logger(__name__)

#: deployable -> (port setting or None, what it is), in start order
DEPLOYABLES: dict[str, tuple[str | None, str]] = {
    "sandbox": ("sandbox_port", "provider sandbox"),
    "worker": ("worker_port", "send workers"),
    "tracker": ("tracker_port", "journal tracker"),
    "bounce-policy": ("bounce_policy_port", "bounce policy"),
    "dispatcher": ("api_port", "dispatcher API"),
    "ingest": ("ingest_port", "webhook ingest"),
}
_BUILDERS: dict[str, Callable[[Infrastructure], Deployable]] = {
    "worker": send_worker.app.build,
    "tracker": tracker.app.build,
    "bounce-policy": bounce_policy.app.build,
    "dispatcher": dispatcher_console.build,
    "ingest": webhook_ingest.app.build,
}


def needs_sandbox(settings: Settings) -> bool:
    """`up` runs the sandbox when a provider has no credentials configured."""
    return settings.sendgrid_api_key is None or settings.twilio_account_sid is None


class System:
    """Starts the infrastructure and the selected deployables; stops them in reverse.

    ``settings`` becomes the effective settings once started: the embedded servers' URLs
    and the sandbox's credentials filled in where they were not configured.
    """

    def __init__(self, settings: Settings, only: set[str] | None = None) -> None:
        self.settings = settings
        if only is None:
            only = set(_BUILDERS) | ({"sandbox"} if needs_sandbox(settings) else set())
        self._selected = [name for name in DEPLOYABLES if name in only]
        self._stack = contextlib.AsyncExitStack()
        self.servers: dict[str, HttpServer] = {}
        self.running: list[str] = []
        self.infra: Started | None = None
        self.sandbox: Sandbox | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
        log.info("relaybook stopped")

    async def _start(self) -> None:
        # Ports first: a taken port is reported before anything slow starts.
        sockets: dict[str, socket.socket] = {}
        for name in self._selected:
            setting = DEPLOYABLES[name][0]
            if setting is not None:
                port = getattr(self.settings, setting)
                sockets[name] = bind(
                    port, f"RELAYBOOK_{setting.upper()}", self.settings.listen_address
                )
                self._stack.callback(sockets[name].close)
        wanted = [name for name in self._selected if name in _BUILDERS]
        if wanted:
            await prepare_embedded_kafka(self.settings)  # no Java: one line, nothing started
        if "sandbox" in self._selected:
            await self._start_sandbox(sockets["sandbox"])
        if wanted:
            self.infra = await self._stack.enter_async_context(infrastructure(self.settings))
            self.settings = self.infra.settings
        for name in wanted:
            assert self.infra is not None
            deployable = _BUILDERS[name](self.infra)
            await deployable.start()
            self._stack.push_async_callback(deployable.stop)
            if deployable.app is not None:
                await self._serve(name, deployable.app, sockets[name])
            self.running.append(name)
        if self.infra is not None and self.infra.claim is not None:
            # the data dir's owner file names what this process serves (`up` publishes
            # its own processes' URLs)
            self.infra.claim.publish(
                urls={name: server.url for name, server in self.servers.items()}, ready=True
            )
        log.info("relaybook ready", services=self._selected)

    async def _start_sandbox(self, sock: socket.socket) -> None:
        credentials, signer = sandbox_credentials.resolve(self.settings, self.settings.data_dir)
        self.sandbox = Sandbox(self.settings, credentials, signer)
        await self.sandbox.start()
        self._stack.push_async_callback(self.sandbox.stop)
        server = await self._serve("sandbox", sandbox_app.build(self.sandbox), sock)
        self.settings = sandbox_credentials.stand_in(self.settings, credentials, signer, server.url)

    async def _serve(self, name: str, app: ASGIApp, sock: socket.socket) -> HttpServer:
        server = HttpServer(name, app, sock, self.settings.forwarded_allow_ips)
        await server.start()
        self._stack.push_async_callback(server.stop)
        self.servers[name] = server
        return server

    def banner(self, *, reveal_admin_token: bool = False) -> str:
        """What an operator needs after start (:func:`banner`)."""
        return banner(
            self.settings,
            {name: server.url for name, server in self.servers.items()},
            embedded=self.infra.embedded if self.infra is not None else None,
            sandbox=self.sandbox is not None,
            reveal_admin_token=reveal_admin_token,
        )


def banner(
    settings: Settings,
    urls: dict[str, str],
    *,
    embedded: list[str] | None,
    sandbox: bool,
    reveal_admin_token: bool = False,
) -> str:
    """What an operator needs after start: URLs, where the data is, the admin token.

    ``urls``: each deployable's; ``embedded``: the embedded servers (None: no
    infrastructure, the sandbox alone). The admin token itself only with
    ``reveal_admin_token`` (`up` on a terminal): a banner that may end up in a log file
    says where the token is instead. A configured token is never shown: whoever
    configured it has it."""
    lines = ["relaybook is up"]
    consumes = {
        "worker": "send-jobs", "tracker": "delivery-events", "bounce-policy": "delivery-events"
    }  # fmt: skip
    for name, url in urls.items():
        line = f"  {DEPLOYABLES[name][1]:16} {url}"
        if name in consumes:
            line += f" (consuming {settings.topic(consumes[name])})"
        lines.append(line)
    if embedded is not None:
        if "postgres" in embedded:
            lines.append(f"  {'database':16} embedded PostgreSQL, data in {settings.data_dir}")
        else:
            lines.append(f"  {'database':16} configured (RELAYBOOK_DATABASE_URL)")
        broker = (
            "embedded broker"
            if "broker" in embedded
            else f"embedded Apache Kafka ({settings.embedded_kafka_nodes} node(s))"
            if "kafka" in embedded
            else "configured Kafka"
        )
        lines.append(f"  {'broker':16} {broker} at {settings.kafka_bootstrap_servers}")
    if sandbox:
        stands_for = [
            provider
            for provider, url in (
                ("SendGrid", settings.sendgrid_base_url),
                ("Twilio", settings.twilio_base_url),
            )
            if url == urls["sandbox"]
        ]
        stand_in = " and ".join(stands_for) or "nobody"
        lines.append(f"  {'providers':16} the sandbox stands in for {stand_in}")
    if "dispatcher" in urls:
        if settings.admin_token:
            shown = "from RELAYBOOK_ADMIN_TOKEN"
        elif reveal_admin_token:
            shown = admin_token(settings)
        else:
            shown = f"in {admin_token_path(settings)}"
        lines.append(f"  {'admin token':16} {shown}")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)
