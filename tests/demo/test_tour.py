"""The tour is the broadest end-to-end test: with a part of the pipeline missing it must
fail, naming the step that noticed; with ``--stay`` it leaves the system up, and the
console signed up for, until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from typing import Any

import httpx
import pytest

import demo.tour
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System


class WithoutTracker(System):
    def __init__(self, settings: Settings, only: set[str] | None = None) -> None:
        super().__init__(
            settings, only={"sandbox", "worker", "dispatcher", "ingest", "bounce-policy"}
        )
        del only


async def test_without_the_tracker_the_tour_fails_at_the_first_wait_and_says_so(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setattr(demo.tour, "System", WithoutTracker)
    monkeypatch.setattr(demo.tour, "WITHIN_S", 4.0)

    code = await demo.tour.run_demo(settings, data_dir=None, as_json=False)

    assert code == 1
    out, err = capsys.readouterr()
    assert "[FAIL] messages reach their final state" in out
    assert "step 'messages reach their final state' failed: timed out after 4 s" in err
    assert "[ok  ] stop cleanly" in out  # and everything it started is stopped all the same


async def test_demo_stay_keeps_the_system_up_with_a_sign_in_to_the_console_until_ctrl_c() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOOK_")}
    demo_process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relaybook.tooling.cli", "demo", "--stay",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert demo_process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(120):
            while not seen or "to click through the tour" not in seen[-1]:
                line = (await demo_process.stdout.readline()).decode()
                assert line, "the demo ended before staying:\n" + "".join(seen)
                seen.append(line)
        told = "".join(seen)
        assert "[ok  ] the console lists the tour's notices" in told
        where = re.search(r"Open (http://127\.0\.0\.1:\d+)/ui/ and sign\nin as (\S+) with "
                          r"the password (\S+) to click", told)  # fmt: skip
        assert where, told
        console, email, password = where.groups()
        async with httpx.AsyncClient(base_url=console, timeout=30) as browser:
            form = await browser.get("/ui/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf
            data = {"csrf": csrf.group(1), "email": email, "password": password}
            signed = await browser.post("/ui/login", data=data)
            assert signed.status_code == 303
            listing = await browser.get("/ui/notices")
            assert listing.status_code == 200
            assert "Deposit call Q4 2026" in listing.text
        demo_process.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            rest, _ = await demo_process.communicate()
    finally:
        if demo_process.returncode is None:
            demo_process.kill()
            await demo_process.wait()
    assert demo_process.returncode == 0, rest.decode()
    assert "[ok  ] stop cleanly" in rest.decode()
    assert "every step behaved" in rest.decode()
