"""The console's "Copropriété > Préférences de communication": a property's owners (even
those never sent anything) with email / SMS yes / no / not applicable and who changed it,
when and why; a manager's change through the API's store, audited; an automatic
unsubscribe shown with its evidence, which only support may reverse; read-only for a
viewer; another agency's owner or property is the 404 page; French; bad filters are 400."""

from __future__ import annotations

import datetime as dt
import html
import itertools
import re
from typing import Any

import httpx
import pytest

from relaybook.platform.kafka import Record
from relaybook.reachability.decisions import BouncePolicy
from relaybook.reachability.policy import Policy
from relaybook.tooling.system import System
from tests.console.console_support import csrf_of, signed_in
from tests.support import delivery_event, notice, shown

A, B = "agency-a", "agency-b"
OWNER_1 = f"/ui/preferences/owners/owner-1?agency={A}"
_events = itertools.count()


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {"only": {"dispatcher"}}


@pytest.fixture
async def owners(api: httpx.AsyncClient) -> None:
    """Agencies A and B each with a residence of three owners who were never sent anything
    (a draft); A's owner-2 has no phone."""
    for agency in (A, B):
        body = notice(3, agency=agency, property=f"{agency}-residence", send=False)
        for person in body["recipients"]:
            person["properties"] = [f"{agency}-residence"]
        if agency == A:
            del body["recipients"][2]["phone"]
        created = await api.post("/v1/notices", json=body)
        assert created.status_code == 201, created.text


async def _owner_texts_stop(system: System, number: str) -> None:
    """The owner replies STOP, as the bounce policy hears it."""
    assert system.infra is not None
    policy = BouncePolicy(system.infra.pool, Policy.from_settings(system.settings))
    await policy.handle([delivery_event("opted_out", number, reason="replied STOP")])


async def _bounce_three_times(system: System, address: str) -> None:
    """What the bounce policy does after three hard bounces of an address (the real
    policy, on the system's database)."""
    assert system.infra is not None
    policy = BouncePolicy(system.infra.pool, Policy.from_settings(system.settings))
    now = dt.datetime.now(dt.UTC).isoformat()
    records = [
        Record(
            "delivery-events",
            0,
            0,
            None,
            {
                "schema": "delivery-event/v1",
                "event_id": f"console-test:{next(_events)}",
                "type": "bounced",
                "channel": "email",
                "provider": "sendgrid",
                "occurred_at": now,
                "received_at": now,
                "address": address,
                "provider_code": "5.1.1",
                "bounce_type": "bounce",
                "bounce_classification": "invalid address",
            },
        )
        for _ in range(3)
    ]
    await policy.handle(records)


def _text(page: httpx.Response) -> str:
    """The page's text, tags removed and spaces folded (what a person reads)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.text)).split())


def _row(page: httpx.Response, owner: str) -> str:
    """The text of the overview's row of ``owner`` (by name)."""
    rows = re.findall(r"<tr>(.*?)</tr>", page.text, re.DOTALL)
    found = [row for row in rows if f">{owner}</a>" in row]
    assert len(found) == 1, f"no single row for {owner}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found[0])).split())


async def test_the_property_overview_lists_its_owners_even_those_never_sent_anything(
    system: System, owners: None
) -> None:
    async with signed_in(system, "manager@a.example", "manager", [A]) as client:
        listing = await client.get("/ui/preferences")
        assert listing.status_code == 200
        assert f'href="/ui/preferences?agency={A}&amp;property={A}-residence"' in listing.text
        assert f"{B}-residence" not in listing.text, "never another agency's property"

        page = await client.get(
            "/ui/preferences", params={"agency": A, "property": f"{A}-residence"}
        )
        assert page.status_code == 200, page.text
        assert "<h1>Communication preferences</h1>" in page.text
        for name in ("Owner 0", "Owner 1", "Owner 2"):
            assert f">{name}</a>" in page.text
        assert _row(page, "Owner 0").count("Yes") == 2
        assert "Nobody (default)" in _row(page, "Owner 0")
        assert "Not applicable" in _row(page, "Owner 2"), "no phone: SMS does not apply"
        assert f'href="/ui/preferences/owners/owner-1?agency={A}&amp;property={A}-residence"' in (
            page.text
        )
        assert "owner1@example.org" not in page.text, "the overview shows no address"


async def test_a_manager_changes_an_owners_email_preference_and_it_shows_who_when_why(
    system: System, owners: None
) -> None:
    assert system.infra is not None
    async with signed_in(system, "manager@a.example", "manager", [A]) as client:
        page = await client.get(OWNER_1)
        assert page.status_code == 200, page.text
        for field in ("email-yes", "email-no", "sms-yes", "sms-no", "reason"):
            assert f'<label for="{field}">' in page.text
        token = csrf_of(page)

        no_reason = await client.post(OWNER_1, data={"csrf": token, "email": "no", "sms": "yes"})
        assert no_reason.status_code == 400
        assert "Say why you change these preferences" in no_reason.text

        saved = await client.post(
            OWNER_1,
            data={"csrf": token, "email": "no", "sms": "yes", "reason": "moved abroad, by post"},
        )
        assert saved.status_code == 303
        assert saved.headers["location"] == f"{OWNER_1}&done=saved"
        after = await client.get(saved.headers["location"])
        assert "The preferences were saved." in after.text
        email_row = _text(after).split("Email", 1)[1]
        assert email_row.startswith(" No A manager manager@a.example")
        assert "moved abroad, by post" in after.text
        assert "Preference changed" in after.text, "the history shows the change"
        assert str(dt.datetime.now(dt.UTC).year) in email_row, "and when"

        again = await client.post(
            OWNER_1, data={"csrf": token, "email": "no", "sms": "yes", "reason": "again"}
        )
        assert again.headers["location"] == f"{OWNER_1}&done=unchanged"

        filtered = await client.get("/ui/preferences", params={"agency": A, "wants_email": "no"})
        assert ">Owner 1</a>" in filtered.text
        assert ">Owner 0</a>" not in filtered.text
    audited = await system.infra.pool.fetch(
        "SELECT actor, action, reason, agency_id FROM audit_log ORDER BY id"
    )
    assert [tuple(row.values()) for row in audited] == [
        ("manager@a.example", "preference_changed", "moved abroad, by post", A)
    ]
    of_b = await system.infra.pool.fetchval(
        "SELECT email_wants FROM recipients WHERE agency_id = $1 AND id = 'owner-1'", B
    )
    assert of_b == "yes", "the same id in another agency is another owner"


async def test_only_support_reverses_an_automatic_unsubscribe_and_it_is_audited(
    system: System, owners: None
) -> None:
    assert system.infra is not None
    await _bounce_three_times(system, "owner1@example.org")
    async with signed_in(system, "manager@a.example", "manager", [A]) as manager:
        overview = await manager.get("/ui/preferences", params={"property": f"{A}-residence"})
        row = _row(overview, "Owner 1")
        assert "No Unsubscribed automatically Automatic (bounce policy) · bounce-policy" in row
        assert "3 hard failures in 30 days" in row
        assert "Evidence (3)" in row
        assert "Hard failure 5.1.1" in row

        page = await manager.get(OWNER_1)
        assert "Contact support to change this" in page.text
        assert 'aria-describedby="email-note"' in page.text
        refused = await manager.post(
            OWNER_1,
            data={"csrf": csrf_of(page), "email": "yes", "sms": "yes", "reason": "they called"},
        )
        assert refused.status_code == 403
        assert "Only support can bring back" in refused.text
        assert 'role="alert"' in refused.text
    assert (await shown(system.infra.pool, "owner-1", "email", A))[0] == "no"

    async with signed_in(system, "desk@platform.example", "support", None) as support:
        page = await support.get(OWNER_1)
        assert "Setting Yes reverses the automatic unsubscribe" in page.text
        reason = "the owner called: new mailbox (ticket 12)"
        done = await support.post(
            OWNER_1, data={"csrf": csrf_of(page), "email": "yes", "sms": "yes", "reason": reason}
        )
        assert done.status_code == 303, done.text
        after = await support.get(done.headers["location"])
        assert "Automatic unsubscribe reversed by support" in after.text
        assert "Platform support desk@platform.example" in _text(after)
    assert (await shown(system.infra.pool, "owner-1", "email", A))[0] == "yes"
    audited = await system.infra.pool.fetchrow(
        "SELECT actor, reason, agency_id FROM audit_log WHERE action = 'support_override'"
    )
    assert tuple(audited.values()) == ("desk@platform.example", reason, A)


async def test_a_viewer_reads_everything_but_has_no_form_and_may_not_post(
    system: System, owners: None
) -> None:
    async with signed_in(system, "viewer@a.example", "viewer", [A]) as viewer:
        page = await viewer.get(OWNER_1)
        assert page.status_code == 200
        assert "Read only" in page.text
        assert 'name="reason"' not in page.text
        assert 'type="radio"' not in page.text
        refused = await viewer.post(
            OWNER_1, data={"csrf": csrf_of(page), "email": "no", "reason": "x"}
        )
        assert refused.status_code == 403


async def test_a_change_without_the_csrf_token_is_refused(system: System, owners: None) -> None:
    assert system.infra is not None
    async with signed_in(system, "manager@a.example", "manager", [A]) as client:
        refused = await client.post(OWNER_1, data={"email": "no", "reason": "forged"})
        assert refused.status_code == 403
    assert await system.infra.pool.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_another_agencys_owner_or_property_is_the_404_page(
    system: System, owners: None
) -> None:
    async with signed_in(system, "manager@a.example", "manager", [A]) as client:
        token = csrf_of(await client.get("/ui/preferences"))
        for url in (
            f"/ui/preferences/owners/owner-1?agency={B}",
            "/ui/preferences/owners/nobody",
            f"/ui/preferences?agency={B}&property={B}-residence",
            f"/ui/preferences?property={B}-residence",
            f"/ui/preferences?agency={B}",
        ):
            answer = await client.get(url)
            assert answer.status_code == 404, url
            assert "This page does not exist, or is not yours to see." in answer.text
        posted = await client.post(
            f"/ui/preferences/owners/owner-1?agency={B}",
            data={"csrf": token, "email": "no", "reason": "x"},
        )
        assert posted.status_code == 404


async def test_the_pages_speak_french(system: System, owners: None, api: httpx.AsyncClient) -> None:
    await api.put(
        "/v1/recipients/owner-0/preferences",
        params={"agency": A},
        json={"email": "no", "reason": "a demandé le courrier"},
    )
    await _bounce_three_times(system, "owner1@example.org")
    async with signed_in(system, "gestion@a.example", "manager", [A], "fr-FR,fr;q=0.9") as client:
        page = await client.get("/ui/preferences", params={"property": f"{A}-residence"})
        assert "<h1>Préférences de communication</h1>" in page.text
        assert _row(page, "Owner 0").startswith("Owner 0 owner-0 Non Un gestionnaire · admin")
        assert "Oui" in _row(page, "Owner 0")
        assert "Non applicable" in _row(page, "Owner 2")
        assert "Désabonné automatiquement" in _row(page, "Owner 1")
        assert "Échec définitif" in _row(page, "Owner 1")
        owner = await client.get(OWNER_1)
        assert "Contactez le support si vous souhaitez modifier cela" in owner.text
        assert '<label for="email-yes">Oui</label>' in owner.text


@pytest.mark.parametrize(
    "url",
    [
        "/ui/preferences?wants_email=maybe",
        "/ui/preferences?reason=aliens",
        "/ui/preferences?cursor=not-a-cursor",
        "/ui/preferences?limit=0",
        "/ui/preferences?colour=blue",
        "/ui/preferences?after=not-a-cursor",
        f"/ui/preferences/owners/owner-1?agency={A}&before=soon",
    ],
)
async def test_a_bad_filter_is_a_400_page(system: System, owners: None, url: str) -> None:
    async with signed_in(system, "manager@a.example", "manager", [A]) as client:
        answer = await client.get(url)
        assert answer.status_code == 400, url
        assert "is not valid" in answer.text


async def test_the_overview_and_the_property_list_page_by_keyset(
    system: System, owners: None
) -> None:
    assert system.infra is not None
    await system.infra.pool.execute(
        "INSERT INTO properties (agency_id, id) "
        "SELECT $1, 'lot-' || lpad(i::text, 3, '0') FROM generate_series(1, 60) i",
        A,
    )
    async with signed_in(system, "manager@a.example", "manager", [A]) as client:
        first = await client.get(
            "/ui/preferences", params={"property": f"{A}-residence", "limit": "2"}
        )
        assert [n for n in ("Owner 0", "Owner 1", "Owner 2") if f">{n}</a>" in first.text] == [
            "Owner 0",
            "Owner 1",
        ]
        later = html.unescape(re.search(r'href="([^"]+)" rel="next"', first.text).group(1))
        assert "cursor=" in later
        second = await client.get(later)
        assert ">Owner 2</a>" in second.text
        assert ">Owner 0</a>" not in second.text
        assert 'rel="next"' not in second.text

        listing = await client.get("/ui/preferences")
        assert listing.text.count('<th scope="row">') == 50
        more = html.unescape(re.search(r'href="([^"]+)" rel="next"', listing.text).group(1))
        rest = await client.get(f"/ui/preferences{more}")
        assert rest.text.count('<th scope="row">') == 11  # 61 properties in all
        assert 'rel="next"' not in rest.text


async def test_the_console_explains_why_a_manager_may_not_undo_an_owners_stop(
    system: System, owners: None
) -> None:
    """Issue 33: a manager's yes over the owner's STOP is refused (409), the page says
    whose decision it is and how it comes back, and nothing changes."""
    assert system.infra is not None
    await _owner_texts_stop(system, "+33610000001")
    async with signed_in(system, "manager@a.example", "manager", [A]) as manager:
        page = await manager.get(OWNER_1)
        assert "The owner opted out themselves: only the owner can bring it back." in page.text
        assert 'aria-describedby="sms-note"' in page.text
        refused = await manager.post(
            OWNER_1, data={"csrf": csrf_of(page), "sms": "yes", "reason": "they called"}
        )
        assert refused.status_code == 409
        assert 'role="alert"' in refused.text
        assert "only the owner can bring it back, by replying START" in refused.text
    assert await shown(system.infra.pool, "owner-1", "sms", A) == ("no", "owner")
    assert (
        await system.infra.pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE actor = 'manager@a.example'"
        )
        == 0
    )
