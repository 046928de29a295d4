"""The bounce-policy deployable: a member of consumer group ``relaybook-bounce-policy``
on ``delivery-events``, with the outbox catch-up loop for the ``recipient-events`` it
writes, and a sweep that lifts expired suppressions every minute."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from relaybook.platform.deployable import Deployable
from relaybook.platform.kafka import BrokerError, Consumer, Record
from relaybook.platform.logs import get_logger
from relaybook.platform.runtime import Infrastructure
from relaybook.platform.settings import section
from relaybook.reachability.decisions import BouncePolicy
from relaybook.reachability.policy import Policy
from relaybook.reachability.settings import BounceSettings
from schemas import CONTRACTS

GROUP = "relaybook-bounce-policy"
EXPIRY_SWEEP_S = 60.0
log = get_logger(__name__)


def build(infra: Infrastructure) -> Deployable:
    policy = BouncePolicy(infra.pool, Policy.from_settings(section(infra.settings, BounceSettings)))
    events = infra.events_outbox()
    consumer = Consumer(
        infra.settings,
        ["delivery-events"],
        GROUP,
        dead_letters=infra.dead_letters(),
        contracts=CONTRACTS,
        max_batch=5000,
        gather_ms=100,
    )
    sweeping: list[asyncio.Task[None]] = []

    async def handle(records: list[Record]) -> None:
        await policy.handle(records)
        try:  # what the batch decided, announced now; the catch-up loop retries failures
            await events.flush()
        except BrokerError as problem:
            log.warning("recipient events not published yet", error=str(problem))

    async def sweep() -> None:
        while True:
            try:
                if await policy.expire():
                    await events.flush()
            except (asyncpg.PostgresError, OSError, BrokerError) as problem:
                log.warning("expiry sweep failed; retrying", error=str(problem))
            await asyncio.sleep(EXPIRY_SWEEP_S)

    async def start() -> None:
        await events.start()
        await consumer.start_running(handle, "bounce-policy")
        sweeping.append(asyncio.create_task(sweep(), name="bounce-policy-expiry"))

    async def stop() -> None:
        await consumer.stop()
        for task in sweeping:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await events.stop()

    return Deployable(app=infra.consumer_app("bounce-policy", [consumer]), start=start, stop=stop)
