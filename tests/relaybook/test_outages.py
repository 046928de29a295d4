"""Outages as a bad night brings them: PostgreSQL or the broker stopped under API and
webhook load, then back. While a server is away every answer that needs it is a 503 with
``Retry-After``, never a 500; the services recover by themselves; and every webhook event
the provider got a 2xx for (or re-posted until it got one) is recorded once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from provider_sandbox.signing import SendGridSigner
from relaybook.platform import database
from relaybook.platform.kafka import ensure_topics
from relaybook.tooling.embedded import EmbeddedBroker, EmbeddedPostgres, free_port_settings
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System
from schemas import TOPICS
from tests.support import (
    ADMIN,
    PROVIDER_SETTINGS,
    Deployable,
    notice,
    own_tansu,
    read_topic,
    until,
)

SIGNER = SendGridSigner(ec.generate_private_key(ec.SECP256R1()))
#: how long a server stays away
OUTAGE_S = 4.0
log = logging.getLogger(__name__)


class Load:
    """API calls and signed webhook batches in a loop, as clients and SendGrid send them:
    a batch not answered 2xx is posted again until it is (SendGrid retries for a day)."""

    def __init__(self, api: httpx.AsyncClient | None, ingest: httpx.AsyncClient) -> None:
        self.api = api
        self.ingest = ingest
        self.statuses: collections.Counter[tuple[str, int]] = collections.Counter()
        self.missing_retry_after = 0
        self.accepted: set[str] = set()
        self.pending: list[bytes] = []
        self.notice_id: str | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def note(self, kind: str, response: httpx.Response) -> None:
        self.statuses[kind, response.status_code] += 1
        if response.status_code == 503 and not response.headers.get("Retry-After", "").isdigit():
            self.missing_retry_after += 1

    async def api_loop(self) -> None:
        assert self.api is not None
        while not self._stop.is_set():
            for call in (
                self.api.get(f"/v1/notices/{self.notice_id}"),
                self.api.get("/v1/journal", params={"limit": "5"}),
                self.api.post("/v1/notices", json=notice(2, send=False)),
                self.api.get("/v1/preferences"),
            ):
                self.note("api", await call)
            await asyncio.sleep(0.02)

    async def webhook_loop(self) -> None:
        while not self._stop.is_set():
            batch = json.dumps(
                [
                    {
                        "event": "delivered",
                        "email": "owner@example.org",
                        "timestamp": int(time.time()),
                        "sg_event_id": uuid.uuid4().hex,
                    }
                    for _ in range(10)
                ]
            ).encode()
            for body in [*self.pending, batch]:
                response = await self.ingest.post(
                    "/webhooks/sendgrid",
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        **SIGNER.headers(body, int(time.time())),
                    },
                )
                self.note("webhook", response)
                if response.is_success:
                    self.accepted.update(f"sendgrid:{e['sg_event_id']}" for e in json.loads(body))
                    if body in self.pending:
                        self.pending.remove(body)
                elif body not in self.pending:
                    self.pending.append(body)
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [asyncio.create_task(self.webhook_loop())]
        if self.api is not None:
            self._tasks.append(asyncio.create_task(self.api_loop()))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def drain(self, within: float = 30) -> None:
        """Re-posts what was refused until it is accepted, as the provider does."""
        deadline = time.monotonic() + within
        while self.pending:
            assert time.monotonic() < deadline, f"{len(self.pending)} batches still refused"
            self._stop.clear()
            task = asyncio.create_task(self.webhook_loop())
            await asyncio.sleep(0.2)
            self._stop.set()
            await task

    def of(self, kind: str) -> dict[int, int]:
        return {status: n for (k, status), n in sorted(self.statuses.items()) if k == kind}

    async def answered(self, kind: str, within: float = 30) -> None:
        """Returns once a call of ``kind`` is answered 2xx after this is called: the load
        goes through (again)."""

        def successes() -> int:
            return sum(n for (k, status), n in self.statuses.items() if k == kind and status < 300)

        before = successes()
        deadline = time.monotonic() + within
        while successes() == before:
            assert time.monotonic() < deadline, f"no {kind} call went through in {within} s"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def webhook_load(settings: Settings, only: set[str]) -> AsyncIterator[Load]:
    """The deployables ``only`` (ingest among them) running, and a load on ingest's port,
    not started yet."""
    async with (
        System(settings, only=only) as system,
        httpx.AsyncClient(base_url=system.servers["ingest"].url, timeout=30) as ingest,
    ):
        yield Load(None, ingest)


async def stored(url: str, event_ids: set[str]) -> dict[str, int]:
    """How many times each of ``event_ids`` is in the journal's events."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT event_id, count(*) AS n FROM delivery_events "
            "WHERE event_id = ANY($1::text[]) GROUP BY event_id",
            list(event_ids),
        )
    finally:
        await connection.close()
    return {row["event_id"]: row["n"] for row in rows}


def configured(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(
        settings,
        **free_port_settings(),
        admin_token=ADMIN,
        sendgrid_webhook_public_keys=(SIGNER.public_key,),
        ingest_publish_timeout_s=1.0,
        **changes,
    )


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL server of this test's own, to stop and start again."""
    server = EmbeddedPostgres(tmp_path / "pg")
    url = await asyncio.to_thread(server.start)
    await database.migrate(url)
    yield server, url
    await asyncio.to_thread(server.stop)


async def test_postgresql_stopped_under_api_and_webhook_load_gives_503s_then_recovers(
    settings: Settings, own_postgres: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    server, url = own_postgres
    own = configured(settings, database_url=url)
    async with (
        System(own, only={"dispatcher", "ingest", "tracker"}) as system,
        httpx.AsyncClient(
            base_url=system.servers["dispatcher"].url,
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=30,
        ) as api,
        httpx.AsyncClient(base_url=system.servers["ingest"].url, timeout=30) as ingest,
    ):
        load = Load(api, ingest)
        load.notice_id = (await api.post("/v1/notices", json=notice(3))).json()["id"]
        load.start()
        await load.answered("api")
        await load.answered("webhook")
        await asyncio.to_thread(server.stop)
        before_outage = collections.Counter(load.statuses)
        await asyncio.sleep(OUTAGE_S)
        during = load.statuses - before_outage
        server = EmbeddedPostgres(tmp_path / "pg")
        assert await asyncio.to_thread(server.start) == url
        before_recovery = collections.Counter(load.statuses)
        await load.answered("api")
        await load.answered("webhook")
        await load.stop()
        after = load.statuses - before_recovery
        await load.drain()

        log.info("answers by status: API %s, webhooks %s", load.of("api"), load.of("webhook"))
        assert all(status < 500 or status == 503 for _, status in load.statuses), load.statuses
        assert load.missing_retry_after == 0
        assert during["api", 503] > 0, during
        assert sum(n for (k, s), n in after.items() if k == "api" and s < 300) > 0, after

        # the tracker retried while the database was away: every accepted event is there once
        await until(lambda: _all_there(url, load.accepted), within=60)
        assert set((await stored(url, load.accepted)).values()) == {1}
    await asyncio.to_thread(server.stop)


async def test_the_broker_stopped_under_webhook_load_gives_503s_and_nothing_is_recorded_twice(
    settings: Settings,
) -> None:
    """Tansu keeps nothing across a restart: the test lets the tracker read everything
    before the stop, so what is checked is ingest's side (503 with Retry-After while
    away) and that each batch re-posted after it is back is recorded once."""
    broker = EmbeddedBroker()
    own = configured(settings, **own_tansu(broker.start()))
    url = own.database_url or ""
    await ensure_topics(own, TOPICS)
    try:
        async with webhook_load(own, {"ingest", "tracker"}) as load:
            load.start()
            await load.answered("webhook")
            await load.stop()
            await until(lambda: _all_there(url, load.accepted), within=30)
            load.start()
            broker.stop()
            await asyncio.sleep(OUTAGE_S)
            refused = load.of("webhook").get(503, 0)
            broker = EmbeddedBroker(broker.port)
            broker.start()
            await ensure_topics(own, TOPICS)
            await load.answered("webhook", within=60)
            await load.stop()
            await load.drain()
            log.info("answers by status: webhooks %s", load.of("webhook"))
            assert refused > 0
            assert set(load.of("webhook")) <= {200, 503}, load.statuses
            assert load.missing_retry_after == 0
            await until(lambda: _all_there(url, load.accepted), within=60)
            assert set((await stored(url, load.accepted)).values()) == {1}
    finally:
        broker.stop()


async def relay_publishing(url: str) -> bool:
    """Whether the relay is publishing a page of send jobs: it holds the page claimed (a
    row lock on ``job_pages``) until the broker has taken them."""
    connection = await asyncpg.connect(url)
    try:
        return bool(
            await connection.fetchval(
                "SELECT count(*) > 0 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                " WHERE c.relname = 'job_pages' AND l.mode = 'RowShareLock'"
            )
        )
    finally:
        await connection.close()


async def _all_there(url: str, event_ids: set[str]) -> bool:
    return len(await stored(url, event_ids)) == len(event_ids)


async def test_while_the_broker_is_away_the_api_accepts_notices_and_they_go_out_after(
    settings: Settings,
) -> None:
    """The dispatcher's routes need only PostgreSQL: a notice posted while the broker is
    away (not answering: frozen, its topics kept) is accepted into the outbox (201, never
    500) and its send jobs are published once the broker is back. Not killed and started
    again: Tansu would come back without the topics, acknowledge the relay's records for
    them all the same, and the topics created after would not show them."""
    broker = EmbeddedBroker()
    own = configured(settings, **own_tansu(broker.start()))
    await ensure_topics(own, TOPICS)
    try:
        async with (
            System(own, only={"dispatcher"}) as system,
            httpx.AsyncClient(
                base_url=system.servers["dispatcher"].url,
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=30,
            ) as api,
        ):
            broker.freeze()
            answers = [(await api.post("/v1/notices", json=notice(5))) for _ in range(3)]
            assert [answer.status_code for answer in answers] == [201, 201, 201]
            notice_id = answers[0].json()["id"]
            assert (await api.get(f"/v1/notices/{notice_id}")).status_code == 200
            await until(lambda: relay_publishing(own.database_url or ""))
            broker.thaw()
            jobs = await read_topic(own, "send-jobs", 3 * 5 * 2, within=60)
            assert {job["notice_id"] for _, job in jobs} == {a.json()["id"] for a in answers}
    finally:
        broker.stop()


async def test_a_deployable_started_before_its_broker_is_unready_then_ready_once_it_comes(
    settings: Settings, tmp_path: Path
) -> None:
    """A single deployable started while Kafka is away (an orchestrator starts everything
    at once) says so in one line, answers ``/healthz`` and a failing ``/readyz``, and is
    ready without a restart once the broker comes."""
    gone = EmbeddedBroker()
    own = configured(settings, **own_tansu(gone.start()))
    gone.stop()  # the port stays known, with nothing on it
    broker = EmbeddedBroker(gone.port)

    async def comes() -> None:
        broker.start()

    try:
        await _unready_until(own, tmp_path, "broker", "cannot reach Kafka at", comes)
    finally:
        broker.stop()


async def test_a_deployable_started_before_its_database_is_unready_then_ready_once_it_comes(
    settings: Settings, own_postgres: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    """The same for PostgreSQL away at start: one line, unready with the cause under
    ``database``, then ready without a restart once the server is back."""
    server, url = own_postgres
    await asyncio.to_thread(server.stop)

    async def comes() -> None:
        assert await asyncio.to_thread(server.start) == url

    own = configured(settings, database_url=url)
    await _unready_until(own, tmp_path, "database", "cannot connect to PostgreSQL", comes)


async def _unready_until(
    own: Settings, logs: Path, check: str, said: str, comes: Callable[[], Awaitable[None]]
) -> None:
    """Starts a worker on ``own`` while its ``check`` server is away: it must say ``said``
    once, stay alive and unready (every other route 503 + Retry-After), then be ready
    after ``comes()`` without a restart, and stop cleanly."""
    worker = Deployable("worker", own, logs, **PROVIDER_SETTINGS)
    process = worker.start("worker")
    port = worker.env["RELAYBOOK_WORKER_PORT"]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as probe:

            async def answers(path: str, status: int) -> bool:
                assert process.poll() is None, (logs / "worker.log").read_text()
                with contextlib.suppress(httpx.TransportError):
                    return (await probe.get(path)).status_code == status
                return False

            await until(lambda: answers("/readyz", 503), within=30)
            assert await answers("/healthz", 200)
            # which server, to anyone on the port; why, in the log only
            body = (await probe.get("/readyz")).json()
            assert body["checks"][check] == "failing", body
            assert said not in json.dumps(body)
            if check == "database":  # the broker is asked once the database takes us
                assert body["checks"]["broker"] == "failing"
            # what a caller routed there meanwhile hears: come back later
            refused = await probe.post("/webhooks/sendgrid", content=b"[]")
            assert (refused.status_code, refused.headers["Retry-After"]) == (503, "5")
            lines = (logs / "worker.log").read_text().splitlines()
            assert len([line for line in lines if line.startswith(f"relaybook: {said}")]) == 1
            failing = [json.loads(line) for line in lines if "readiness check failing" in line]
            why = [entry["error"] for entry in failing if entry["check"] == check]
            assert len(why) == 1, lines  # once, however often it is probed
            assert why[0].startswith(f"UnavailableError: {said}"), why
            await comes()
            await until(lambda: answers("/readyz", 200), within=60)
        process.terminate()
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
