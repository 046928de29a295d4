"""The preferences API: reading (not_applicable without an address), a manager's change,
validation, scopes, the overview's filters, and every change audited and announced."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from relaybook.access.auth import create_token
from relaybook.platform.kafka import Record
from relaybook.reachability.decisions import BouncePolicy
from relaybook.reachability.policy import Policy
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System
from tests.support import delivery_event, notice


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


# --- the owner's own opt-out (issue 33) -------------------------------------------------

OWNER_0_PHONE = "+33610000000"


async def _policy(system: System, *events: Record) -> None:
    assert system.infra is not None
    await BouncePolicy(system.infra.pool, Policy.from_settings(Settings())).handle(list(events))


async def _caller(system: System, name: str, scopes: list[str]) -> httpx.AsyncClient:
    assert system.infra is not None
    token = await create_token(system.infra.pool, name, scopes)
    return httpx.AsyncClient(
        base_url=system.servers["dispatcher"].url, headers={"Authorization": f"Bearer {token}"}
    )


STOP = ("opted_out", {"reason": "replied STOP"})
FAILED = ("undelivered", {"provider_code": "30005"})


async def _texts_of_owner_0(api: httpx.AsyncClient) -> tuple[str, str | None]:
    """What the next notice does with owner-0's text: (status, reason)."""
    created = (await api.post("/v1/notices", json=notice(1, send=False))).json()
    answer = await api.get(f"/v1/notices/{created['id']}/recipients")
    sms = answer.json()["items"][0]["sms"]
    return sms["status"], sms["reason"]


async def test_a_stop_that_comes_while_the_number_is_unsubscribed_automatically_is_kept(
    system: System, api: httpx.AsyncClient, owners: None, db: asyncpg.Connection
) -> None:
    """Reproduced on main: three permanent failures unsubscribed the number, the owner
    texted STOP, support lifted the automatic unsubscribe, and the next text went out."""
    await _policy(
        system, *(delivery_event(FAILED[0], OWNER_0_PHONE, **FAILED[1]) for _ in range(3))
    )
    await _policy(system, delivery_event(STOP[0], OWNER_0_PHONE, **STOP[1]))
    rules = await db.fetch(
        "SELECT rule FROM suppressions WHERE address = $1 AND lifted_at IS NULL ORDER BY rule",
        OWNER_0_PHONE,
    )
    assert [row["rule"] for row in rules] == ["hard_bounces", "opt_out"]
    async with await _caller(system, "desk", ["preferences:write", "support"]) as support:
        lifted = await support.put(
            "/v1/recipients/owner-0/preferences", json={"sms": "yes", "reason": "new SIM"}
        )
    assert (lifted.status_code, lifted.json()["error"]) == (409, "owner_opted_out")
    shown = (await api.get("/v1/recipients/owner-0/preferences")).json()["sms"]
    assert (shown["wants"], shown["changed_by"]) == ("no", "owner")
    assert await _texts_of_owner_0(api) == ("skipped", "opted_out")
    # the automatic cause lifted on its own (as an expiry does): the STOP stays
    await db.execute("UPDATE suppressions SET lifted_at = now() WHERE rule = 'hard_bounces'")
    shown = (await api.get("/v1/recipients/owner-0/preferences")).json()["sms"]
    assert (shown["wants"], shown["changed_by"]) == ("no", "owner")
    assert await _texts_of_owner_0(api) == ("skipped", "opted_out")


async def test_a_managers_yes_never_overrules_the_owners_stop(
    system: System, api: httpx.AsyncClient, owners: None, db: asyncpg.Connection
) -> None:
    """Reproduced on main: after STOP, a manager's yes answered 200 and the preferences
    said yes, while every text was skipped as suppressed."""
    await _policy(system, delivery_event(STOP[0], OWNER_0_PHONE, **STOP[1]))
    async with await _caller(system, "manager", ["preferences:write", "journal:read"]) as manager:
        refused = await manager.put(
            "/v1/recipients/owner-0/preferences", json={"sms": "yes", "reason": "they called"}
        )
        assert (refused.status_code, refused.json()["error"]) == (409, "owner_opted_out")
        assert "only the owner" in refused.json()["detail"]
        shown = (await manager.get("/v1/recipients/owner-0/preferences")).json()["sms"]
        assert (shown["wants"], shown["changed_by"], shown["reason"]) == (
            "no",
            "owner",
            "replied STOP",
        )
        assert await db.fetchval("SELECT count(*) FROM audit_log WHERE actor = 'manager'") == 0
        assert await _texts_of_owner_0(api) == ("skipped", "opted_out")

        # on the owner's behalf: with what they sent, or a 422
        bare = await manager.put(
            "/v1/recipients/owner-0/preferences",
            json={"sms": "yes", "reason": "their letter", "changed_by": "owner"},
        )
        assert (bare.status_code, bare.json()["field"]) == (422, "evidence")
        done = await manager.put(
            "/v1/recipients/owner-0/preferences",
            json={
                "sms": "yes",
                "reason": "the owner wants the texts back",
                "changed_by": "owner",
                "evidence": "signed letter received 2026-12-01, filed as GED-1234",
            },
        )
    assert done.status_code == 200, done.text
    assert (done.json()["sms"]["wants"], done.json()["sms"]["changed_by"]) == ("yes", "owner")
    lifted = await db.fetchrow("SELECT lifted_by, lift_reason FROM suppressions")
    assert tuple(lifted.values()) == ("manager", "the owner wants the texts back")
    audit = await db.fetchrow("SELECT action, details FROM audit_log WHERE actor = 'manager'")
    assert audit["action"] == "owner_request"
    assert json.loads(audit["details"])["evidence"].startswith("signed letter")
    assert await _texts_of_owner_0(api) == ("queued", None)


async def test_an_owners_no_recorded_with_evidence_is_lifted_by_the_owner_only(
    system: System, api: httpx.AsyncClient, owners: None
) -> None:
    said_no = await api.put(
        "/v1/recipients/owner-1/preferences",
        json={
            "email": "no",
            "reason": "no more emails",
            "changed_by": "owner",
            "evidence": "email of 2026-12-02 from the owner's address",
        },
    )
    assert said_no.json()["email"]["changed_by"] == "owner"
    async with await _caller(system, "manager", ["preferences:write"]) as manager:
        # a manager's own "no" does not rewrite it as theirs, and their "yes" is refused
        same = await manager.put(
            "/v1/recipients/owner-1/preferences", json={"email": "no", "reason": "x"}
        )
        assert same.json()["email"]["changed_by"] == "owner"
        refused = await manager.put(
            "/v1/recipients/owner-1/preferences", json={"email": "yes", "reason": "x"}
        )
        assert (refused.status_code, refused.json()["error"]) == (409, "owner_opted_out")
    # the admin token has every scope, support's among them: still the owner's alone
    refused = await api.put(
        "/v1/recipients/owner-1/preferences", json={"email": "yes", "reason": "x"}
    )
    assert (refused.status_code, refused.json()["error"]) == (409, "owner_opted_out")


async def test_start_brings_the_texts_back_and_a_manager_may_not_cancel_it(
    system: System, api: httpx.AsyncClient, owners: None
) -> None:
    await _policy(system, delivery_event(STOP[0], OWNER_0_PHONE, **STOP[1]))
    await _policy(system, delivery_event("opted_in", OWNER_0_PHONE, reason="replied START"))
    shown = (await api.get("/v1/recipients/owner-0/preferences")).json()["sms"]
    assert shown["wants"] == "yes"
    assert await _texts_of_owner_0(api) == ("queued", None)


@pytest.mark.parametrize(
    ("field", "value"), [("email", "owner1@example.org\n"), ("phone", "+33610000001\n")]
)
async def test_an_address_with_a_trailing_newline_is_refused(
    api: httpx.AsyncClient, owners: None, field: str, value: str
) -> None:
    """Python's ``$`` also matches before a final newline: the API took such addresses."""
    bad = await api.patch("/v1/recipients/owner-1", json={field: value})
    assert (bad.status_code, bad.json()["field"]) == (422, field)
