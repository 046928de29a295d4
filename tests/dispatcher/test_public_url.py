"""Behind a TLS proxy: with an https ``RELAYBOOK_PUBLIC_URL`` the console's cookies are
always ``Secure`` and every answer of the dispatcher carries HSTS; with http, neither.
``X-Forwarded-*`` is believed from the proxies ``RELAYBOOK_FORWARDED_ALLOW_IPS`` names
only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from relaybook.tooling.system import System
from tests.console.console_support import PASSWORD, browser, csrf_of, person

HSTS = "max-age=31536000; includeSubDomains"
HTTPS = {"only": {"dispatcher"}, "public_url": "https://relaybook.example.org"}
HTTP = {"only": {"dispatcher"}, "public_url": "http://relaybook.example.org"}


async def _sign_in(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
    """The sign-in form and the answer to posting it, as a browser at the proxy's https
    address does: it sends the form's cookie back even when ``Secure`` (httpx, talking
    http to 127.0.0.1, would not)."""
    form = await client.get("/ui/login")
    token = _cookies(form)["rb_login"].split(";")[0].split("=", 1)[1]
    signed = await client.post(
        "/ui/login",
        data={"csrf": csrf_of(form), "email": "jane@example.org", "password": PASSWORD},
        headers={"Cookie": f"rb_login={token}"},
    )
    return form, signed


def _cookies(answer: httpx.Response) -> dict[str, str]:
    """The cookies an answer sets, by name: their whole Set-Cookie lines."""
    return {
        line.split("=", 1)[0]: line
        for name, line in answer.headers.multi_items()
        if name == "set-cookie"
    }


@pytest.mark.parametrize("system_options", [HTTPS, HTTP], ids=["https", "http"])
async def test_an_https_public_url_makes_every_cookie_secure_and_sends_hsts(
    system: System, system_options: dict[str, Any]
) -> None:
    """The proxy speaks plain http to relaybook and says nothing of the scheme: the
    public URL alone decides."""
    https = system_options["public_url"].startswith("https:")
    await person(system, "jane@example.org", "manager", ["a"])
    async with browser(system) as client:
        form, signed = await _sign_in(client)
        assert signed.status_code == 303
        assert ("; secure" in _cookies(signed)["rb_session"].lower()) == https
        assert ("; secure" in _cookies(form)["rb_login"].lower()) == https
        answers = [
            form,
            signed,
            await client.get("/ui/notices"),
            await client.get("/healthz"),
            await client.get("/v1/notices"),  # 401: no token
            await client.get("/nowhere"),  # 404
        ]
    for answer in answers:
        assert answer.headers.get("strict-transport-security") == (HSTS if https else None)


@pytest.mark.parametrize(
    ("system_options", "secure"),
    [
        ({"only": {"dispatcher"}}, True),
        ({"only": {"dispatcher"}, "forwarded_allow_ips": ("192.0.2.7",)}, False),
    ],
    ids=["trusted", "not-trusted"],
)
async def test_only_a_trusted_proxy_may_say_the_browser_came_over_https(
    system: System, secure: bool
) -> None:
    """By default the proxy on this host (127.0.0.1) is trusted: its
    ``X-Forwarded-Proto: https`` makes the session cookie ``Secure``. Trusting only
    another address, the same header from here is ignored."""
    await person(system, "jane@example.org", "manager", ["a"])
    async with browser(system) as client:
        client.headers["X-Forwarded-Proto"] = "https"
        _form, signed = await _sign_in(client)
    assert signed.status_code == 303
    assert ("; secure" in _cookies(signed)["rb_session"].lower()) == secure
    assert "strict-transport-security" not in signed.headers
