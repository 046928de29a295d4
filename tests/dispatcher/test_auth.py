"""API tokens: bound to agencies or platform-wide, optionally expiring, revoked at once
(no cache outlives a revocation), the ``support`` scope, and what a token may be made
with."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import asyncpg
import httpx
import pytest
from starlette.requests import Request

from relaybook.access.auth import (
    ADMIN,
    SCOPES,
    Authenticator,
    Caller,
    ForbiddenError,
    UnauthorizedError,
    create_token,
    digest,
    list_tokens,
    revoke_token,
)
from relaybook.tooling.system import System
from tests.support import ADMIN as ADMIN_TOKEN


def request(token: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/v1/journal",
            "headers": [(b"authorization", f"Bearer {token}".encode())],
        }
    )


@pytest.fixture
def auth(pool: asyncpg.Pool) -> Authenticator:
    return Authenticator(pool, ADMIN_TOKEN)


async def test_a_token_bound_to_agencies_calls_as_those_agencies_only(
    pool: asyncpg.Pool, auth: Authenticator
) -> None:
    token = await create_token(
        pool, "syndic-a", ["journal:read"], agencies=["agency-b", "agency-a", "agency-a"]
    )
    caller = await auth.caller(request(token), "journal:read")
    assert caller == Caller(
        "syndic-a", frozenset({"journal:read"}), frozenset({"agency-a", "agency-b"})
    )
    assert caller.roles == frozenset(), "a token is no person"
    assert caller.sees("agency-a")
    assert not caller.sees("agency-c")
    assert caller.sole_agency is None, "bound to two: a notice must name its agency"


async def test_a_token_bound_to_one_agency_has_it_as_its_sole_agency(
    pool: asyncpg.Pool, auth: Authenticator
) -> None:
    token = await create_token(pool, "syndic-a", ["notices:write"], agencies=["agency-a"])
    caller = await auth.caller(request(token), "notices:write")
    assert caller.sole_agency == "agency-a"


async def test_a_token_without_agencies_is_platform_wide(
    pool: asyncpg.Pool, auth: Authenticator
) -> None:
    token = await create_token(pool, "portal", ["journal:read"])
    caller = await auth.caller(request(token), "journal:read")
    assert caller.agencies is None
    assert caller.sees("any-agency")
    assert caller.sole_agency is None


async def test_the_admin_token_has_every_scope_support_included_on_every_agency(
    auth: Authenticator,
) -> None:
    caller = await auth.caller(request(ADMIN_TOKEN), "support")
    assert caller == Caller(ADMIN, frozenset(SCOPES), None)
    assert "support" in caller.scopes


async def test_the_support_scope_is_granted_to_tokens_that_are_given_it_only(
    pool: asyncpg.Pool, auth: Authenticator
) -> None:
    support = await create_token(pool, "helpdesk", ["journal:read", "support"])
    manager = await create_token(pool, "manager", ["preferences:write"])
    assert "support" in (await auth.caller(request(support), "support")).scopes
    with pytest.raises(ForbiddenError, match="lacks the support scope"):
        await auth.caller(request(manager), "support")


async def test_a_token_past_its_expiry_answers_401_and_one_before_it_works(
    pool: asyncpg.Pool, auth: Authenticator
) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    token = await create_token(pool, "temp", ["journal:read"], expires_at=soon)
    assert (await auth.caller(request(token), "journal:read")).name == "temp"
    # time passes: the expiry is read from the row, by PostgreSQL's clock, each request
    await pool.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        digest(token),
    )
    with pytest.raises(UnauthorizedError, match="expired"):
        await auth.caller(request(token), "journal:read")


async def test_a_revoked_token_answers_401_on_the_very_next_request(
    pool: asyncpg.Pool, auth: Authenticator
) -> None:
    token = await create_token(pool, "accounting", ["journal:read"])
    for _ in range(3):  # a warm lookup is no cached one
        await auth.caller(request(token), "journal:read")
    revoked = await revoke_token(pool, "accounting")
    assert (revoked.name, revoked.already) == ("accounting", False)
    with pytest.raises(UnauthorizedError, match="revoked"):
        await auth.caller(request(token), "journal:read")


async def test_revocation_through_the_api_is_immediate(
    system: System, api: httpx.AsyncClient
) -> None:
    assert system.infra is not None
    token = await create_token(system.infra.pool, "accounting", ["journal:read"])
    headers = {"Authorization": f"Bearer {token}"}
    assert (await api.get("/v1/journal", headers=headers)).status_code == 200
    await revoke_token(system.infra.pool, "accounting")
    answer = await api.get("/v1/journal", headers=headers)
    assert (answer.status_code, answer.json()["error"]) == (401, "unauthorized")


async def test_a_token_is_revoked_by_id_or_name_and_a_second_revocation_keeps_the_first(
    pool: asyncpg.Pool,
) -> None:
    await create_token(pool, "first", ["journal:read"])
    await create_token(pool, "second", ["journal:read"])
    [first, second] = await list_tokens(pool)
    by_id = await revoke_token(pool, str(second.id))
    assert (by_id.id, by_id.name, by_id.already) == (second.id, "second", False)
    again = await revoke_token(pool, "second")
    assert (again.already, again.revoked_at) == (True, by_id.revoked_at)
    listed = {token.name: token for token in await list_tokens(pool)}
    assert listed["first"].revoked_at is None, "only the one named"
    assert listed["second"].revoked_at == by_id.revoked_at
    assert first.name == "first"


@pytest.mark.parametrize(
    "name_or_id", ["nobody", str(uuid.uuid4()), ADMIN], ids=["name", "id", "admin"]
)
async def test_revoking_what_is_not_a_stored_token_says_so(
    pool: asyncpg.Pool, name_or_id: str
) -> None:
    with pytest.raises(ValueError, match=r"no token|admin token is not stored"):
        await revoke_token(pool, name_or_id)


async def test_the_token_list_shows_everything_but_the_secret(pool: asyncpg.Pool) -> None:
    expires = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)
    await create_token(
        pool, "syndic", ["journal:read", "support"], agencies=["a1"], expires_at=expires
    )
    [token] = await list_tokens(pool)
    assert (token.name, token.scopes, token.agencies, token.expires_at, token.revoked_at) == (
        "syndic",
        ("journal:read", "support"),
        ("a1",),
        expires,
        None,
    )
    assert not {"token", "token_hash", "hash"} & set(vars(token)), "never kept, never shown"


@pytest.mark.parametrize(
    ("name", "scopes", "options", "why"),
    [
        ("x", ["everything"], {}, "scopes must be among"),
        ("x", [], {}, "scopes must be among"),
        ("admin", ["journal:read"], {}, "reserved"),
        ("jane@example.org", ["journal:read"], {}, "no '@'"),
        ("x" * 101, ["journal:read"], {}, "1 to 100"),
        ("x", ["journal:read"], {"agencies": [""]}, "no agency id"),
        ("x", ["journal:read"], {"agencies": [" a"]}, "no agency id"),
        ("x", ["journal:read"], {"agencies": ["a\nb"]}, "no agency id"),
        ("x", ["journal:read"], {"agencies": ["a" * 201]}, "no agency id"),
        (
            "x",
            ["journal:read"],
            {"expires_at": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)},
            "in the past",
        ),
    ],
)
async def test_a_token_that_cannot_be_made_is_refused_saying_why(
    pool: asyncpg.Pool, name: str, scopes: list[str], options: dict[str, object], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        await create_token(pool, name, scopes, **options)  # type: ignore[arg-type]
    assert await list_tokens(pool) == []


async def test_readiness_errors_are_shown_to_a_token_with_the_ops_scope_only(
    system: System, api: httpx.AsyncClient
) -> None:
    """Anyone on the API's port learns which dependency fails; a token with the ``ops``
    scope (or the admin token) learns why as well."""
    assert system.infra is not None
    pool = system.infra.pool
    ops = await create_token(pool, "monitoring", ["ops"])
    reader = await create_token(pool, "accounting", ["journal:read"])
    # the schema one migration behind the code: the database check fails, saying so
    newest = await pool.fetchval("SELECT max(version) FROM schema_migrations")
    await pool.execute("DELETE FROM schema_migrations WHERE version = $1", newest)
    answers = {
        who: await api.get("/readyz", headers={"Authorization": f"Bearer {token}"})
        for who, token in (
            ("stranger", "guessed"), ("reader", reader), ("ops", ops), ("admin", ADMIN_TOKEN)
        )
    }  # fmt: skip
    async with httpx.AsyncClient(base_url=str(api.base_url)) as nobody:
        anonymous = await nobody.get("/readyz")
    for who, answer in {**answers, "anonymous": anonymous}.items():
        assert answer.status_code == 503, who
        assert answer.json()["checks"] == {"database": "failing", "broker": "ok"}, who
    for who in ("anonymous", "stranger", "reader"):
        body = answers.get(who, anonymous).json()
        assert "details" not in body, who
        assert "migration" not in json.dumps(body), who
    expected = f"schema at migration {newest - 1}, the code needs {newest}: run `relaybook migrate`"
    for who in ("ops", "admin"):
        assert answers[who].json()["details"] == {"database": f"DatabaseError: {expected}"}, who
