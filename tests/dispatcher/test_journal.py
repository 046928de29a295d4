"""The journal API: every message, filtered and paged by keyset; one message with its
timeline; a notice's recipients; and end to end with the sandbox, a notice's rows
reaching delivered, opened, clicked, bounced and failed as the providers report."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from relaybook.journal.reader import journal_statement
from relaybook.platform.paging import encode_cursor
from relaybook.tooling.system import System
from tests.support import notice, until


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {"only": {"dispatcher"}}


async def test_pages_cover_every_row_once_even_while_rows_are_added(
    api: httpx.AsyncClient,
) -> None:
    await api.post("/v1/notices", json=notice(7, send=False))  # 14 rows
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "4", **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/journal", params=params)).json()
        seen += [item["delivery_id"] for item in page["items"]]
        pages += 1
        if pages == 2:  # newer rows arrive between pages: they are not this listing's
            await api.post("/v1/notices", json=notice(2, send=False))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert len(seen) == len(set(seen)) == 14


async def test_filters_narrow_the_journal(api: httpx.AsyncClient) -> None:
    first = (await api.post("/v1/notices", json=notice(3, send=False))).json()
    other = notice(2, send=False)
    other["source"] = {"service": "works", "kind": "meeting", "reference": "AGM-2027"}
    second = (await api.post("/v1/notices", json=other)).json()

    async def ids(**params: str) -> set[tuple[str, str, str]]:
        answer = await api.get("/v1/journal", params=params)
        assert answer.status_code == 200, answer.text
        return {(i["notice_id"], i["recipient_id"], i["channel"]) for i in answer.json()["items"]}

    assert len(await ids()) == 10
    assert await ids(notice_id=second["id"], channel="sms") == {
        (second["id"], "owner-0", "sms"),
        (second["id"], "owner-1", "sms"),
    }
    assert await ids(recipient_id="owner-2") == {
        (first["id"], "owner-2", "email"),
        (first["id"], "owner-2", "sms"),
    }
    assert len(await ids(source_service="works", source_reference="AGM-2027")) == 4
    assert len(await ids(source_kind="deposit_call", status="queued")) == 6
    assert await ids(status="failed") == set()
    assert await ids(until="2000-01-01T00:00:00Z") == set()
    assert len(await ids(since="2000-01-01T00:00:00+01:00")) == 10


@pytest.mark.parametrize(
    ("params", "index"),
    [
        ({}, "deliveries_journal_idx"),
        ({"notice_id": "6f1c1c8e-0a39-4d8a-9a53-4b7f3c1d2e10"}, "deliveries_notice_journal_idx"),
        ({"recipient_id": "owner-1"}, "deliveries_recipient_journal_idx"),
        ({"status": "failed"}, "deliveries_status_journal_idx"),
        # the status index leaves out the statuses every message passes through
        ({"status": "queued"}, "deliveries_journal_idx"),
        ({"status": "sent"}, "deliveries_journal_idx"),
    ],
)
async def test_the_journal_reads_newest_first_from_its_indexes_without_sorting(
    pool: asyncpg.Pool, params: dict[str, str], index: str
) -> None:
    """Each page reads its rows in order off one index (backwards: migration 0011), so a
    page of a common status, or of one notice or recipient, costs the same on the first
    day and with millions of messages."""
    text, values, _ = journal_statement(
        params | {"cursor": encode_cursor("2026-11-01T00:00:00+00:00", str(uuid.uuid4()))}
    )
    async with pool.acquire() as connection, connection.transaction():
        # the choice a large journal makes; on a few rows a sort would be as cheap
        await connection.execute("SET LOCAL enable_seqscan = off")
        await connection.execute("SET LOCAL enable_sort = off")
        # the plan PostgreSQL keeps for a statement run often, whatever its values
        await connection.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await connection.execute(f"PREPARE page AS {text}")
        arguments = ", ".join(f"'{value}'" for value in values)  # uuids and times
        plan = "\n".join(
            row[0] for row in await connection.fetch(f"EXPLAIN EXECUTE page({arguments})")
        )
    assert f"Index Scan Backward using {index} on deliveries" in plan, plan
    assert "Sort" not in plan, plan


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"channel": "fax"}, "channel"),
        ({"status": "lost"}, "status"),
        ({"notice_id": "42"}, "notice_id"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-01T00:00:00"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_a_bad_filter_is_a_422_naming_it(
    api: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    answer = await api.get("/v1/journal", params=params)
    assert answer.status_code == 422
    assert answer.json()["field"] == field


async def test_the_journal_needs_a_token(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.servers["dispatcher"].url) as anonymous:
        assert (await anonymous.get("/v1/journal")).status_code == 401
        assert (await anonymous.get("/v1/deliveries/x")).status_code == 401


async def test_unknown_deliveries_and_notices_are_404(api: httpx.AsyncClient) -> None:
    for path in (
        "/v1/deliveries/not-a-uuid",
        "/v1/deliveries/6f1c1c8e-0a39-4d8a-9a53-4b7f3c1d2e10",
        "/v1/notices/6f1c1c8e-0a39-4d8a-9a53-4b7f3c1d2e10/recipients",
    ):
        answer = await api.get(path)
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found")


SCENARIO = [
    # recipient id, email, phone
    ("a-clicks", "a+click@example.org", "+33600000001"),
    ("b-bounces", "b@bounce.sandbox.test", "+33600003005"),
    ("c-blocked", "c@blocked.sandbox.test", "+33600003007"),
    ("d-dropped", "d@dropped.sandbox.test", None),
    ("e-machine", "e@example.org", "+15005550001"),
]


@pytest.mark.parametrize(
    "system_options",
    [
        {
            # every bounce asynchronous (matched on the address), lots of duplicates and
            # reordering, no human opens except +click, every plain email machine-opened
            "sandbox_async_bounce_rate": 1.0,
            "sandbox_duplicate_rate": 0.5,
            "sandbox_reorder_rate": 0.5,
            "sandbox_open_rate": 0.0,
            "sandbox_click_rate": 0.0,
            "sandbox_machine_open_rate": 1.0,
        }
    ],
)
async def test_end_to_end_the_journal_tells_what_happened_to_each_message(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    body = notice(0)
    body["recipients"] = [
        {"id": rid, "email": email, **({"phone": phone} if phone else {})}
        for rid, email, phone in SCENARIO
    ]
    created = (await api.post("/v1/notices", json=body)).json()

    expected = {
        ("a-clicks", "email"): ("clicked", None),
        ("a-clicks", "sms"): ("delivered", None),
        ("b-bounces", "email"): ("failed", "5.1.1"),
        ("b-bounces", "sms"): ("failed", "30005"),
        ("c-blocked", "email"): ("failed", "5.7.1"),
        ("c-blocked", "sms"): ("failed", "30007"),
        ("d-dropped", "email"): ("failed", "5.0.0"),
        ("d-dropped", "sms"): ("skipped", None),
        ("e-machine", "email"): ("delivered", None),
        ("e-machine", "sms"): ("failed", "21211"),
    }
    recipients: dict[str, Any] = {}

    async def journal_says_it_all() -> bool:
        nonlocal recipients
        recipients = (await api.get(f"/v1/notices/{created['id']}/recipients")).json()
        found = {
            (item["id"], channel): (item[channel]["status"], item[channel]["provider_code"])
            for item in recipients["items"]
            for channel in ("email", "sms")
        }
        return found == expected

    await until(journal_says_it_all, within=60)
    # every webhook (duplicates and late ones included) acknowledged by ingest
    assert (await sandbox.post("/_sandbox/drain", params={"timeout": "30"})).status_code == 200
    answer: dict[str, Any] = {}

    async def settled() -> bool:
        # The workers record their outcomes themselves; the notice settles when the
        # tracker reads their events: a moment after the journal is complete (longer on
        # three Kafka nodes sharing the machine's two cores)
        nonlocal answer
        answer = (await api.get(f"/v1/notices/{created['id']}")).json()
        return answer["status"] != "sending"

    await until(settled, within=30)
    assert answer["status"] == "partially_failed"
    assert answer["stats"]["email"] == {
        "queued": 0,
        "sent": 5,
        "delivered": 2,
        "opened": 1,
        "clicked": 1,
        "failed": 3,
        "skipped": 0,
    }
    assert answer["stats"]["sms"] == {
        "queued": 0,
        "sent": 3,
        "delivered": 1,
        "opened": 0,
        "clicked": 0,
        "failed": 3,
        "skipped": 1,
    }
    failed_only = await api.get(
        f"/v1/notices/{created['id']}/recipients", params={"status": "skipped"}
    )
    assert [item["id"] for item in failed_only.json()["items"]] == ["d-dropped"]

    # one message's timeline: each event once, however often the provider posted it
    clicked = recipients["items"][0]["email"]["delivery_id"]
    detail: dict[str, Any] = {}

    async def timeline_complete() -> bool:
        # held-back events may be posted after the click: acknowledged by ingest (the
        # drain above), then stored by the tracker a moment later
        nonlocal detail
        detail = (await api.get(f"/v1/deliveries/{clicked}")).json()
        types = sorted(event["type"] for event in detail["events"])
        return types == ["accepted", "clicked", "delivered", "opened", "opened", "processed"]

    await until(timeline_complete, within=30)
    assert [e["machine_open"] for e in detail["events"] if e["type"] == "opened"] in (
        [True, False],
        [False, True],
    )
    assert detail["notice"]["source"]["service"] == "accounting"
    assert detail["clicked_at"] is not None
    bounced = recipients["items"][1]["email"]["delivery_id"]
    bounce = (await api.get(f"/v1/deliveries/{bounced}")).json()
    assert bounce["reason"].startswith("550 5.1.1")
    assert any(e["type"] == "bounced" and e["delivery_id"] is None for e in bounce["events"])


async def test_the_journal_of_a_reference_reads_each_notice_by_its_own_index(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """A deposit call of last month is a few notices among many: its page is read notice
    by notice off each one's index, never by scanning every newer message; its pages
    still cover each of its messages once, newest first, across its notices."""
    for count in (3, 4):
        body = notice(count, send=False, property="tilleuls")
        body["source"]["reference"] = "DC-2026-10"
        assert (await api.post("/v1/notices", json=body)).status_code == 201
    await api.post("/v1/notices", json=notice(5, send=False))  # newer, another reference
    for params in ({"source_reference": "DC-2026-10"}, {"property": "tilleuls"}):
        seen: list[tuple[str, str]] = []
        cursor = None
        while True:
            page = (
                await api.get(
                    "/v1/journal",
                    params={**params, "limit": "3"} | ({"cursor": cursor} if cursor else {}),
                )
            ).json()
            seen += [(i["delivery_id"], i["notice_id"]) for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 14, params
        assert [d for d, _ in seen] == sorted((d for d, _ in seen), reverse=True), "newest first"
        text, values, _ = journal_statement(params)
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(row[0] for row in await connection.fetch(f"EXPLAIN {text}", *values))
        assert "Index Scan Backward using deliveries_notice_journal_idx" in plan, plan
