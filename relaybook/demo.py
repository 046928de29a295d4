"""``relaybook demo``: start the whole system on the embedded defaults, check every step,
stop everything, and exit non-zero naming the first step that misbehaved.

The tour so far covers start-up, readiness, a notice published and handed to the
providers, and shutdown; the rest of the delivery tour (provider events, journal, bounce
policy, resends) joins it as those parts land.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from relaybook.embedded import free_ports, running_postgres_pid
from relaybook.runtime import admin_token
from relaybook.settings import Settings
from relaybook.system import System


@dataclasses.dataclass
class Step:
    name: str
    ok: bool
    detail: str
    seconds: float


class DemoStepError(Exception):
    """A step did not behave; the message says which and how."""


class Tour:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.steps: list[Step] = []

    def record(self, name: str, ok: bool, detail: str, started: float) -> None:
        step = Step(name, ok, detail, round(time.monotonic() - started, 2))
        self.steps.append(step)
        if not self.as_json:
            mark = "ok  " if ok else "FAIL"
            print(f"[{mark}] {name:44} {detail}  ({step.seconds:.2f} s)", flush=True)
        if not ok:
            raise DemoStepError(f"step '{name}' failed: {detail}")

    def report(self, ok: bool, error: str | None, total: float) -> dict[str, Any]:
        return {
            "ok": ok,
            "error": error,
            "seconds": round(total, 2),
            "steps": [dataclasses.asdict(step) for step in self.steps],
        }


async def run_demo(settings: Settings, *, data_dir: str | None, as_json: bool) -> int:
    """Runs the tour; returns the process exit code (0 only if every step behaved)."""
    tour = Tour(as_json)
    started = time.monotonic()
    error: str | None = None
    api_port, ingest_port, sandbox_port = free_ports(3)
    with tempfile.TemporaryDirectory(prefix="relaybook-demo-") as scratch:
        demo_settings = dataclasses.replace(
            settings,
            data_dir=Path(data_dir) if data_dir else Path(scratch),
            api_port=api_port,
            ingest_port=ingest_port,
            sandbox_port=sandbox_port,
            broker_port=0,
        )
        try:
            await _tour(tour, demo_settings)
        except DemoStepError as failure:
            error = str(failure)
    total = time.monotonic() - started
    if as_json:
        print(json.dumps(tour.report(error is None, error, total), indent=2))
    elif error is None:
        print(f"\nrelaybook demo: every step behaved ({total:.1f} s)")
    else:
        print(f"\nrelaybook demo: {error}", file=sys.stderr)
    return 0 if error is None else 1


async def _tour(tour: Tour, settings: Settings) -> None:
    started = time.monotonic()
    system = System(settings)
    try:
        await system.__aenter__()
    except Exception as problem:  # noqa: BLE001 - reported as the failing step
        tour.record("start the system", False, str(problem), started)
    try:
        assert system.infra is not None
        embedded = ", ".join(system.infra.embedded) or "nothing"
        tour.record("start the system", True, f"embedded: {embedded}", started)
        async with httpx.AsyncClient(timeout=5) as client:
            for name, server in system.servers.items():
                step_started = time.monotonic()
                answer = await _ready(client, f"{server.url}/readyz")
                tour.record(
                    f"{name} is ready",
                    answer["status"] == "ready",
                    ", ".join(f"{k}: {v}" for k, v in answer["checks"].items())
                    or "no dependencies",
                    step_started,
                )
            tour.record("start-up to ready", True, "all services ready", started)
            await _send_a_notice(tour, system, client)
    finally:
        stop_started = time.monotonic()
        await system.__aexit__(None, None, None)
    leftover = running_postgres_pid(settings.data_dir)
    tour.record(
        "stop cleanly",
        leftover is None,
        "servers, broker and database stopped"
        if leftover is None
        else f"PostgreSQL still running (pid {leftover})",
        stop_started,
    )


#: a small deposit call: four owners with both addresses, one without a phone
_OWNERS = [
    {
        "id": f"owner-{i}",
        "name": f"Owner {i}",
        "email": f"owner{i}@example.org",
        "phone": f"+3361000000{i}",
    }
    for i in range(1, 5)
] + [{"id": "owner-5", "name": "Owner 5", "email": "owner5@example.org"}]


async def _send_a_notice(tour: Tour, system: System, client: httpx.AsyncClient) -> None:
    """Publishes a notice through the API and checks that the send workers handed every
    message to the providers (the sandbox) and skipped the one without a phone."""
    started = time.monotonic()
    api = system.servers["dispatcher"].url
    headers = {"Authorization": f"Bearer {admin_token(system.settings)}"}
    body = {
        "source": {"service": "accounting", "kind": "deposit_call", "reference": "DC-DEMO"},
        "title": "Deposit call Q4",
        "email": {"subject": "Deposit call Q4", "text": "Pay on https://portal.example.org/dc"},
        "sms": {"text": "Your Q4 deposit call is on the owners' portal."},
        "recipients": _OWNERS,
        "send": True,
    }
    answer = await client.post(f"{api}/v1/notices", json=body, headers=headers)
    tour.record(
        "publish a notice",
        answer.status_code == 201,
        f"HTTP {answer.status_code}, 5 owners on email and SMS",
        started,
    )
    notice = answer.json()
    deadline = time.monotonic() + 30
    while True:
        notice = (await client.get(f"{api}/v1/notices/{notice['id']}", headers=headers)).json()
        queued = sum(stats["queued"] for stats in notice["stats"].values())
        if not queued or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    email, sms = notice["stats"]["email"], notice["stats"]["sms"]
    handed = (email["sent"], sms["sent"], sms["skipped"]) == (5, 4, 1)
    tour.record(
        "send workers hand it to the providers",
        handed,
        f"email sent {email['sent']}/5, SMS sent {sms['sent']}/4, "
        f"SMS skipped {sms['skipped']} (no phone), still queued {queued}",
        started,
    )


async def _ready(client: httpx.AsyncClient, url: str, within: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + within
    answer: dict[str, Any] = {"status": "no answer", "checks": {}}
    while time.monotonic() < deadline:
        try:
            response = await client.get(url)
            answer = response.json()
            if response.status_code == 200:
                return answer
        except httpx.HTTPError as problem:
            answer = {"status": "no answer", "checks": {"http": str(problem)}}
        await asyncio.sleep(0.1)
    return answer
