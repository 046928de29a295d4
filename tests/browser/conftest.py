"""One ``relaybook up`` and one Chromium per module of browser tests: the system starts
once and is fed a small agency (a partially failed notice, a second one to resend, a
spam complaint: the owner's own opt-out, a manager's "no") and another agency's notice;
each test gets fresh browser contexts, signed in as the people it asks for."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page

from tests.browser import harness

AGENCY, PROPERTY = "syndic-tilleuls", "residence-les-tilleuls"
OTHER_AGENCY, OTHER_PROPERTY = "syndic-bellevue", "residence-bellevue"
MANAGER = "manager@tilleuls.example.org"
VIEWER = "viewer@tilleuls.example.org"
SUPPORT = "support@relaybook.example.org"
OTHER_MANAGER = "manager@bellevue.example.org"


@dataclasses.dataclass(frozen=True)
class Owner:
    id: str
    name: str
    email: str | None
    phone: str | None

    def recipient(self) -> dict[str, Any]:
        found: dict[str, Any] = {"id": self.id, "name": self.name, "properties": [PROPERTY]}
        found |= {"email": self.email} if self.email else {}
        return found | ({"phone": self.phone} if self.phone else {})


#: the co-ownership's owners: how the sandbox treats each address is in its name
OWNERS = [
    Owner("owner-001", "Anne Martin", "owner001@bounce.sandbox.test", "+33610000001"),
    Owner("owner-002", "Bruno Bernard", "owner002@full.sandbox.test", "+33610000002"),
    Owner("owner-003", "Claire Dubois", "owner003@tilleuls.example.org", "+33610003003"),
    Owner("owner-004", "David Thomas", "owner004@blocked.sandbox.test", "+33610043007"),
    Owner("owner-005", "Elise Robert", "owner005@spam.sandbox.test", "+33610000005"),
    Owner("owner-006", "Farid Richard", "owner006@tilleuls.example.org", None),
    Owner("owner-007", "Gaëlle Petit", None, "+33610000007"),
    Owner("owner-008", "Hugo Durand", "owner008@tilleuls.example.org", "+33610000008"),
    Owner("owner-009", "Inès Leroy", "owner009@tilleuls.example.org", "+33610000009"),
    Owner("owner-010", "Jules Moreau", "owner010@tilleuls.example.org", "+33610000010"),
]
BY_ID = {owner.id: owner for owner in OWNERS}
#: the owner who marked a notice as spam: their own opt-out, which only they lift
COMPLAINER = BY_ID["owner-005"]
#: an owner with both channels fine, whose preferences a manager changes
CHANGED = BY_ID["owner-009"]
#: an owner whose mailbox is full (a soft bounce: a resend is worth it)
FULL = BY_ID["owner-002"]
#: an owner whose email failed, who then asked for no more emails: a resend leaves it out
LEFT_OUT = BY_ID["owner-004"]


def notice_body(title: str, kind: str, reference: str) -> dict[str, Any]:
    return {
        "source": {"service": "syndic", "kind": kind, "reference": reference},
        "title": title,
        "agency": AGENCY,
        "property": PROPERTY,
        "email": {"subject": title, "text": f"{title}: https://portal.tilleuls.example.org/"},
        "sms": {"text": f"Résidence Les Tilleuls: {title}."},
        "recipients": [owner.recipient() for owner in OWNERS],
        "send": True,
    }


@dataclasses.dataclass(frozen=True)
class World:
    """What the tests find in the running system."""

    up: harness.Up
    #: the deposit call: partially failed (tests read it, and add a late open)
    deposit_call: str
    #: the general assembly: partially failed too (a test resends its failures)
    assembly: str
    #: a draft of the other agency
    theirs: str
    #: the cookies of each person signed in so far, by (email, locale)
    sessions: dict[tuple[str, str], Any] = dataclasses.field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.up.api

    def api(self) -> httpx.AsyncClient:
        return self.up.api_client()


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    async with harness.running(
        # every delivered email stays "delivered" until a test posts its open
        RELAYBOOK_SANDBOX_OPEN_RATE="0",
        RELAYBOOK_SANDBOX_CLICK_RATE="0",
        RELAYBOOK_SANDBOX_MACHINE_OPEN_RATE="0",
        RELAYBOOK_SANDBOX_ASYNC_BOUNCE_RATE="0",
    ) as up:
        for email, role, agencies in (
            (MANAGER, "manager", [AGENCY]),
            (VIEWER, "viewer", [AGENCY]),
            (SUPPORT, "support", None),
            (OTHER_MANAGER, "manager", [OTHER_AGENCY]),
        ):
            await up.person(email, role, agencies)
        async with up.api_client() as api:
            deposit_call = await harness.publish(
                api, notice_body("Deposit call Q4 2026", "deposit_call", "DC-2026-Q4")
            )
            await harness.settle(api, deposit_call)
            await harness.until(
                api,
                f"/v1/recipients/{COMPLAINER.id}/preferences?agency={AGENCY}",
                lambda answer: answer["email"]["wants"] == "no",
            )
            opted_out = await api.put(
                f"/v1/recipients/{LEFT_OUT.id}/preferences",
                params={"agency": AGENCY},
                json={"email": "no", "reason": "Wants letters only"},
            )
            assert opted_out.status_code == 200, opted_out.text
            assembly = await harness.publish(
                api, notice_body("General assembly 2027", "convocation", "AGM-2027")
            )
            await harness.settle(api, assembly)
            other = notice_body("Lift maintenance, Résidence Bellevue", "works", "BV-LIFT")
            other |= {
                "agency": OTHER_AGENCY,
                "property": OTHER_PROPERTY,
                "recipients": [
                    owner.recipient() | {"properties": [OTHER_PROPERTY]} for owner in OWNERS[7:]
                ],
                "send": False,
            }
            theirs = await harness.publish(api, other)
        yield World(up, deposit_call, assembly, theirs)


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with harness.chromium() as browser:
        yield browser


#: a page of a new browser context, signed in as that person (None: not signed in)
OpenPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def open_page(world: World, chromium: Browser) -> AsyncIterator[OpenPage]:
    """``await open_page(email=None, locale="en-GB")``: a new browser context (its own
    cookies, ``Accept-Language`` from ``locale``), signed in as ``email``. Sign-ins are
    done once per person and language, then their cookies reused.

    Whatever the pages do, the browser must report no script error and no breach of the
    Content-Security-Policy (an inline script or style would be one)."""
    contexts = []
    problems: list[str] = []

    async def open_page(email: str | None = None, locale: str = "en-GB") -> Page:
        state = world.sessions.get((email, locale)) if email else None
        context = await chromium.new_context(
            base_url=world.base,
            locale=locale,
            timezone_id="Europe/Paris",
            storage_state=state,
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on(
            "console",
            lambda message: (
                problems.append(f"console: {message.text}")
                if message.type == "error" and not message.text.startswith(_HTTP_ERROR)
                else None
            ),
        )
        if email and state is None:
            await harness.sign_in(page, world.base, email)
            world.sessions[(email, locale)] = await context.storage_state()
        return page

    yield open_page
    for context in contexts:
        await context.close()
    assert not problems, problems


#: how Chromium logs an answer of 4xx or 5xx (the 404 page is one on purpose)
_HTTP_ERROR = "Failed to load resource: the server responded with a status of"
