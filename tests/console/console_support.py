"""Signing a browser-like client in to the console of a running system (the tests of
the console's pages share it)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import argon2
import httpx

from relaybook.access.people import People
from relaybook.tooling.system import System

PASSWORD = "correct horse battery staple"
#: cheap parameters, so tests run fast (the console renews the hash at the first sign-in)
CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def person(system: System, email: str, role: str, agencies: list[str] | None) -> None:
    assert system.infra is not None
    await People(system.infra.pool, CHEAP).create(email, role, PASSWORD, agencies)


def browser(system: System, language: str = "en") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=system.servers["dispatcher"].url,
        headers={"Accept-Language": language},
        timeout=30,
    )


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token a page's forms carry."""
    found = _CSRF.search(page.text)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **fields: str
) -> httpx.Response:
    """Posts the sign-in form as a browser would (after loading it); the answer, not
    followed."""
    form = await client.get("/ui/login")
    return await client.post(
        "/ui/login",
        data={"csrf": csrf_of(form), "email": email, "password": password, **fields},
    )


@contextlib.asynccontextmanager
async def signed_in(system: System, email: str, role: str, agencies: list[str] | None,
                    language: str = "en") -> AsyncIterator[httpx.AsyncClient]:  # fmt: skip
    """A client of a new person of that role, signed in."""
    await person(system, email, role, agencies)
    async with browser(system, language) as client:
        answer = await sign_in(client, email)
        assert answer.status_code == 303, answer.text
        yield client
