"""The README's pictures of the console (``make screenshots``): a real ``relaybook up``
started as the browser tests start it (``tests/browser/harness.py``), fed the demo's
co-ownership (``demo/owners.py``: 120 owners, some whose mail bounces or whose numbers
fail) with three notices, so the bounce policy has unsubscribed some; then Debian's
Chromium signs in as a manager of the agency and photographs the main pages into
``docs/``. Run from the repository's root: ``.venv/bin/python -m docs.screenshots``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from playwright.async_api import Page

from demo import owners as sample
from tests.browser import harness

DOCS = Path(__file__).resolve().parent
AGENCY, PROPERTY = "syndic-tilleuls", "residence-les-tilleuls"
MANAGER = "manager@tilleuls.example.org"
NOTICES = (
    ("Deposit call Q4 2026", "accounting", "deposit_call", "DC-2026-Q4"),
    ("General assembly 2027", "syndic", "convocation", "AGM-2027"),
    ("Lift replacement", "syndic", "works", "WORKS-LIFT-2027"),
)


def notice(title: str, service: str, kind: str, reference: str) -> dict[str, Any]:
    return {
        "source": {"service": service, "kind": kind, "reference": reference},
        "title": title,
        "agency": AGENCY,
        "property": PROPERTY,
        "email": {"subject": title, "text": f"{title}: https://portal.tilleuls.example.org/"},
        "sms": {"text": f"Résidence Les Tilleuls: {title}. Details on the owners' portal."},
        "recipients": [owner | {"properties": [PROPERTY]} for owner in sample.owners()],
        "send": True,
    }


async def seed(up: harness.Up) -> str:
    """The agency's three notices, each settled; the first one's id."""
    await up.person(MANAGER, "manager", [AGENCY])
    first = ""
    async with up.api_client() as api:
        for title, service, kind, reference in NOTICES:
            notice_id = await harness.publish(api, notice(title, service, kind, reference))
            await harness.settle(api, notice_id, within=60)
            first = first or notice_id
        draft = notice("Water shut-off, building B", "syndic", "announcement", "WATER-2027-02")
        await harness.publish(api, draft | {"send": False})
    return first


async def photograph(page: Page, name: str) -> None:
    path = DOCS / f"console-{name}.png"
    await page.screenshot(path=path, animations="disabled", caret="hide")
    sys.stdout.write(f"wrote {path.relative_to(DOCS.parent)}\n")


async def main() -> int:
    if not harness.CHROMIUM.exists():
        sys.stderr.write(f"screenshots: {harness.NO_CHROMIUM}\n")
        return 2
    async with harness.running() as up:
        deposit_call = await seed(up)
        async with harness.chromium() as browser:
            context = await browser.new_context(
                base_url=up.api,
                locale="en-GB",
                timezone_id="Europe/Paris",
                viewport={"width": 1440, "height": 900},
            )
            page = await context.new_page()
            await harness.sign_in(page, up.api, MANAGER)
            await page.goto("/ui/notices")
            await photograph(page, "notices")
            await page.goto(f"/ui/notices/{deposit_call}")
            await page.get_by_role("checkbox", name=sample.name(4)).check()
            await page.get_by_role("button", name="Resend failures").click()
            await page.get_by_role("dialog").get_by_role("radio").first.wait_for()
            await page.evaluate("window.scrollTo(0, 0)")  # the funnel behind the dialog
            await photograph(page, "notice")
            await page.goto(f"/ui/journal?source_reference={NOTICES[0][3]}")
            await photograph(page, "journal")
            await page.goto(f"/ui/preferences?property={PROPERTY}")
            await photograph(page, "preferences")
            await context.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
