"""The console's two speed targets (issue 20), on the dispatcher as `relaybook up` runs it
(its own process's app, the embedded PostgreSQL):

1. a notice with 10,000 recipients (email and SMS) opens in under 300 ms of server time;
2. the journal pages over 1,000,000 messages in under 100 ms a page.

The data: 10 notices of 100,000 recipients by email and one of 10,000 on both channels,
created through the API (the fan-out relaybook really does), then given a spread of
outcomes in one UPDATE each (delivered, opened, clicked, failed with a provider code,
skipped ones stay). Timings are measured by the client on the same machine, each page
asked 20 times in a row by a signed-in manager of the agency; median and 95th percentile,
plus the API's own figure for the same journal page beside it.

    .venv/bin/python bench/console_pages.py [--notices 10] [--recipients 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import platform
import re
import statistics
import time

import argon2
import asyncpg
import httpx
import temporary

from relaybook.access.people import People
from relaybook.platform import logs
from relaybook.platform.runtime import settle_garbage_collector
from relaybook.tooling.embedded import EmbeddedBroker, EmbeddedPostgres, free_ports
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System

ADMIN = "bench-admin"
PASSWORD = "bench password, long enough"  # noqa: S105 - a made-up person of the bench
REPEATS = 20
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_NEXT = re.compile(r'href="([^"]*[?&](?:amp;)?cursor=[^"]*)"')


def notice(prefix: str, count: int, channels: tuple[str, ...]) -> dict[str, object]:
    body: dict[str, object] = {
        "source": {"service": "accounting", "kind": "deposit_call", "reference": prefix},
        "title": f"Deposit call {prefix}",
        "email": {"subject": "Deposit call", "text": "Pay at https://portal.example.org/dc"},
        "sms": {"text": "Your deposit call is on the portal."},
        "recipients": [
            {
                "id": f"{prefix}-owner-{i}",
                "name": f"Owner {i}",
                "email": f"owner{i}@example.org",
                "phone": f"+336{i:08d}",
            }
            for i in range(count)
        ],
        "send": False,
    }
    for channel in {"email", "sms"} - set(channels):
        body[channel] = None
    return body


# outcomes spread by a hash of the id: 60 % delivered, 15 % opened, 10 % clicked, 10 %
# failed with a provider code, 5 % still sent
_OUTCOMES = """
UPDATE deliveries SET
    status = o.status, sent_at = created_at,
    delivered_at = CASE WHEN o.status IN ('delivered', 'opened', 'clicked') THEN created_at END,
    opened_at = CASE WHEN o.status IN ('opened', 'clicked') THEN created_at END,
    clicked_at = CASE WHEN o.status = 'clicked' THEN created_at END,
    failed_at = CASE WHEN o.status = 'failed' THEN created_at END,
    reason = CASE WHEN o.status = 'failed' THEN 'bounced' END,
    provider_code = CASE WHEN o.status = 'failed' THEN '550' END
FROM (SELECT id, CASE WHEN h < 60 THEN 'delivered' WHEN h < 75 THEN 'opened'
                      WHEN h < 85 THEN 'clicked' WHEN h < 95 THEN 'failed' ELSE 'sent' END
             AS status
      FROM (SELECT id, abs(hashtext(id::text)) % 100 AS h FROM deliveries
            WHERE status = 'queued') x) o
WHERE deliveries.id = o.id
"""


async def timed(client: httpx.AsyncClient, url: str) -> tuple[list[float], httpx.Response]:
    times = []
    answer = None
    for _ in range(REPEATS):
        started = time.perf_counter()
        answer = await client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
    assert answer is not None
    return times, answer


def line(label: str, times: list[float], target: float | None = None) -> str:
    median = statistics.median(times)
    p95 = sorted(times)[int(len(times) * 0.95) - 1]
    verdict = "" if target is None else ("  (target met)" if p95 < target else "  (MISSED)")
    return f"{label:<58} median {median:7.1f} ms, p95 {p95:7.1f} ms{verdict}"


async def run(notices: int, recipients: int) -> None:
    logs.configure("WARNING", "console")
    scratch = temporary.directory("relaybook-bench-")
    postgres = EmbeddedPostgres(scratch)
    database_url = await asyncio.to_thread(postgres.start)
    broker = EmbeddedBroker()
    (api_port,) = free_ports(1)
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=broker.start(),
        data_dir=scratch,
        api_port=api_port,
        admin_token=ADMIN,
    )
    try:
        async with (
            System(settings, only={"dispatcher"}) as system,
            httpx.AsyncClient(base_url=system.servers["dispatcher"].url, timeout=600) as client,
        ):
            admin = {"Authorization": f"Bearer {ADMIN}"}
            started = time.monotonic()
            big = None
            for number in range(notices):
                made = await client.post(
                    "/v1/notices", headers=admin,
                    content=json.dumps(notice(f"N{number}", recipients, ("email",))),
                )  # fmt: skip
                assert made.status_code == 201, made.text
            made = await client.post(
                "/v1/notices", headers=admin,
                content=json.dumps(notice("TEN", 10_000, ("email", "sms"))),
            )  # fmt: skip
            assert made.status_code == 201, made.text
            big = made.json()["id"]
            connection = await asyncpg.connect(database_url)
            await connection.execute("UPDATE notices SET status = 'sending'")
            await connection.execute(_OUTCOMES)
            await connection.execute("UPDATE notices SET status = 'partially_failed'")
            await connection.execute("VACUUM ANALYZE")
            total = await connection.fetchval("SELECT count(*) FROM deliveries")
            await connection.close()
            seeded_s = time.monotonic() - started

            cheap = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
            await People(system.infra.pool, cheap).create(  # type: ignore[union-attr]
                "manager@example.org", "manager", PASSWORD, ["default"]
            )
            form = await client.get("/ui/login")
            csrf = _CSRF.search(form.text)
            assert csrf is not None
            signed = await client.post(
                "/ui/login",
                data={"csrf": csrf.group(1), "email": "manager@example.org",
                      "password": PASSWORD},
            )  # fmt: skip
            assert signed.status_code == 303, signed.text
            settle_garbage_collector()

            results = []
            times, _ = await timed(client, f"/ui/notices/{big}")
            results.append(line("notice page, 10,000 recipients on 2 channels", times, 300))
            times, _ = await timed(client, "/ui/notices")
            results.append(line("notices list", times))
            times, page = await timed(client, "/ui/journal")
            results.append(line(f"journal, first page of {total:,} messages", times, 100))
            deep = []
            for _ in range(20):
                found = _NEXT.search(page.text)
                if found is None:
                    break
                url = html.unescape(found.group(1))
                took, page = await timed(client, url)
                deep.extend(took)
            if deep:
                results.append(line("journal, the next 20 pages (each asked 20 times)", deep, 100))
            times, _ = await timed(client, "/ui/journal?channel=sms&status=failed")
            results.append(line("journal filtered: texts that failed", times, 100))
            times, _ = await timed(client, "/ui/journal?source_reference=N3")
            results.append(line("journal of one source (100,000 messages)", times, 100))
            client.headers.update(admin)
            times, _ = await timed(client, "/v1/journal?limit=50")
            results.append(line("beside it: the API's journal page (/v1/journal, 50)", times))
            times, _ = await timed(client, "/v1/journal?limit=50&source_reference=N3")
            results.append(line("beside it: the API's journal of one source", times))
            times, _ = await timed(client, "/v1/notices")
            results.append(line("beside it: the API's notices list", times))

        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; date {time.strftime('%Y-%m-%d %H:%M %Z')}"
        )
        print(f"data: {total:,} deliveries ({notices} x {recipients:,} + 10,000 x 2), "
              f"seeded in {seeded_s:.0f} s")  # fmt: skip
        for result in results:
            print(result)
    finally:
        broker.stop()
        await asyncio.to_thread(postgres.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notices", type=int, default=10)
    parser.add_argument("--recipients", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(run(args.notices, args.recipients))


if __name__ == "__main__":
    main()
