"""A real sandbox on a real port, posting its webhooks to a real receiver that records
them (and can refuse them), driven by the official SendGrid and Twilio SDKs."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sendgrid import SendGridAPIClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from provider_sandbox import credentials as sandbox_credentials
from provider_sandbox.app import Sandbox, build
from relaybook.platform.http import HttpServer, bind
from relaybook.tooling.settings import Settings


@dataclasses.dataclass
class Received:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Stands where webhook ingest will be: records every post, answers ``refuse`` posts
    with 503 first."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refuse = 0

    async def handle(self, request: Request) -> Response:
        if self.refuse > 0:
            self.refuse -= 1
            return Response(status_code=503, headers={"Retry-After": "1"})
        self.received.append(
            Received(
                request.url.path, request.url.query, dict(request.headers), await request.body()
            )
        )
        return Response(status_code=200)

    def posts(self, path: str) -> list[Received]:
        return [post for post in self.received if post.path == path]


@dataclasses.dataclass
class Harness:
    sandbox: Sandbox
    receiver: Receiver
    url: str
    receiver_url: str
    settings: Settings

    def sendgrid(self, api_key: str | None = None) -> SendGridAPIClient:
        client = SendGridAPIClient(
            api_key or self.sandbox.credentials.sendgrid_api_key, host=self.url
        )
        client.client.timeout = 10
        return client

    def twilio(self) -> Client:
        credentials = self.sandbox.credentials
        client = Client(
            credentials.twilio_account_sid,
            credentials.twilio_auth_token,
            http_client=AsyncTwilioHttpClient(timeout=10),
        )
        client.api.base_url = self.url
        return client

    async def drain(self) -> None:
        assert await self.sandbox.poster.drain(30), "webhooks still pending after 30 s"


async def until(condition: Callable[[], bool], within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def sandbox_options() -> dict[str, Any]:
    """Overridden by tests that need other rates; by default no disorder at all."""
    return {"sandbox_duplicate_rate": 0.0, "sandbox_reorder_rate": 0.0}


@pytest.fixture
async def harness(tmp_path: Path, sandbox_options: dict[str, Any]) -> AsyncIterator[Harness]:
    receiver = Receiver()
    receiver_app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
    receiver_server = HttpServer("receiver", receiver_app, bind(0, "receiver"))
    await receiver_server.start()
    settings = Settings(
        data_dir=tmp_path,
        public_webhook_base_url=receiver_server.url,
        sandbox_batch_interval_s=0.05,
        **sandbox_options,
    )
    credentials, signer = sandbox_credentials.resolve(settings, settings.data_dir)
    sandbox = Sandbox(settings, credentials, signer)
    await sandbox.start()
    server = HttpServer("sandbox", build(sandbox), bind(0, "sandbox"))
    await server.start()
    try:
        yield Harness(sandbox, receiver, server.url, receiver_server.url, settings)
    finally:
        await server.stop()
        await sandbox.stop()
        await receiver_server.stop()


@pytest.fixture
async def http(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=harness.url, timeout=10) as client:
        yield client
