"""`relaybook dead-letters list` and `replay` as ops run them: what was set aside, where
from and why (never its content), and published again to its topic on demand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import asyncpg

from relaybook.platform.deadletters import DeadLetters
from relaybook.platform.kafka import Producer
from relaybook.tooling.settings import Settings
from tests.relaybook.test_cli import environment
from tests.support import read_topic

RELAYBOOK = [sys.executable, "-m", "relaybook.tooling.cli", "dead-letters"]


def run(args: list[str], settings: Settings, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = environment(
        data_dir,
        RELAYBOOK_DATABASE_URL=settings.database_url or "",
        RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers or "",
        RELAYBOOK_TOPIC_PREFIX=settings.topic_prefix,
    )
    return subprocess.run(
        [*RELAYBOOK, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_ops_list_dead_letters_and_replay_them_to_their_topic(
    settings: Settings, pool: asyncpg.Pool, producer: Producer, tmp_path: Path
) -> None:
    letters = DeadLetters(pool, producer, settings.topic("dead-letters"))
    value = json.dumps({"schema": "delivery-event/v1", "address": "jane.doe@example.org"})
    poisoned = SimpleNamespace(
        topic=settings.topic("delivery-events"),
        partition=2,
        offset=41,
        key=b"owner-7",
        value=value.encode(),
        headers=[("channel", b"email")],
    )
    await letters.record(poisoned, "relaybook-tracker", "data_error", "DataError: a \x00 here")

    listed = run(["list"], settings, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "relaybook-tracker" in listed.stdout
    assert f"{settings.topic('delivery-events')}[2]@41" in listed.stdout
    assert "data_error" in listed.stdout
    assert "jane.doe@example.org" not in listed.stdout + listed.stderr, "content never shown"

    unknown = run(["replay", "--id", "999999"], settings, tmp_path)
    assert unknown.returncode == 1
    assert "999999" in unknown.stderr

    [letter] = await letters.list()
    replayed = run(["replay", "--id", str(letter.id)], settings, tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert "1 dead letter(s) published again" in replayed.stdout
    [(key, message)] = await read_topic(settings, "delivery-events", 1)
    assert (key, message) == ("owner-7", json.loads(value))
    assert run(["list"], settings, tmp_path).stdout.strip() == "no dead letters"
    assert "relaybook-tracker" in run(["list", "--all"], settings, tmp_path).stdout
