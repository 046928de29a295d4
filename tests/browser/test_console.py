"""The console in a real browser (Debian's Chromium, driven by Playwright) against a real
``relaybook up``: what a property manager, a viewer and support see and do, found by the
accessible names of the contract (``get_by_role``, ``get_by_label``), in English and in
French."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Locator, Page, expect

from tests.browser import harness
from tests.browser.conftest import (
    AGENCY,
    BY_ID,
    CHANGED,
    COMPLAINER,
    FULL,
    LEFT_OUT,
    MANAGER,
    OTHER_MANAGER,
    PROPERTY,
    SUPPORT,
    VIEWER,
    OpenPage,
    World,
)

pytestmark = pytest.mark.skipif(not harness.CHROMIUM.exists(), reason=harness.NO_CHROMIUM)

SCOPES = {
    "failed": "Failed only",
    "undelivered": "All undelivered",
    "selected": "Selected recipients",
}
FRENCH_SCOPES = {
    "failed": "Échecs uniquement",
    "undelivered": "Tous les non-livrés",
    "selected": "Destinataires sélectionnés",
}


def scope(page: Page, label: str) -> Locator:
    """A scope's radio in the resend dialog, whatever its count says."""
    return page.get_by_role("dialog").get_by_role("radio", name=re.compile(f"^{label}"))


def counted(label: str, recipients: int) -> re.Pattern[str]:
    """A scope's accessible name: its label, then its recipient count."""
    return re.compile(rf"^{label}\b.*(?<!\d){recipients}(?!\d)")


async def options(world: World, notice_id: str, ticked: str = "") -> dict[str, Any]:
    """What the API counts for each scope (what the dialog must show)."""
    async with world.api() as api:
        params = {"recipient_ids": ticked} if ticked else {}
        answer = await api.get(f"/v1/notices/{notice_id}/resend-options", params=params)
    assert answer.status_code == 200, answer.text
    counts: dict[str, Any] = answer.json()
    return counts


# --- signing in ---------------------------------------------------------------------------


async def test_a_wrong_password_is_refused_and_the_right_one_opens_the_notices(
    world: World, open_page: OpenPage
) -> None:
    page = await open_page()
    await harness.sign_in(page, world.base, VIEWER, "not the password at all")
    await expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    assert page.url.startswith(f"{world.base}/ui/login")

    await harness.sign_in(page, world.base, VIEWER)
    assert page.url == f"{world.base}/ui/notices"
    await expect(page.get_by_role("heading", level=1)).to_have_text("Notices")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def test_signing_out_ends_the_session(world: World, open_page: OpenPage) -> None:
    page = await open_page()  # a session of its own: the other tests' stays open
    await harness.sign_in(page, world.base, MANAGER)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("Password")).to_be_visible()
    await page.goto("/ui/notices")
    assert re.match(rf"{re.escape(world.base)}/ui/login\?next=", page.url)


# --- notices ------------------------------------------------------------------------------


async def test_the_notices_list_shows_the_agencys_notices_only(
    world: World, open_page: OpenPage
) -> None:
    page = await open_page(MANAGER)
    await page.goto("/ui/notices")
    deposit_call = page.get_by_role("row").filter(
        has=page.get_by_role("link", name="Deposit call Q4 2026")
    )
    await expect(deposit_call).to_contain_text("partially failed")
    await expect(deposit_call).to_contain_text(PROPERTY)
    await expect(deposit_call).to_contain_text("DC-2026-Q4")
    await expect(page.get_by_role("link", name="General assembly 2027")).to_be_visible()
    await expect(page.get_by_text("Lift maintenance, Résidence Bellevue")).to_have_count(0)

    await page.get_by_role("link", name="Deposit call Q4 2026").click()
    await expect(page).to_have_url(f"{world.base}/ui/notices/{world.deposit_call}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Deposit call Q4 2026")


async def test_a_partially_failed_notice_shows_its_funnel_its_failures_and_why(
    world: World, open_page: OpenPage
) -> None:
    page = await open_page(MANAGER)
    await page.goto(f"/ui/notices/{world.deposit_call}")
    async with world.api() as api:
        stats = (await api.get(f"/v1/notices/{world.deposit_call}")).json()["stats"]
    for channel, name in (("email", "Email"), ("sms", "SMS")):
        for field in ("Sent", "Delivered", "Failed", "Skipped"):
            await expect(stat(page, name, field)).to_have_text(str(stats[channel][field.lower()]))
    # a failed row says why, with the provider's code; every row has its checkbox
    bounced = page.get_by_role("row").filter(has=page.get_by_role("checkbox", name="Anne Martin"))
    await expect(bounced).to_contain_text("failed")
    await expect(bounced).to_contain_text("5.1.1")
    await expect(bounced).to_contain_text("does not exist")
    unreachable = page.get_by_role("row").filter(
        has=page.get_by_role("checkbox", name="Claire Dubois")
    )
    await expect(unreachable).to_contain_text("30003")
    for owner in BY_ID.values():
        await expect(page.get_by_role("checkbox", name=owner.name)).to_have_count(1)
    await expect(page.get_by_role("button", name="Resend failures")).to_be_visible()
    await expect(page.get_by_role("heading", name="Resend history")).to_be_visible()


def stat(page: Page, channel: str, field: str) -> Locator:
    """One figure of a channel's statistics (``Email`` / ``Sent``)."""
    return (
        page.get_by_role("region", name=channel)
        .get_by_role("listitem")
        .filter(has_text=re.compile(rf"\b{field}\b"))
        .locator("strong")
    )


async def test_the_dialog_counts_each_scope_and_selected_waits_for_a_ticked_box(
    world: World, open_page: OpenPage
) -> None:
    expected = await options(world, world.deposit_call)
    page = await open_page(MANAGER)
    await page.goto(f"/ui/notices/{world.deposit_call}")
    await page.get_by_role("button", name="Resend failures").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    for key in ("failed", "undelivered"):
        await expect(scope(page, SCOPES[key])).to_have_accessible_name(
            counted(SCOPES[key], expected[key]["recipients"])
        )
    await expect(scope(page, SCOPES["failed"])).to_be_checked()
    await expect(scope(page, SCOPES["selected"])).to_be_disabled()
    # who a scope leaves out, and why
    assert expected["failed"]["excluded"] == {"recipients": 1, "email": 1, "sms": 0}
    await expect(dialog).to_contain_text(re.compile(rf"{LEFT_OUT.name}\W+Email\W+Unsubscribed"))
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()

    await page.get_by_role("checkbox", name=FULL.name).check()
    await page.get_by_role("checkbox", name=LEFT_OUT.name).check()
    ticked = await options(world, world.deposit_call, f"{FULL.id},{LEFT_OUT.id}")
    assert ticked["selected"]["recipients"] == 2
    await page.get_by_role("button", name="Resend failures").click()
    await expect(scope(page, SCOPES["selected"])).to_be_enabled()
    await expect(scope(page, SCOPES["selected"])).to_have_accessible_name(
        counted(SCOPES["selected"], 2)
    )
    await scope(page, SCOPES["selected"]).check()
    emails, texts = ticked["selected"]["email"], ticked["selected"]["sms"]
    await expect(dialog).to_contain_text(re.compile(rf"{emails} emails? and {texts} texts?\b"))


async def test_a_resend_says_how_many_emails_and_texts_and_joins_the_history(
    world: World, open_page: OpenPage
) -> None:
    expected = (await options(world, world.assembly))["failed"]
    assert expected["recipients"] > 0
    page = await open_page(MANAGER)
    await page.goto(f"/ui/notices/{world.assembly}")
    history = page.get_by_role("region", name="Resend history")
    await expect(history.get_by_role("row")).to_have_count(0)

    await page.get_by_role("button", name="Resend failures").click()
    await scope(page, SCOPES["failed"]).check()
    await page.get_by_role("dialog").get_by_role("button", name="Resend", exact=True).click()

    told = page.get_by_text(re.compile(r"^Resent to "))
    await expect(told).to_contain_text(f"{expected['recipients']} recipient")
    await expect(told).to_contain_text(f"{expected['email']} email")
    await expect(told).to_contain_text(f"{expected['sms']} text")
    rows = history.get_by_role("row")
    await expect(rows).to_have_count(2)  # the header, and this resend
    await expect(rows.nth(1)).to_contain_text(str(expected["recipients"]))
    async with world.api() as api:
        resends = (await api.get(f"/v1/notices/{world.assembly}/resends")).json()["items"]
    assert [(r["scope"], r["email"], r["sms"]) for r in resends] == [
        ("failed", expected["email"], expected["sms"])
    ]


async def test_a_webhook_updates_the_open_page_without_a_reload(
    world: World, open_page: OpenPage
) -> None:
    owner = BY_ID["owner-003"]  # email delivered, never opened (the sandbox opens none)
    page = await open_page(MANAGER)
    await page.goto(f"/ui/notices/{world.deposit_call}")
    opened = stat(page, "Email", "Opened")
    before = int(await opened.inner_text())
    row = page.get_by_role("row").filter(has=page.get_by_role("checkbox", name=owner.name))
    await expect(row).not_to_contain_text("opened")
    await page.get_by_role("checkbox", name="Jules Moreau").check()  # what the person did
    await page.evaluate("window.stillTheSamePage = true")

    async with world.api() as api:
        journal = await api.get(
            "/v1/journal",
            params={"notice_id": world.deposit_call, "recipient_id": owner.id, "channel": "email"},
        )
    delivery = journal.json()["items"][0]
    assert delivery["status"] == "delivered"
    assert owner.email
    await world.up.sendgrid_event(
        "open", delivery["delivery_id"], owner.email, sg_machine_open=False, useragent="Mozilla/5.0"
    )

    await expect(opened).to_have_text(str(before + 1), timeout=15_000)
    await expect(row).to_contain_text("opened")
    assert await page.evaluate("window.stillTheSamePage === true"), "the page was reloaded"
    await expect(page.get_by_role("checkbox", name="Jules Moreau")).to_be_checked()


async def test_a_viewer_reads_a_notice_but_is_not_offered_a_resend(
    world: World, open_page: OpenPage
) -> None:
    page = await open_page(VIEWER)
    await page.goto(f"/ui/notices/{world.deposit_call}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Deposit call Q4 2026")
    await expect(page.get_by_role("button", name="Resend failures")).to_have_count(0)


async def test_another_agencys_notice_is_the_not_found_page(
    world: World, open_page: OpenPage
) -> None:
    page = await open_page(MANAGER)
    theirs = await page.goto(f"/ui/notices/{world.theirs}")
    assert theirs is not None
    assert theirs.status == 404
    heading = await page.get_by_role("heading", level=1).inner_text()
    nowhere = await page.goto("/ui/notices/0190b7a4-0000-7000-8000-000000000000")
    assert nowhere is not None
    assert nowhere.status == 404
    # exactly what a notice that never existed answers: nothing says it is someone's
    await expect(page.get_by_role("heading", level=1)).to_have_text(heading)

    page = await open_page(OTHER_MANAGER)  # and the other way round
    ours = await page.goto(f"/ui/notices/{world.deposit_call}")
    assert ours is not None
    assert ours.status == 404
    await page.goto("/ui/notices")
    await expect(
        page.get_by_role("link", name="Lift maintenance, Résidence Bellevue")
    ).to_be_visible()
    await expect(page.get_by_role("link", name="Deposit call Q4 2026")).to_have_count(0)


# --- the journal and the unreachable owners -------------------------------------------------


async def test_the_journal_of_a_source_leads_to_a_messages_timeline(
    world: World, open_page: OpenPage
) -> None:
    page = await open_page(MANAGER)
    await page.goto("/ui/journal")
    await page.get_by_label("Reference").fill("DC-2026-Q4")
    await page.get_by_label("Status").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    messages = page.get_by_role("table", name="Messages")
    bounced = messages.get_by_role("row").filter(has_text="Anne Martin")
    await expect(bounced).to_contain_text("550 5.1.1")
    await expect(messages.get_by_role("row").filter(has_text="Hugo Durand")).to_have_count(0)
    await bounced.get_by_role("rowheader").get_by_role("link").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Message to Anne Martin")
    timeline = page.get_by_role("table", name="Timeline")
    await expect(timeline).to_contain_text("5.1.1")


async def test_owners_reached_on_no_channel_are_listed_for_the_post(
    world: World, open_page: OpenPage
) -> None:
    page = await open_page(MANAGER)
    await page.goto(f"/ui/unreachable?notice_id={world.deposit_call}")
    unreachable = page.get_by_role("table", name="Unreachable owners")
    await expect(unreachable.get_by_role("row").filter(has_text=LEFT_OUT.name)).to_have_count(1)
    await expect(unreachable.get_by_role("row").filter(has_text="Hugo Durand")).to_have_count(0)
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Export CSV").click()
    saved = Path(await (await download.value).path())
    exported = await asyncio.to_thread(saved.read_text, encoding="utf-8-sig")
    assert LEFT_OUT.id in exported
    assert "owner-008" not in exported


# --- preferences --------------------------------------------------------------------------


async def preferences(world: World, owner_id: str) -> dict[str, Any]:
    async with world.api() as api:
        answer = await api.get(f"/v1/recipients/{owner_id}/preferences", params={"agency": AGENCY})
    found: dict[str, Any] = answer.json()
    return found


def preference_row(page: Page, channel: str) -> Locator:
    """A channel's row in an owner's preferences: what they want, who changed it, why."""
    table = page.get_by_role("table", name="Communication preferences")
    return table.get_by_role("row", name=re.compile(f"^{channel}"))


async def test_a_manager_changes_an_owners_preferences(world: World, open_page: OpenPage) -> None:
    page = await open_page(MANAGER)
    await page.goto(f"/ui/preferences?property={PROPERTY}")
    await page.get_by_role("link", name=CHANGED.name).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(CHANGED.name)
    form = page.get_by_role("form", name="Change the preferences")
    await form.get_by_role("group", name="SMS").get_by_role("radio", name="No").check()
    await form.get_by_label(re.compile("^Reason")).fill("Asked by letter of 3 March")
    await form.get_by_role("button", name="Save").click()

    sms = preference_row(page, "SMS")
    await expect(sms).to_contain_text("No")
    await expect(sms).to_contain_text("Asked by letter of 3 March")
    saved = await preferences(world, CHANGED.id)
    assert (saved["sms"]["wants"], saved["sms"]["reason"]) == ("no", "Asked by letter of 3 March")
    assert saved["email"]["wants"] == "yes"


async def test_an_owners_complaint_is_theirs_and_the_page_says_so_to_manager_and_support(
    world: World, open_page: OpenPage
) -> None:
    """Issue 33: nobody but the owner brings back what the owner turned off. (Support
    bringing back an automatic unsubscribe: tests/dispatcher/test_console_preferences.py.)"""
    for person in (MANAGER, SUPPORT):
        page = await open_page(person)
        await page.goto(
            f"/ui/preferences/owners/{COMPLAINER.id}?agency={AGENCY}&property={PROPERTY}"
        )
        email = preference_row(page, "Email")
        await expect(email).to_contain_text("The owner")
        await expect(email).to_contain_text("marked as spam")
        form = page.get_by_role("form", name="Change the preferences")
        group = form.get_by_role("group", name="Email")
        await expect(group).to_contain_text("only the owner can bring it back")
        await group.get_by_role("radio", name="Yes").check()
        await form.get_by_label(re.compile("^Reason")).fill("The owner called")
        await form.get_by_role("button", name="Save").click()
        await expect(page.get_by_role("alert")).to_contain_text(
            "only the owner can bring it back, by replying START"
        )
        after = (await preferences(world, COMPLAINER.id))["email"]
        assert (after["wants"], after["changed_by"]) == ("no", "owner")


# --- languages and the keyboard -------------------------------------------------------------


async def test_the_console_speaks_french_and_switches_to_english(
    world: World, open_page: OpenPage
) -> None:
    page = await open_page(locale="fr-FR")
    await page.goto("/ui/login")
    await expect(page.get_by_label("E-mail", exact=True)).to_be_visible()
    await expect(page.get_by_label("Mot de passe")).to_be_visible()
    await harness.sign_in(page, world.base, MANAGER)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Avis")

    await page.goto(f"/ui/notices/{world.deposit_call}")
    await page.get_by_role("button", name="Renvoyer les échecs").click()
    for label in FRENCH_SCOPES.values():
        await expect(scope(page, label)).to_be_visible()
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_role("button", name="Renvoyer", exact=True)).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("heading", name="Historique des renvois")).to_be_visible()

    await page.get_by_role("link", name="English").click()
    await expect(page.get_by_role("button", name="Resend failures")).to_be_visible()
    await expect(page.get_by_role("heading", name="Resend history")).to_be_visible()


async def test_the_resend_dialog_works_with_the_keyboard_alone(
    world: World, open_page: OpenPage
) -> None:
    page = await open_page(MANAGER)
    await page.goto(f"/ui/notices/{world.deposit_call}")
    opener = page.get_by_role("button", name="Resend failures")
    for _ in range(60):
        await page.keyboard.press("Tab")
        if await opener.evaluate("button => button === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reaches the Resend failures button")
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await expect(scope(page, SCOPES["failed"])).to_have_accessible_name(re.compile(r"\d"))

    inside = "dialog => dialog.contains(document.activeElement)"
    assert await dialog.evaluate(inside), "the dialog opens with the focus inside"
    visited = set()
    for _ in range(12):
        await page.keyboard.press("Tab")
        where = await page.evaluate(
            "() => document.activeElement === document.body ? 'body'"
            " : document.activeElement.outerHTML.slice(0, 80)"
        )
        # past the dialog's last control focus may leave the page for the browser's own
        # controls (the body), never for the page behind the dialog
        assert where == "body" or await dialog.evaluate(inside), f"focus left the dialog: {where}"
        visited.add(where)
    assert len(visited) >= 3, visited  # it moved through the dialog's controls

    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(opener).to_be_focused()
