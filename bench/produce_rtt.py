"""The time the broker takes to acknowledge a batch, nothing else running: 100 records of
300 bytes over the topic's partitions, produced as relaybook produces (``acks=all``,
idempotent on Apache Kafka), awaited, again and again. What the ingest figures on a
broker are bounded by at few posts in flight (posts in flight ÷ this time).

    .venv/bin/python bench/produce_rtt.py --broker kafka3 [--rounds 300]

Three phases of ``--rounds`` each: the first on a cold broker (its JIT still compiling,
on Apache Kafka), the next two warm.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import temporary
from brokers import Broker, add_option
from floors import floor_producer, floor_topic, until_led

from relaybook.tooling.settings import Settings

RECORDS = 100


async def measure(settings: Settings, rounds: int) -> list[tuple[str, float, float]]:
    topic = await floor_topic(settings)
    producer = floor_producer(settings)
    await producer.start()
    phases = []
    try:
        await until_led(producer, topic)
        for phase in ("cold", "warm", "warm again"):
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                sent = [
                    await producer.send(topic, b"x" * 300, key=str(i).encode())
                    for i in range(RECORDS)
                ]
                await asyncio.gather(*sent)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            phases.append((phase, times[len(times) // 2], times[int(len(times) * 0.9)]))
    finally:
        await producer.stop()
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    add_option(parser)
    arguments = parser.parse_args()
    broker = Broker(arguments.broker, temporary.directory("relaybook-bench-rtt-"))
    changes: dict[str, Any] = broker.start()
    try:
        settings = Settings(topic_prefix=f"rtt{uuid.uuid4().hex[:6]}.", **changes)
        print(f"broker: {broker.description}")
        print(f"{RECORDS} records of 300 bytes a round, {arguments.rounds} rounds a phase")
        for phase, p50, p90 in asyncio.run(measure(settings, arguments.rounds)):
            print(f"{phase:>10}: p50 {p50:6.1f} ms, p90 {p90:6.1f} ms")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
