"""Posting webhooks the way the providers do: SendGrid batches events from many messages
into signed JSON arrays, now and then twice or out of order, and retries a batch that was
not answered 2xx at growing intervals; Twilio posts one signed form per status change.

Every post is recorded for the inspection endpoint (``GET /_sandbox/webhooks``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import json
import time
from random import Random
from typing import Any
from urllib.parse import urlencode

import httpx

from provider_sandbox.signing import TWILIO_SIGNATURE, SendGridSigner, twilio_signature
from relaybook.platform.logs import get_logger

log = get_logger(__name__)

#: SendGrid posts at most this many bytes per request (768 KB), so batches split there
MAX_BATCH_BYTES = 768 * 1024
#: how long SendGrid keeps retrying a batch that was not acknowledged
RETRY_FOR_S = 24 * 3600
RETRY_CAP_S = 10.0
#: concurrent posts in flight per provider (SendGrid posts from many sending servers at once)
CONCURRENCY = 4
#: webhook posts (and their retries) under way at once
MAX_IN_FLIGHT = 1000


@dataclasses.dataclass(frozen=True)
class Disorder:
    """How untidy the delivery is: shares of events duplicated and held back."""

    duplicate_rate: float = 0.05
    reorder_rate: float = 0.1


class Poster:
    """Owns the HTTP client, the event queue and the record of every post."""

    def __init__(
        self,
        *,
        signer: SendGridSigner,
        auth_token: str,
        sendgrid_url: str,
        disorder: Disorder,
        draw: Random,
        batch_interval_s: float,
    ) -> None:
        self._signer = signer
        self._auth_token = auth_token
        self.sendgrid_url = sendgrid_url
        self._disorder = disorder
        self._draw = draw
        self._interval = batch_interval_s
        self._queue: list[tuple[float, int, dict[str, Any]]] = []
        self._forms: list[tuple[float, int, str, dict[str, str], int]] = []
        self._order = itertools.count()
        self._client = httpx.AsyncClient(timeout=10)
        self._tasks: set[asyncio.Task[None]] = set()
        # per provider: SendGrid and Twilio post from their own machines, so a slow run of
        # Twilio callbacks never holds SendGrid's batches back (a worker's unknown outcomes
        # wait for those events)
        self._limits = {
            provider: asyncio.Semaphore(CONCURRENCY) for provider in ("sendgrid", "twilio")
        }
        self._loop_task: asyncio.Task[None] | None = None
        self.posts: list[dict[str, Any]] = []

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="sandbox-sendgrid-poster")

    async def stop(self) -> None:
        tasks = [task for task in (self._loop_task, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()

    @property
    def pending(self) -> int:
        """SendGrid events queued or being posted (0 once every batch was acknowledged)."""
        return (
            len(self._queue) + len(self._forms) + sum(1 for task in self._tasks if not task.done())
        )

    def schedule_sendgrid(self, events: list[tuple[float, dict[str, Any]]]) -> None:
        """Queues events, each ``delay`` seconds from now, adding the configured disorder."""
        now = time.monotonic()
        for delay, event in events:
            due = now + delay
            if self._draw.random() < self._disorder.reorder_rate:
                due += self._interval * self._draw.randint(1, 3)  # held back behind later ones
            self._push(due, event)
            if self._draw.random() < self._disorder.duplicate_rate:
                self._push(due + self._interval * self._draw.randint(1, 2), event)

    def _push(self, due: float, event: dict[str, Any]) -> None:
        heapq.heappush(self._queue, (due, next(self._order), event))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            now = time.monotonic()
            due: list[dict[str, Any]] = []
            while self._queue and self._queue[0][0] <= now:
                due.append(heapq.heappop(self._queue)[2])
            for batch in _split(due):
                self._spawn(self._post_sendgrid(batch))
            # Forms become tasks only when due, and only so many at a time: a big send
            # must not turn into hundreds of thousands of sleeping tasks.
            while self._forms and self._forms[0][0] <= now and len(self._tasks) < MAX_IN_FLIGHT:
                _, _, url, params, retries = heapq.heappop(self._forms)
                self._spawn(self._post_form(url, params, retries))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_sendgrid(self, body: bytes) -> None:
        started = time.monotonic()
        for attempt in itertools.count(1):
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "SendGrid Event API",
                **self._signer.headers(body, int(time.time())),
            }
            status = await self._post("sendgrid", self.sendgrid_url, body, headers, attempt)
            if status is not None and 200 <= status < 300:
                return
            if time.monotonic() - started > RETRY_FOR_S:
                log.warning("sandbox gave up a sendgrid batch after 24 h")
                return
            await asyncio.sleep(min(RETRY_CAP_S, 0.2 * 2 ** (attempt - 1)))

    def post_twilio(self, url: str, params: dict[str, str], delay: float, retries: int = 3) -> None:
        """Posts one signed form to ``url`` about ``delay`` seconds from now (at the next
        tick after that); a failed post is tried
        again ``retries`` times (Twilio's connection-override retry, ``#rc``)."""
        if self._draw.random() < self._disorder.reorder_rate:
            delay += self._interval * self._draw.randint(1, 3)
        copies = 2 if self._draw.random() < self._disorder.duplicate_rate else 1
        due = time.monotonic() + delay
        for copy in range(copies):
            entry = (due + copy * self._interval, next(self._order), url, params, retries)
            heapq.heappush(self._forms, entry)

    async def _post_form(self, url: str, params: dict[str, str], retries: int) -> None:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            TWILIO_SIGNATURE: twilio_signature(self._auth_token, url, params),
        }
        body = urlencode(params).encode()
        for attempt in range(1, retries + 2):
            status = await self._post("twilio", url, body, headers, attempt)
            if status is not None and status < 500:
                return
            await asyncio.sleep(min(RETRY_CAP_S, 0.2 * 2 ** (attempt - 1)))

    async def _post(
        self, provider: str, url: str, body: bytes, headers: dict[str, str], attempt: int
    ) -> int | None:
        record: dict[str, Any] = {
            "provider": provider,
            "url": url,
            "attempt": attempt,
            "at": time.time(),
            "body": body.decode(),
        }
        async with self._limits[provider]:
            try:
                response = await self._client.post(url, content=body, headers=headers)
            except httpx.HTTPError as problem:
                record |= {"status": None, "error": type(problem).__name__}
                self.posts.append(record)
                return None
        record |= {"status": response.status_code, "error": None}
        self.posts.append(record)
        return response.status_code

    async def drain(self, within: float) -> bool:
        """Waits until nothing is queued or in flight; False if that took over ``within``."""
        deadline = time.monotonic() + within
        while self.pending:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


def _split(events: list[dict[str, Any]]) -> list[bytes]:
    """JSON arrays of at most ``MAX_BATCH_BYTES`` each."""
    batches: list[bytes] = []
    current: list[bytes] = []
    size = 2
    for event in events:
        encoded = json.dumps(event, separators=(",", ":")).encode()
        if current and size + len(encoded) + 1 > MAX_BATCH_BYTES:
            batches.append(b"[" + b",".join(current) + b"]")
            current, size = [], 2
        current.append(encoded)
        size += len(encoded) + 1
    if current:
        batches.append(b"[" + b",".join(current) + b"]")
    return batches
