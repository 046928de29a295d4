"""Signing in to the console: sessions kept on the server behind an opaque HttpOnly
cookie, a sign-in form that another site cannot post, a throttle on wrong passwords,
sign-out and disabling that end a session at once, the security headers, and French or
English from the browser."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.people import People
from relaybook.system import System
from tests.dispatcher.console_support import (
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
    keys = await system.infra.pool.fetch("SELECT email_key FROM sign_in_failures")
    assert all(b"jane" not in row["email_key"] for row in keys), "the email is not stored"


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
