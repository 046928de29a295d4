"""Agencies never see each other: every route, called with a token of agency A about data
of agency B, answers 404 (never 403: it does not reveal that the data exists) and lists
nothing of B; a platform-wide token sees both. Row-level security is the backstop: a
query that forgets its agency condition still sees only the caller's agencies. Only
support brings back an owner the bounce policy unsubscribed."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from relaybook.access.auth import create_token
from relaybook.tooling.system import System
from tests.support import notice

A, B = "agency-a", "agency-b"


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {"only": {"dispatcher"}}


async def _client(system: System, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=system.servers["dispatcher"].url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


async def _token(system: System, name: str, scopes: list[str], agencies: list[str] | None) -> str:
    assert system.infra is not None
    return await create_token(system.infra.pool, name, scopes, agencies=agencies)


@pytest.fixture
async def world(system: System, api: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    """Agency A and agency B each with a notice to owners of the same ids; a token of A
    that may do everything, and one with every scope but platform-wide."""
    made = {}
    for agency in (A, B):
        body = notice(3, agency=agency, property=f"{agency}-residence", send=False)
        for person in body["recipients"]:
            person["properties"] = [f"{agency}-residence"]
        created = await api.post("/v1/notices", json=body)
        assert created.status_code == 201, created.text
        made[agency] = created.json()
    assert system.infra is not None
    delivery_b = await system.infra.pool.fetchval(
        "SELECT id FROM deliveries WHERE agency_id = $1 LIMIT 1", B
    )
    every = ["notices:write", "journal:read", "preferences:write"]
    async with (
        await _client(system, await _token(system, "of-a", every, [A])) as of_a,
        await _client(system, await _token(system, "platform", every, None)) as platform,
    ):
        yield {"a": made[A], "b": made[B], "delivery_b": delivery_b, "of_a": of_a, "all": platform}


def _routes(world: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route about one of B's things: (method, path, body)."""
    notice_b = world["b"]["id"]
    return [
        ("GET", f"/v1/notices/{notice_b}", None),
        ("POST", f"/v1/notices/{notice_b}/send", None),
        ("GET", f"/v1/notices/{notice_b}/recipients", None),
        ("GET", f"/v1/notices/{notice_b}/resend-options", None),
        ("POST", f"/v1/notices/{notice_b}/resends", {"scope": "failed"}),
        ("GET", f"/v1/notices/{notice_b}/resends", None),
        ("GET", f"/v1/deliveries/{world['delivery_b']}", None),
        ("GET", f"/v1/recipients/owner-1/preferences?agency={B}", None),
        ("PUT", f"/v1/recipients/owner-1/preferences?agency={B}", {"email": "no", "reason": "x"}),
        ("PATCH", f"/v1/recipients/owner-1?agency={B}", {"name": "Someone else"}),
    ]


async def test_every_route_answers_404_about_another_agencys_data(world: dict[str, Any]) -> None:
    for method, path, body in _routes(world):
        response = await world["of_a"].request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"] == "not_found"


async def test_lists_show_nothing_of_another_agency(world: dict[str, Any]) -> None:
    of_a, platform = world["of_a"], world["all"]
    journal = (await of_a.get("/v1/journal")).json()["items"]
    assert journal
    assert {item["notice_id"] for item in journal} == {world["a"]["id"]}
    assert (await of_a.get("/v1/journal", params={"notice_id": world["b"]["id"]})).json()[
        "items"
    ] == []
    assert (await of_a.get("/v1/journal", params={"agency": B})).json()["items"] == []
    overview = (await of_a.get("/v1/preferences")).json()["items"]
    assert {item["agency"] for item in overview} == {A}
    everything = (await platform.get("/v1/journal", params={"limit": "500"})).json()["items"]
    assert {item["notice_id"] for item in everything} == {world["a"]["id"], world["b"]["id"]}
    both = (await platform.get("/v1/preferences")).json()["items"]
    assert {item["agency"] for item in both} == {A, B}


async def test_a_property_overview_lists_its_owners_and_the_journal_filters_on_it(
    world: dict[str, Any],
) -> None:
    platform = world["all"]
    owners = (await platform.get("/v1/preferences", params={"property": f"{B}-residence"})).json()
    assert sorted(item["recipient_id"] for item in owners["items"]) == [
        "owner-0",
        "owner-1",
        "owner-2",
    ]
    assert {item["agency"] for item in owners["items"]} == {B}
    journal = (await platform.get("/v1/journal", params={"property": f"{A}-residence"})).json()
    assert {item["notice_id"] for item in journal["items"]} == {world["a"]["id"]}


async def test_the_same_recipient_id_in_two_agencies_is_two_recipients(
    world: dict[str, Any],
) -> None:
    of_a, platform = world["of_a"], world["all"]
    changed = await of_a.put(
        "/v1/recipients/owner-1/preferences", json={"email": "no", "reason": "asked by phone"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["agency"] == A
    of_b = await platform.get("/v1/recipients/owner-1/preferences", params={"agency": B})
    assert of_b.json()["email"]["wants"] == "yes"
    ambiguous = await platform.get("/v1/recipients/owner-1/preferences")
    assert (ambiguous.status_code, ambiguous.json()["field"]) == (422, "agency")


async def test_a_token_cannot_publish_for_an_agency_it_does_not_serve(
    world: dict[str, Any],
) -> None:
    refused = await world["of_a"].post("/v1/notices", json=notice(1, agency=B))
    assert (refused.status_code, refused.json()["field"]) == (422, "agency")
    own = await world["of_a"].post("/v1/notices", json=notice(1, send=False))
    assert own.status_code == 201
    assert own.json()["agency"] == A, "a token bound to one agency publishes there"


async def test_a_query_without_its_agency_condition_still_sees_only_the_callers_agencies(
    world: dict[str, Any], system: System
) -> None:
    """The backstop: as the API's role with agency A set, a bare SELECT on every table of
    an agency's data returns none of B's rows."""
    assert system.infra is not None
    async with system.infra.pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "SELECT set_config('role', 'relaybook_api', true), "
            "set_config('relaybook.agencies', $1::text[]::text, true)",
            [A],
        )
        for table in (
            "notices",
            "recipients",
            "deliveries",
            "resends",
            "idempotency_keys",
            "audit_log",
            "delivery_events",
            "properties",
            "recipient_properties",
        ):
            rows = await connection.fetch(f"SELECT agency_id FROM {table}")  # noqa: S608
            assert {row["agency_id"] for row in rows} <= {A}, table
        assert await connection.fetchval("SELECT count(*) FROM notices") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO agencies (id) VALUES ($1)", f"sneaky-{uuid.uuid4()}"
                )


async def test_only_support_brings_back_an_owner_the_bounce_policy_unsubscribed(
    world: dict[str, Any], system: System, api: httpx.AsyncClient
) -> None:
    assert system.infra is not None
    await system.infra.pool.execute(
        "UPDATE recipients SET email_wants = 'no', email_changed_by_kind = 'automatic', "
        "email_changed_by = 'bounce-policy', email_reason = '3 hard bounces' "
        "WHERE agency_id = $1 AND id = 'owner-1'",
        A,
    )
    back = {"email": "yes", "reason": "the owner called: new mailbox (ticket 12)"}
    refused = await world["of_a"].put("/v1/recipients/owner-1/preferences", json=back)
    assert (refused.status_code, refused.json()["error"]) == (403, "support_only")
    support = await _client(
        system, await _token(system, "support-desk", ["preferences:write", "support"], None)
    )
    async with support:
        done = await support.put(
            "/v1/recipients/owner-1/preferences", params={"agency": A}, json=back
        )
    assert done.status_code == 200, done.text
    assert done.json()["email"]["changed_by"] == "support"
    audited = await system.infra.pool.fetchrow(
        "SELECT actor, agency_id FROM audit_log WHERE action = 'support_override'"
    )
    assert (audited["actor"], audited["agency_id"]) == ("support-desk", A)


async def test_the_notices_list_filters_pages_and_keeps_to_the_callers_agencies(
    world: dict[str, Any], api: httpx.AsyncClient
) -> None:
    sent = await api.post("/v1/notices", json=notice(1, agency=A, title="Sent now"))
    assert sent.status_code == 201
    of_a = world["of_a"]
    listed = (await of_a.get("/v1/notices")).json()
    assert {item["agency"] for item in listed["items"]} == {A}
    assert listed["items"][0]["title"] == "Sent now", "newest first"
    drafts = await of_a.get("/v1/notices", params=[("status", "draft"), ("status", "failed")])
    assert {item["status"] for item in drafts.json()["items"]} <= {"draft", "failed"}
    assert world["a"]["id"] in {item["id"] for item in drafts.json()["items"]}
    by_property = await world["all"].get("/v1/notices", params={"property": f"{B}-residence"})
    assert [item["id"] for item in by_property.json()["items"]] == [world["b"]["id"]]
    first = (await world["all"].get("/v1/notices", params={"limit": "1"})).json()
    second = await world["all"].get(
        "/v1/notices", params={"limit": "1", "cursor": first["next_cursor"]}
    )
    assert second.json()["items"][0]["id"] != first["items"][0]["id"]
    bad = await of_a.get("/v1/notices", params={"status": "nonsense"})
    assert (bad.status_code, bad.json()["field"]) == (422, "status[0]")


#: the contract's roles, and what each may do on the API: read, write (send, resend,
#: change preferences), reverse an automatic unsubscribe
ROLE_TABLE = {
    "viewer": {"read": True, "write": False, "support": False},
    "manager": {"read": True, "write": True, "support": False},
    "administrator": {"read": True, "write": True, "support": False},
    "support": {"read": True, "write": True, "support": True},
    "ops": {"read": True, "write": False, "support": False},
}


@pytest.mark.parametrize("role", sorted(ROLE_TABLE))
def test_each_role_may_call_what_the_contract_says_and_no_more(role: str) -> None:
    """Every route's scopes against each role's: reads, writes and the support override
    allowed or refused (403) as the contract's table of roles says."""
    from dispatcher.app import operations  # noqa: PLC0415 - the registry of every route
    from relaybook.access.auth import SUPPORT  # noqa: PLC0415
    from relaybook.access.people import ROLES  # noqa: PLC0415

    granted = ROLES[role]
    for op in operations(*([None] * 4)):  # type: ignore[arg-type]
        kind = "read" if op.method == "GET" else "write"
        allowed = bool(granted & set(op.scopes))
        assert allowed == ROLE_TABLE[role][kind], (role, op.method, op.path)
    assert (SUPPORT in granted) == ROLE_TABLE[role]["support"], role


#: relations the API's role may read that hold no agency's data, so need no policy, each
#: with why. None today: every table it reads is filtered by agency (0014, 0022).
READABLE_WITHOUT_POLICY: dict[str, str] = {}


async def test_every_table_the_api_role_can_read_is_filtered_by_a_policy(
    pool: asyncpg.Pool,
) -> None:
    """From the catalog: every relation of the schema that relaybook_api may read (SELECT
    on it or on one of its columns, or UPDATE and DELETE, whose conditions read it) has
    row-level security enabled and a policy that filters what the role sees, or holds no
    agency's data (READABLE_WITHOUT_POLICY); it may read no sequence (a platform-wide
    count)."""
    rows = await pool.fetch(
        """
        SELECT c.relname AS name, c.relkind::text AS kind, c.relrowsecurity AS secured,
               EXISTS (SELECT 1 FROM pg_policy p
                       WHERE p.polrelid = c.oid AND p.polcmd IN ('r', '*')
                         AND (0::oid = ANY (p.polroles)
                              OR 'relaybook_api'::regrole = ANY (p.polroles))) AS filtered
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace
          AND CASE WHEN c.relkind = 'S'
                   THEN has_sequence_privilege('relaybook_api', c.oid, 'SELECT')
                   WHEN c.relkind IN ('r', 'p', 'v', 'm', 'f')
                   THEN has_any_column_privilege('relaybook_api', c.oid, 'SELECT')
                        OR has_table_privilege('relaybook_api', c.oid, 'UPDATE, DELETE')
                   ELSE false END
        ORDER BY c.relname
        """
    )
    readable = {row["name"]: row for row in rows}
    assert {"notices", "recipients", "deliveries", "suppressions"} <= set(readable)
    assert [name for name, row in readable.items() if row["kind"] == "S"] == []
    unfiltered = [
        name
        for name, row in readable.items()
        if not (row["secured"] and row["filtered"]) and name not in READABLE_WITHOUT_POLICY
    ]
    assert unfiltered == [], "readable by the API's role with no row-level policy"
    for name in READABLE_WITHOUT_POLICY:
        assert name in readable, f"{name} is no longer readable: take it off the list"


async def _seen_as_api(url: str, agencies: list[str] | None, query: str) -> int | None:
    """How many rows ``query`` counts as the API's role with ``agencies`` set (None: none
    ever set on the connection); None when the role may not read the table."""
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            await connection.execute("SELECT set_config('role', 'relaybook_api', true)")
            if agencies is not None:
                await connection.execute(
                    "SELECT set_config('relaybook.agencies', $1::text[]::text, true)", agencies
                )
            found: int = await connection.fetchval(query)
            return found
    except asyncpg.InsufficientPrivilegeError:
        return None
    finally:
        await connection.close()


async def test_an_agencys_attempts_addresses_and_events_are_hidden_from_others(
    system: System, api: httpx.AsyncClient
) -> None:
    """As the API's role with no agency set, or with another agency, none of agency A's
    rows of send_attempts, address_health, suppressions and outbox is visible; with A set,
    its address's suppressions and counts are (the preferences show them), and send
    attempts and the event outbox are read by no request at all."""
    body = notice(1, agency=A)
    body["recipients"] = [{"id": "only-a", "email": "Only-A@example.org", "phone": "+33700000001"}]
    created = await api.post("/v1/notices", json=body)
    assert created.status_code == 201, created.text
    assert system.infra is not None
    owner = system.infra.pool
    await owner.execute(
        "INSERT INTO send_attempts (delivery_id, attempt) "
        "SELECT id, 1 FROM deliveries WHERE agency_id = $1 AND recipient_id = 'only-a'",
        A,
    )
    await owner.execute(
        "INSERT INTO suppressions (channel, address, rule, reason) VALUES "
        "('email', 'only-a@example.org', 'hard_bounces', '3 hard bounces'), "
        "('sms', '+33700000001', 'opt_out', 'STOP')"
    )
    await owner.execute(
        "INSERT INTO address_health (channel, address, last_success_at) VALUES "
        "('email', 'only-a@example.org', now()), ('sms', '+33700000001', now())"
    )
    await owner.execute(
        "INSERT INTO outbox (topic, key, payload) VALUES ('recipient-events', 'only-a', $1)",
        json.dumps({"agency": A, "recipient_id": "only-a", "address": "only-a@example.org"}),
    )
    queries = {
        "send_attempts": (
            "SELECT count(*) FROM send_attempts a JOIN deliveries d ON d.id = a.delivery_id "
            "WHERE d.recipient_id = 'only-a'"
        ),
        "suppressions": (
            "SELECT count(*) FROM suppressions "
            "WHERE lower(address) IN ('only-a@example.org', '+33700000001')"
        ),
        "address_health": (
            "SELECT count(*) FROM address_health "
            "WHERE address IN ('only-a@example.org', '+33700000001')"
        ),
        "outbox": "SELECT count(*) FROM outbox WHERE payload->>'agency' = 'agency-a'",
    }
    # send_attempts' count joins deliveries, which hide A's rows from others: read alone
    bare = "SELECT count(*) FROM send_attempts"
    url = system.settings.database_url
    assert url is not None
    for agencies in (None, [], [B]):
        seen = {
            table: await _seen_as_api(url, agencies, query)
            for table, query in {**queries, "send_attempts": bare}.items()
        }
        assert not any(seen.values()), (agencies, seen)  # no row, or no right to read
    as_a = {table: await _seen_as_api(url, [A], query) for table, query in queries.items()}
    assert as_a == {"send_attempts": None, "suppressions": 2, "address_health": 2, "outbox": None}
