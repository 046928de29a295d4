"""The preferences API: reading (not_applicable without an address), a manager's change,
validation, scopes, the overview's filters, and every change audited and announced."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from dispatcher.auth import create_token
from relaybook.system import System
from tests.support import notice


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {"only": {"dispatcher"}}


@pytest.fixture
async def owners(api: httpx.AsyncClient) -> None:
    body = notice(3, send=False)
    del body["recipients"][2]["phone"]
    await api.post("/v1/notices", json=body)


async def test_preferences_read_not_applicable_without_an_address(
    api: httpx.AsyncClient, owners: None
) -> None:
    answer = (await api.get("/v1/recipients/owner-2/preferences")).json()
    assert answer["email"]["wants"] == "yes"
    assert answer["email"]["changed_by"] == "default"
    assert answer["sms"]["wants"] == "not_applicable"
    assert answer["never_auto_unsubscribe"] is False
    missing = await api.get("/v1/recipients/nobody/preferences")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


async def test_a_managers_change_is_recorded_audited_and_announced(
    api: httpx.AsyncClient, owners: None, db: asyncpg.Connection
) -> None:
    answer = await api.put(
        "/v1/recipients/owner-0/preferences",
        json={"sms": "no", "reason": "asked by phone", "never_auto_unsubscribe": True},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["sms"] | {"changed_at": None} == {
        "wants": "no",
        "reason": "asked by phone",
        "changed_by": "manager",
        "changed_by_name": "admin",
        "changed_at": None,
    }
    assert body["email"]["wants"] == "yes"
    assert body["never_auto_unsubscribe"] is True
    actions = [r["action"] for r in await db.fetch("SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["preference_changed", "never_auto_unsubscribe"]
    payload = json.loads(
        await db.fetchval("SELECT payload FROM outbox WHERE topic = 'recipient-events'")
    )
    assert (payload["type"], payload["rule"], payload["changed_by"]) == (
        "recipient.unsubscribed",
        "manager",
        "manager",
    )
    # the next notice skips the texts of owner-0 only
    created = (await api.post("/v1/notices", json=notice(2))).json()
    assert created["stats"]["sms"]["skipped"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "maybe", "reason": "x"}, "email"),
        ({"email": "no"}, "reason"),
        ({"email": "no", "reason": "   "}, "reason"),
        ({"reason": "nothing to change"}, "(body)"),
        ({"email": "no", "reason": "x", "fax": "no"}, "fax"),
        ({"never_auto_unsubscribe": "yes", "reason": "x"}, "never_auto_unsubscribe"),
        ([], "(body)"),
    ],
)
async def test_a_bad_change_is_a_422_naming_the_field_and_changes_nothing(
    api: httpx.AsyncClient, owners: None, db: asyncpg.Connection, body: Any, field: str
) -> None:
    answer = await api.put("/v1/recipients/owner-0/preferences", json=body)
    assert answer.status_code == 422
    assert answer.json()["field"] == field
    assert await db.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_changing_preferences_needs_the_scope(
    system: System, api: httpx.AsyncClient, owners: None
) -> None:
    assert system.infra is not None
    token = await create_token(system.infra.pool, "portal", ["journal:read"])
    async with httpx.AsyncClient(
        base_url=system.servers["dispatcher"].url, headers={"Authorization": f"Bearer {token}"}
    ) as reader:
        assert (await reader.get("/v1/recipients/owner-0/preferences")).status_code == 200
        denied = await reader.put(
            "/v1/recipients/owner-0/preferences", json={"email": "no", "reason": "x"}
        )
        assert denied.status_code == 403


async def test_the_overview_filters_and_pages(api: httpx.AsyncClient, owners: None) -> None:
    await api.put("/v1/recipients/owner-1/preferences", json={"email": "no", "reason": "moved"})

    async def ids(**params: str) -> list[str]:
        answer = await api.get("/v1/preferences", params=params)
        assert answer.status_code == 200, answer.text
        return [item["recipient_id"] for item in answer.json()["items"]]

    assert await ids(wants_email="no") == ["owner-1"]
    assert await ids(wants_sms="not_applicable") == ["owner-2"]
    assert await ids(reason="manager") == ["owner-1"]
    assert await ids(reason="automatic") == []
    page = (await api.get("/v1/preferences", params={"limit": "2"})).json()
    rest = (await api.get("/v1/preferences", params={"cursor": page["next_cursor"]})).json()
    assert [i["recipient_id"] for i in page["items"] + rest["items"]] == [
        "owner-0",
        "owner-1",
        "owner-2",
    ]
    bad = await api.get("/v1/preferences", params={"reason": "aliens"})
    assert (bad.status_code, bad.json()["field"]) == (422, "reason")


async def test_a_manager_corrects_an_address(
    api: httpx.AsyncClient, owners: None, db: asyncpg.Connection
) -> None:
    answer = await api.patch("/v1/recipients/owner-1", json={"email": "new@example.org"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "id": "owner-1",
        "name": "Owner 1",
        "email": "new@example.org",
        "phone": "+33610000001",
    }
    removed = await api.patch("/v1/recipients/owner-1", json={"phone": None})
    assert removed.json()["phone"] is None
    prefs = (await api.get("/v1/recipients/owner-1/preferences")).json()
    assert prefs["sms"]["wants"] == "not_applicable"
    bad = await api.patch("/v1/recipients/owner-1", json={"email": "not an address"})
    assert (bad.status_code, bad.json()["field"]) == (422, "email")
    assert (await api.patch("/v1/recipients/nobody", json={"name": "x"})).status_code == 404
    actions = [r["action"] for r in await db.fetch("SELECT action FROM audit_log")]
    assert actions == ["contact_corrected", "contact_corrected"]
