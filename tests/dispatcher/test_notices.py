"""Notices in, deliveries out: the API's answers, validation, idempotency, auth and
scopes, the fan-out with skip reasons, and release now or at send_at."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from relaybook.access.auth import create_token
from relaybook.tooling.system import System
from tests.support import ADMIN, notice, until


async def test_a_notice_is_created_with_one_delivery_per_recipient_and_channel(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    answer = await api.post("/v1/notices", json=notice(3, send=False))
    assert answer.status_code == 201
    body = answer.json()
    assert body["status"] == "draft"
    assert body["source"] == {
        "service": "accounting",
        "kind": "deposit_call",
        "reference": "DC-2026-Q4",
    }
    assert body["channels"] == ["email", "sms"]
    assert body["recipients"] == 3
    assert body["created_by"] == "admin"
    assert body["stats"]["email"] == {
        "queued": 3,
        "sent": 0,
        "delivered": 0,
        "opened": 0,
        "clicked": 0,
        "failed": 0,
        "skipped": 0,
    }
    rows = await db.fetch(
        "SELECT recipient_id, channel, status, address FROM deliveries "
        "WHERE notice_id = $1 ORDER BY 1, 2",
        uuid.UUID(body["id"]),
    )
    assert [(r["recipient_id"], r["channel"], r["address"]) for r in rows][:2] == [
        ("owner-0", "email", "owner0@example.org"),
        ("owner-0", "sms", "+33610000000"),
    ]
    assert len(rows) == 6
    fetched = await api.get(f"/v1/notices/{body['id']}")
    assert fetched.json() == body


async def test_a_fan_out_numbers_its_delivery_ids_in_the_order_it_writes_them(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """One uuid_v7() per fan-out, then a counter (migration 0008): version 7 ids, distinct,
    increasing recipient by recipient in recipient id order, whatever the request's order
    (so each index entry goes after the one before), and channel by channel."""
    body = notice(12, send=False)
    body["recipients"].reverse()
    answer = await api.post("/v1/notices", json=body)
    query = (
        "SELECT id, recipient_id, channel, (extract(epoch FROM created_at) * 1000)::bigint AS ms"
        " FROM deliveries WHERE notice_id = $1 ORDER BY "
    )
    notice_id = uuid.UUID(answer.json()["id"])
    rows = await db.fetch(query + "id", notice_id)
    in_recipient_order = await db.fetch(query + "recipient_id, channel", notice_id)
    assert [(r["recipient_id"], r["channel"]) for r in rows] == [
        (r["recipient_id"], r["channel"]) for r in in_recipient_order
    ]
    assert len(rows) == 24
    for row in rows:
        assert (row["id"].version, row["id"].variant) == (7, uuid.RFC_4122)
        assert abs((row["id"].int >> 80) - row["ms"]) < 5_000  # the first 48 bits: ms
    assert len({row["id"].int >> 64 for row in rows}) == 1  # timestamp and random bits


async def test_skipped_deliveries_say_why(api: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO recipients (id, email, sms_wants) VALUES ('stopped', 's@x.org', 'no')"
    )
    await db.execute(
        "INSERT INTO suppressions (channel, address, rule, reason) "
        "VALUES ('email', 'GONE@example.org', 'hard_bounce', '5.1.1')"
    )
    body = notice(
        0,
        send=False,
        recipients=[
            {"id": "no-phone", "email": "np@example.org"},
            {"id": "stopped", "phone": "+33611111111"},
            {"id": "gone", "email": "gone@example.org", "phone": "+33622222222"},
        ],
    )
    created = (await api.post("/v1/notices", json=body)).json()
    rows = await db.fetch(
        "SELECT recipient_id || '/' || channel AS key, status, reason "
        "FROM deliveries WHERE notice_id = $1::text::uuid",
        created["id"],
    )
    found = {r["key"]: (r["status"], r["reason"]) for r in rows}
    assert found == {
        "no-phone/email": ("queued", None),
        "no-phone/sms": ("skipped", "no_address"),
        "stopped/email": ("queued", None),  # the address is kept from before
        "stopped/sms": ("skipped", "opted_out"),
        "gone/email": ("skipped", "auto_unsubscribed"),
        "gone/sms": ("queued", None),
    }
    assert created["stats"]["sms"]["skipped"] == 2


async def test_recipients_keep_addresses_left_out_and_lose_those_given_as_null(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await api.post(
        "/v1/notices",
        json=notice(
            0,
            send=False,
            recipients=[{"id": "r", "name": "Ann", "email": "ann@x.org", "phone": "+33633333333"}],
        ),
    )
    await api.post(
        "/v1/notices", json=notice(0, send=False, recipients=[{"id": "r", "phone": None}])
    )
    row = await db.fetchrow("SELECT name, email, phone FROM recipients WHERE id = 'r'")
    assert dict(row) == {"name": "Ann", "email": "ann@x.org", "phone": None}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": None, "sms": None}, "email"),
        ({"source": {"service": "a", "kind": "b"}}, "source.reference"),
        ({"title": ""}, "title"),
        ({"recipients": []}, "recipients"),
        ({"recipients": [{"id": "a"}, {"id": "a"}]}, "recipients[1].id"),
        ({"recipients": [{"id": "a", "email": "not-an-address"}]}, "recipients[0].email"),
        ({"recipients": [{"id": "a", "phone": "0612345678"}]}, "recipients[0].phone"),
        ({"recipients": [{"id": "a"}, "b"]}, "recipients[1]"),
        ({"recipients": [{"id": "a"}, {"name": "B"}]}, "recipients[1].id"),
        ({"recipients": [{"id": "a", "colour": "blue"}]}, "recipients[0].colour"),
        ({"recipients": [{"id": "a", "name": "x" * 201}]}, "recipients[0].name"),
        ({"source": {"service": "a", "kind": "b", "reference": "c", "x": "d"}}, "source.x"),
        ({"sms": {"text": "x" * 1601}}, "sms.text"),
        ({"send_at": "2020-01-01T00:00:00Z", "send": False}, "send_at"),
        ({"send_at": "2999-01-01T00:00:00", "send": False}, "send_at"),
        ({"send_at": "2999-01-01T00:00:00Z"}, "send_at"),
        ({"colour": "blue"}, "colour"),
        ({"send": "yes"}, "send"),
    ],
)
async def test_an_invalid_notice_is_a_422_naming_the_field_and_stores_nothing(
    api: httpx.AsyncClient, db: asyncpg.Connection, change: dict[str, Any], field: str
) -> None:
    answer = await api.post("/v1/notices", json=notice(2) | change)
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_request"
    assert answer.json()["field"] == field
    assert answer.json()["detail"].startswith(field)
    assert await db.fetchval("SELECT count(*) FROM notices") == 0
    assert await db.fetchval("SELECT count(*) FROM recipients") == 0


async def test_a_body_that_is_not_json_is_a_422(api: httpx.AsyncClient) -> None:
    answer = await api.post(
        "/v1/notices", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert (answer.status_code, answer.json()["field"]) == (422, "(body)")


async def test_an_idempotency_key_returns_the_first_answer_and_refuses_another_body(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    headers = {"Idempotency-Key": "dc-2026-q4"}
    first = await api.post("/v1/notices", json=notice(2, send=False), headers=headers)
    again = await api.post("/v1/notices", json=notice(2, send=False), headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    other = await api.post("/v1/notices", json=notice(3, send=False), headers=headers)
    assert other.status_code == 409
    assert other.json()["error"] == "idempotency_key_reused"
    assert await db.fetchval("SELECT count(*) FROM notices") == 1


async def test_concurrent_requests_with_one_idempotency_key_create_one_notice(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    headers = {"Idempotency-Key": "race"}
    answers = await asyncio.gather(
        *(api.post("/v1/notices", json=notice(50, send=False), headers=headers) for _ in range(5))
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert await db.fetchval("SELECT count(*) FROM notices") == 1


async def test_tokens_need_the_right_scope(system: System, api: httpx.AsyncClient) -> None:
    assert system.infra is not None
    reader = await create_token(system.infra.pool, "auditor", ["journal:read"])
    writer = await create_token(system.infra.pool, "accounting", ["notices:write"])
    url = system.servers["dispatcher"].url
    async with httpx.AsyncClient(base_url=url) as anonymous:
        missing = await anonymous.post("/v1/notices", json=notice())
        wrong = await anonymous.post(
            "/v1/notices", json=notice(), headers={"Authorization": "Bearer nope"}
        )
        denied = await anonymous.post(
            "/v1/notices", json=notice(), headers={"Authorization": f"Bearer {reader}"}
        )
        created = await anonymous.post(
            "/v1/notices", json=notice(send=False), headers={"Authorization": f"Bearer {writer}"}
        )
        read = await anonymous.get(
            f"/v1/notices/{created.json()['id']}", headers={"Authorization": f"Bearer {reader}"}
        )
    assert (missing.status_code, missing.json()["error"]) == (401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert (denied.status_code, denied.json()["error"]) == (403, "forbidden")
    assert created.status_code == 201
    assert created.json()["created_by"] == "accounting"
    assert read.status_code == 200
    with pytest.raises(ValueError, match="scopes must be among"):
        await create_token(system.infra.pool, "x", ["everything"])
    with pytest.raises(ValueError, match="exists already"):
        await create_token(system.infra.pool, "auditor", ["journal:read"])
    assert ADMIN not in {reader, writer}


async def test_a_draft_is_sent_once(api: httpx.AsyncClient, sandbox: httpx.AsyncClient) -> None:
    """A draft waits while a notice posted after it goes out (proof the relay and the
    workers went past it), then goes out once when sent."""
    draft = (await api.post("/v1/notices", json=notice(2, send=False))).json()
    after = {"id": "later", "name": "Later", "email": "later@example.org"}
    assert (await api.post("/v1/notices", json=notice(recipients=[after]))).status_code == 201

    async def sent_to() -> list[str]:
        return [m["to"] for m in (await sandbox.get("/_sandbox/messages")).json()["messages"]]

    async def later_sent() -> bool:
        return len(await sent_to()) >= 1

    await until(later_sent)
    assert await sent_to() == ["later@example.org"], "drafts wait"
    sent = await api.post(f"/v1/notices/{draft['id']}/send")
    assert (sent.status_code, sent.json()["status"]) == (202, "sending")
    again = await api.post(f"/v1/notices/{draft['id']}/send")
    assert (again.status_code, again.json()["error"]) == (409, "already_sent")

    async def all_sent() -> bool:
        return len(await sent_to()) == 5

    await until(all_sent)


async def test_unknown_notices_are_404(api: httpx.AsyncClient) -> None:
    for path in ("/v1/notices/nope", "/v1/notices/6f1d2b3c-4a5e-4f60-8172-93a4b5c6d7e8"):
        assert (await api.get(path)).status_code == 404
    assert (await api.post("/v1/notices/nope/send")).status_code == 404


async def test_a_scheduled_notice_is_released_at_send_at(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    send_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    created = await api.post("/v1/notices", json=notice(2, send=False, send_at=send_at.isoformat()))
    assert created.json()["status"] == "scheduled"
    assert (await sandbox.get("/_sandbox/messages")).json()["messages"] == []

    async def released() -> bool:
        current = (await api.get(f"/v1/notices/{created.json()['id']}")).json()
        messages = (await sandbox.get("/_sandbox/messages")).json()["messages"]
        # released: sending, or already sent once the tracker saw every message accepted
        return current["status"] in {"sending", "sent"} and len(messages) == 4

    await until(released, within=15)
    assert dt.datetime.now(dt.UTC) >= send_at
