"""The send-worker deployable: one lane per channel, each a member of its own consumer
group on ``send-jobs`` (``relaybook-workers-email``, ``relaybook-workers-sms``) handling
only its channel's jobs, so slow texts never hold emails up (and each lane scales by
itself); with the event outbox's catch-up loop beside them."""

from __future__ import annotations

import asyncio

from relaybook.platform.deployable import Deployable
from relaybook.platform.kafka import Consumer
from relaybook.platform.runtime import Infrastructure
from relaybook.platform.settings import section
from schemas import CONTRACTS
from send_worker.providers import SendGrid, Twilio
from send_worker.settings import WorkerSettings
from send_worker.worker import SendWorker

GROUP = "relaybook-workers-{channel}"
CHANNELS = ("email", "sms")
#: emails go 1000 to a request, so their lane fetches big batches (waiting up to 100 ms
#: to fill them); texts go one by one, so theirs takes what is there
LANE_FETCH: dict[str, dict[str, int]] = {
    "email": {"max_batch": 5000, "gather_ms": 100},
    "sms": {"max_batch": 500, "gather_ms": 0},
}


def build(infra: Infrastructure) -> Deployable:
    settings = section(infra.settings, WorkerSettings)
    events = infra.events_outbox()
    sendgrid, twilio = SendGrid(settings), Twilio(settings)
    worker = SendWorker(
        settings,
        infra.pool,
        events=events,
        producer=infra.producer,
        sendgrid=sendgrid,
        twilio=twilio,
    )
    lanes = {
        channel: Consumer(
            infra.settings,
            ["send-jobs"],
            GROUP.format(channel=channel),
            dead_letters=infra.dead_letters(),
            contracts=CONTRACTS,
            only={"channel": channel},
            **LANE_FETCH[channel],
        )
        for channel in CHANNELS
    }

    async def start() -> None:
        await events.start()
        for channel, consumer in lanes.items():
            await consumer.start_running(worker.lane(channel), f"send-{channel}")
        worker.start()

    async def stop() -> None:
        # side by side: each lane's grace for its batch in hand runs at the same time
        await asyncio.gather(*(consumer.stop() for consumer in lanes.values()))
        await worker.close()
        await events.stop()
        await sendgrid.close()
        await twilio.close()

    return Deployable(app=infra.consumer_app("worker", lanes.values()), start=start, stop=stop)
