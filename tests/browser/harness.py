"""A real ``relaybook up`` for the browser tests and the README's screenshots
(``docs/screenshots.py``): a subprocess on the embedded defaults, free ports and a data
dir of its own; people made with ``relaybook user create``; notices published through the
API with the admin token, to owners whose addresses the provider sandbox makes fail
(``provider_sandbox/scenarios.py``); and the SendGrid webhooks the sandbox would post,
signed with its own key, for a test that needs one at a moment of its choosing.

Browsers are Debian's Chromium (``/usr/bin/chromium``): Playwright never downloads one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
from playwright.async_api import Browser, Page, async_playwright

from provider_sandbox.signing import SendGridSigner
from relaybook.platform.settings import env_name
from relaybook.tooling.embedded import free_port_settings, running_postgres_pid

CHROMIUM = Path("/usr/bin/chromium")
NO_CHROMIUM = f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)"
PASSWORD = "correct horse battery staple"
RELAYBOOK = [sys.executable, "-m", "relaybook.tooling.cli"]
#: how long anything the system does may take before a helper gives up
WITHIN_S = 30.0


class Up:
    """``relaybook up`` in the background. Its output goes to files in the data dir's
    parent (read them when a test fails); :meth:`stop` ends it, whatever state it is in,
    and removes everything it wrote."""

    def __init__(self, **settings: str) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="relaybook-browser-"))
        # not under pytest's tmp_path: the embedded PostgreSQL runs as another user when
        # the tests run as root, and pytest makes that tree owner-only
        self.data_dir = self.scratch / "data"
        ports = free_port_settings()  # never the default ports a running `up` may hold
        self.api = f"http://127.0.0.1:{ports['api_port']}"
        self.ingest = f"http://127.0.0.1:{ports['ingest_port']}"
        self.sandbox = f"http://127.0.0.1:{ports['sandbox_port']}"
        self.admin_token = f"browser-{uuid.uuid4().hex}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOOK_")}
        self.env |= {
            **{env_name(name): str(port) for name, port in ports.items()},
            "RELAYBOOK_DATA_DIR": str(self.data_dir),
            "RELAYBOOK_ADMIN_TOKEN": self.admin_token,
            "RELAYBOOK_LOG_FORMAT": "json",
            "RELAYBOOK_SANDBOX_BATCH_INTERVAL_S": "0.05",
            **settings,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def _launch(self) -> subprocess.Popen[bytes]:
        out, err = self.scratch / "up.out", self.scratch / "up.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            return subprocess.Popen([*RELAYBOOK, "up"], env=self.env, stdout=stdout, stderr=stderr)

    async def start(self) -> None:
        """Starts ``up`` and returns once its API and webhook ingest are ready."""
        self.process = self._launch()
        deadline = time.monotonic() + WITHIN_S
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"relaybook up exited early:\n{self.errors()}")
                with contextlib.suppress(httpx.HTTPError):
                    answers = [await client.get(f"{url}/readyz") for url in (self.api, self.ingest)]
                    if all(answer.status_code == 200 for answer in answers):
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"up not ready in {WITHIN_S:g} s:\n{self.errors()}")
                await asyncio.sleep(0.1)

    def errors(self) -> str:
        return (self.scratch / "up.err").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
        pid = running_postgres_pid(self.data_dir)
        if pid is not None:  # never leave a server behind, even after a crash
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).terminate()
                psutil.Process(pid).wait(30)
        shutil.rmtree(self.scratch, ignore_errors=True)

    async def person(self, email: str, role: str, agencies: list[str] | None = None) -> None:
        """A person who signs in to the console, made as an operator would."""
        command = [*RELAYBOOK, "user", "create", "--email", email, "--role", role]
        command += [arg for agency in agencies or () for arg in ("--agency", agency)]
        created = await asyncio.create_subprocess_exec(
            *command,
            "--password-stdin",
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await created.communicate(PASSWORD.encode())
        if created.returncode != 0:
            raise RuntimeError(f"relaybook user create {email}: {err.decode()}{out.decode()}")

    def api_client(self) -> httpx.AsyncClient:
        """The dispatcher API, as the admin token."""
        return httpx.AsyncClient(
            base_url=self.api,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=WITHIN_S,
        )

    async def sendgrid_event(
        self, event: str, delivery_id: str, address: str, **extra: Any
    ) -> None:
        """Posts one SendGrid event about a message, signed with the sandbox's key, as the
        sandbox (and SendGrid) would: e.g. a late ``open``."""
        signer = SendGridSigner.load_or_create(self.data_dir / "sandbox" / "sendgrid-webhook-key")
        now = int(time.time())
        body = json.dumps(
            [
                {
                    "email": address,
                    "timestamp": now,
                    "event": event,
                    "sg_event_id": uuid.uuid4().hex,
                    "sg_message_id": f"{uuid.uuid4().hex}.filterdrecv-0000-0.0",
                    "delivery_id": delivery_id,
                    **extra,
                }
            ]
        ).encode()
        async with httpx.AsyncClient(timeout=WITHIN_S) as client:
            answer = await client.post(
                f"{self.ingest}/webhooks/sendgrid",
                content=body,
                headers={"Content-Type": "application/json", **signer.headers(body, now)},
            )
        answer.raise_for_status()


@contextlib.asynccontextmanager
async def running(**settings: str) -> AsyncIterator[Up]:
    """A started ``relaybook up`` (``settings``: more ``RELAYBOOK_*`` variables), stopped
    and removed afterwards."""
    up = Up(**settings)
    try:
        await up.start()
        yield up
    finally:
        await asyncio.to_thread(up.stop)


# --- what the system is fed ------------------------------------------------------------


async def publish(api: httpx.AsyncClient, body: dict[str, Any]) -> str:
    """Publishes a notice; its id."""
    answer = await api.post("/v1/notices", json=body)
    assert answer.status_code == 201, answer.text
    notice_id: str = answer.json()["id"]
    return notice_id


async def settle(
    api: httpx.AsyncClient, notice_id: str, within: float = WITHIN_S
) -> dict[str, Any]:
    """The notice once every message is delivered, failed or skipped (the statistics
    unchanged for a few polls: late events come in meanwhile)."""
    deadline = time.monotonic() + within
    previous: Any = None
    steady = 0
    while True:
        notice: dict[str, Any] = (await api.get(f"/v1/notices/{notice_id}")).json()
        stats = notice["stats"]
        final = sum(s["delivered"] + s["failed"] + s["skipped"] for s in stats.values())
        done = final == notice["recipients"] * len(stats) and notice["status"] != "sending"
        steady = steady + 1 if done and stats == previous else 0
        previous = stats
        if steady >= 3:
            return notice
        assert time.monotonic() < deadline, f"notice {notice_id} not settled: {notice}"
        await asyncio.sleep(0.2)


async def until(api: httpx.AsyncClient, path: str, holds: Any, within: float = WITHIN_S) -> Any:
    """The API's answer at ``path`` once ``holds(answer)`` is true."""
    deadline = time.monotonic() + within
    while True:
        answer = (await api.get(path)).json()
        if holds(answer):
            return answer
        assert time.monotonic() < deadline, f"{path}: still {answer}"
        await asyncio.sleep(0.2)


# --- the browser -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in(page: Page, base: str, email: str, password: str = PASSWORD) -> None:
    """Signs in through the form, as a person would (any language)."""
    await page.goto(f"{base}/ui/login")
    await page.get_by_label(_LABELS["email"]).fill(email)
    await page.get_by_label(_LABELS["password"]).fill(password)
    await page.get_by_label(_LABELS["password"]).press("Enter")
    await page.wait_for_load_state()


_LABELS = {
    "email": re.compile(r"^(Email|E-mail)$"),
    "password": re.compile(r"^(Password|Mot de passe)$"),
}
