"""Signing in to the console: sessions kept on the server behind an opaque HttpOnly
cookie, a sign-in form that another site cannot post, a throttle on wrong passwords,
sign-out and disabling that end a session at once, the security headers, and French or
English from the browser."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from relaybook.access.people import People
from relaybook.tooling.system import System
from tests.console.console_support import (
    CHEAP,
    PASSWORD,
    browser,
    csrf_of,
    person,
    sign_in,
    signed_in,
)


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {"only": {"dispatcher"}}


async def test_a_page_sends_a_stranger_to_the_sign_in_form_and_back(system: System) -> None:
    await person(system, "jane@example.org", "manager", ["a"])
    async with browser(system) as client:
        page = await client.get("/ui/notices?status=sent")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=%2Fui%2Fnotices%3Fstatus%3Dsent"
        form = await client.get(page.headers["location"])
        assert form.status_code == 200
        assert '<label for="email">Email</label>' in form.text
        assert '<label for="password">Password</label>' in form.text
        policy = form.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "<script>" not in form.text, "no inline script"
        signed = await client.post(
            "/ui/login",
            data={
                "csrf": csrf_of(form),
                "email": "JANE@example.org",
                "password": PASSWORD,
                "next": "/ui/notices?status=sent",
                "time_zone": "America/Montreal",
            },
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == "/ui/notices?status=sent"
        cookie = next(v for k, v in signed.headers.multi_items() if k == "set-cookie"
                      and v.startswith("rb_session="))  # fmt: skip
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Path=/ui" in cookie
        assert system.infra is not None
        stored = await system.infra.pool.fetchrow(
            "SELECT token_hash, time_zone FROM console_sessions"
        )
        assert stored["time_zone"] == "America/Montreal"
        assert cookie.split(";")[0].split("=", 1)[1].encode() not in stored["token_hash"]


async def test_sign_in_goes_only_to_pages_of_the_console(system: System) -> None:
    await person(system, "jane@example.org", "manager", ["a"])
    async with browser(system) as client:
        for target in ("https://evil.example/", "//evil.example/ui/", "/v1/notices"):
            answer = await sign_in(client, "jane@example.org", next=target)
            assert answer.headers["location"] == "/ui/notices"


async def test_a_wrong_password_is_refused_and_then_throttled(system: System) -> None:
    await person(system, "jane@example.org", "manager", ["a"])
    async with browser(system) as client:
        for _ in range(5):
            refused = await sign_in(client, "jane@example.org", "not the password at all")
            assert refused.status_code == 401
            assert "Wrong email or password." in refused.text
            assert "rb_session" not in refused.headers.get("set-cookie", "")
        throttled = await sign_in(client, "jane@example.org")  # even the right one, now
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) > 0
        assert "Too many attempts" in throttled.text
    assert system.infra is not None
    assert await system.infra.pool.fetchval("SELECT count(*) FROM console_sessions") == 0
    keys = await system.infra.pool.fetch("SELECT key FROM sign_in_throttle")
    assert keys, "the refusals are counted"
    assert all(b"jane" not in row["key"] for row in keys), "the email is not stored"


async def test_another_site_cannot_post_the_sign_in_form(system: System) -> None:
    await person(system, "jane@example.org", "manager", ["a"])
    async with browser(system) as client:
        forged = await client.post(
            "/ui/login",
            data={"csrf": "guessed", "email": "jane@example.org", "password": PASSWORD},
        )
        assert forged.status_code == 200
        assert "sign in again" in forged.text
        assert "rb_session" not in forged.headers.get("set-cookie", "")


async def test_a_change_without_the_session_csrf_token_is_refused(system: System) -> None:
    async with signed_in(system, "jane@example.org", "manager", ["a", "b"]) as client:
        refused = await client.post("/ui/agency", data={"agency": "a", "back": "/ui/notices"})
        assert refused.status_code == 403
        token = csrf_of(await client.get("/ui/notices"))
        picked = await client.post(
            "/ui/agency", data={"agency": "a", "back": "/ui/notices", "csrf": token}
        )
        assert picked.status_code == 303
        foreign = await client.post(
            "/ui/agency", data={"agency": "c", "back": "/ui/notices", "csrf": token}
        )
        assert foreign.status_code == 403


async def test_signing_out_or_being_disabled_ends_the_session_at_once(system: System) -> None:
    assert system.infra is not None
    async with signed_in(system, "jane@example.org", "manager", ["a"]) as client:
        out = await client.post("/ui/logout", data={"csrf": await _session_csrf(system)})
        assert out.status_code == 303
        assert (await client.get("/ui/notices")).status_code == 303
    async with signed_in(system, "joe@example.org", "manager", ["a"]) as client:
        await People(system.infra.pool, CHEAP).disable("joe@example.org")
        assert (await client.get("/ui/notices")).status_code == 303


async def test_the_sign_in_form_speaks_the_browsers_language(system: System) -> None:
    async with browser(system, "fr-FR,fr;q=0.9,en;q=0.5") as client:
        form = await client.get("/ui/login")
        assert '<label for="email">E-mail</label>' in form.text
        assert '<label for="password">Mot de passe</label>' in form.text
        assert '<html lang="fr">' in form.text
        switched = await client.get("/ui/language?to=en&back=%2Fui%2Flogin")
        assert switched.status_code == 303
        assert switched.headers["location"] == "/ui/login"
        assert "Password" in (await client.get("/ui/login")).text


async def _session_csrf(system: System) -> str:
    assert system.infra is not None
    token: str = await system.infra.pool.fetchval("SELECT csrf FROM console_sessions LIMIT 1")
    return token


@contextlib.asynccontextmanager
async def from_address(system: System, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser whose requests come from ``address``, as a trusted proxy in front of
    the dispatcher says (uvicorn believes ``X-Forwarded-For`` from 127.0.0.1)."""
    async with browser(system) as client:
        client.headers["X-Forwarded-For"] = address
        yield client


async def test_forty_concurrent_wrong_passwords_for_one_email_are_judged_at_most_five_times(
    system: System,
) -> None:
    """Each attempt is counted before its password is checked, atomically: a burst of
    concurrent attempts cannot all slip in before the first refusals are counted."""
    await person(system, "jane@example.org", "manager", ["a"])
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(from_address(system, "203.0.113.66")) for _ in range(40)
        ]
        forms = [csrf_of(await client.get("/ui/login")) for client in clients]
        answers = await asyncio.gather(
            *(
                client.post(
                    "/ui/login",
                    data={"csrf": csrf, "email": "jane@example.org", "password": "guess"},
                )
                for client, csrf in zip(clients, forms, strict=True)
            )
        )
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= 5, statuses
    assert statuses.count(429) >= 35, statuses
    assert all(int(a.headers["retry-after"]) > 0 for a in answers if a.status_code == 429)


async def test_an_attackers_failures_do_not_lock_the_owner_out_from_another_address(
    system: System,
) -> None:
    await person(system, "jane@example.org", "manager", ["a"])
    async with from_address(system, "203.0.113.66") as attacker:
        statuses = [
            (await sign_in(attacker, "jane@example.org", "guess")).status_code for _ in range(8)
        ]
        assert statuses == [401] * 5 + [429] * 3
    async with from_address(system, "198.51.100.7") as owner:
        assert (await sign_in(owner, "jane@example.org")).status_code == 303
    async with from_address(system, "203.0.113.66") as attacker:
        still = await sign_in(attacker, "jane@example.org")  # even the right password
        assert still.status_code == 429, "the attacker's address stays refused"


async def test_past_many_failures_an_email_slows_new_addresses_for_a_bounded_delay_only(
    system: System,
) -> None:
    """Failures for one email from several addresses make every new address wait a
    delay (growing, up to a minute) before its attempt is judged, while the owner at an
    address they signed in from before gets in at once."""
    await person(system, "jane@example.org", "manager", ["a"])
    async with from_address(system, "198.51.100.7") as owner:
        assert (await sign_in(owner, "jane@example.org")).status_code == 303
    for attacker_address in ("203.0.113.1", "203.0.113.2"):
        async with from_address(system, attacker_address) as attacker:
            for _ in range(5):
                assert (await sign_in(attacker, "jane@example.org", "guess")).status_code == 401
    async with from_address(system, "192.0.2.50") as newcomer:
        slowed = await sign_in(newcomer, "jane@example.org")
        assert slowed.status_code == 429
        assert 0 < int(slowed.headers["retry-after"]) <= 60
        async with from_address(system, "198.51.100.7") as owner:
            assert (await sign_in(owner, "jane@example.org")).status_code == 303
        deadline = asyncio.get_running_loop().time() + 70
        while (answer := await sign_in(newcomer, "jane@example.org")).status_code == 429:
            assert asyncio.get_running_loop().time() < deadline, "the delay is bounded"
            await asyncio.sleep(0.5)
        assert answer.status_code == 303


async def test_many_emails_from_one_address_are_refused_for_that_address_only(
    system: System,
) -> None:
    await person(system, "jane@example.org", "manager", ["a"])
    async with from_address(system, "203.0.113.9") as sprayer:
        statuses = [
            (await sign_in(sprayer, f"owner{i}@example.org", "Spring2026!")).status_code
            for i in range(24)
        ]
        assert statuses == [401] * 20 + [429] * 4
        assert (await sign_in(sprayer, "jane@example.org")).status_code == 429
    async with from_address(system, "198.51.100.7") as owner:
        assert (await sign_in(owner, "jane@example.org")).status_code == 303


async def test_a_successful_sign_in_forgets_the_failures_of_its_email_and_address(
    system: System,
) -> None:
    await person(system, "jane@example.org", "manager", ["a"])
    async with from_address(system, "198.51.100.7") as owner:
        for _ in range(4):
            assert (await sign_in(owner, "jane@example.org", "typo")).status_code == 401
        assert (await sign_in(owner, "jane@example.org")).status_code == 303
        for _ in range(4):
            assert (await sign_in(owner, "jane@example.org", "typo")).status_code == 401


#: what the console says of a form holding a NUL
CANNOT_KEEP = "holds a character that cannot be kept"


async def test_a_nul_in_any_sign_in_field_shows_the_form_again_not_a_500(system: System) -> None:
    """PostgreSQL stores no NUL: asyncpg's refusal was a 500, whose traceback printed the
    password in the console's log format. A NUL in any field is refused before any query
    (nor counted as a wrong password), with the form again."""
    await person(system, "jane@example.org", "manager", ["a"])
    async with browser(system) as client:
        for email, password, extra in [
            ("a\x00b@x.org", PASSWORD, {}),
            ("jane@example.org\x00", PASSWORD, {}),
            ("jane@example.org", PASSWORD + "\x00", {}),
            ("jane@example.org", PASSWORD, {"next": "/ui/notices\x00"}),
            ("jane@example.org", PASSWORD, {"time_zone": "Europe/Paris\x00"}),
        ]:
            refused = await sign_in(client, email, password, **extra)
            assert refused.status_code == 400, (email, password, extra, refused.text)
            assert CANNOT_KEEP in refused.text
            assert '<label for="password">Password</label>' in refused.text
            assert "rb_session" not in refused.headers.get("set-cookie", "")
        assert (await sign_in(client, "jane@example.org")).status_code == 303


async def test_a_nul_in_a_console_form_or_address_is_refused_not_a_500(system: System) -> None:
    """Every form of the console is read the same way: a NUL is a 400 page saying why. In
    an address (path or query), a 422 like the API's."""
    async with signed_in(system, "jane@example.org", "manager", ["a", "b"], "fr") as client:
        token = csrf_of(await client.get("/ui/notices"))
        refused = await client.post(
            "/ui/agency", data={"agency": "a\x00", "back": "/ui/notices", "csrf": token}
        )
        assert refused.status_code == 400, refused.text
        assert "contient un caractère qui ne peut être enregistré" in refused.text
        for url in (
            "/ui/preferences/owners/owner%00",
            "/ui/journal/sources/accounting%00",
            "/ui/notices?status=%00",
            "/ui/login?next=%2Fui%2F%00",
        ):
            answer = await client.get(url)
            assert answer.status_code == 422, (url, answer.status_code)


async def test_a_sign_in_token_outside_ascii_shows_the_form_again_not_a_500(
    system: System,
) -> None:
    """The form's token is compared in constant time, as bytes: a character outside ASCII
    in it (or in its cookie) is a mismatch like any other, not a TypeError."""
    async with browser(system) as client:
        await client.get("/ui/login")
        refused = await client.post(
            "/ui/login", data={"csrf": "é", "email": "jane@example.org", "password": PASSWORD}
        )
        assert refused.status_code == 200, refused.text
        assert "sign in again" in refused.text
