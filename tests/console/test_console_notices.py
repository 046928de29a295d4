"""The console's notices pages: the list with its counts and filters; a partially failed
notice's page (funnel, recipient table with a checkbox per row, history); the resend
button only for a resendable notice (sent, partially failed or failed, with a failure)
and a person who may resend; a failed notice resent through the page; the dialog's three
counts and whom each scope leaves out, and why; a resend posted, its success message and
history row, and each refusal as a message; CSRF; another agency's notice as a 404 on
every route; French; the live stream of one notice's changes."""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import re
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from relaybook.tooling.system import System
from tests.console.console_support import csrf_of, signed_in
from tests.support import notice

A, B = "agency-a", "agency-b"
#: (email status, sms status) of each owner of the partially failed notice
OUTCOMES = {
    "owner-0": ("delivered", "delivered"),
    "owner-1": ("failed", "delivered"),
    "owner-2": ("failed", "failed"),
    "owner-3": ("failed", "sent"),  # has since asked for no more emails
    "owner-4": ("failed", "delivered"),  # whose email address the bounce policy suppressed since
    "owner-5": ("failed", "delivered"),  # whose email address was removed since
}
_OUTCOME = """
UPDATE deliveries SET status = $3, sent_at = now(),
       delivered_at = CASE WHEN $3 = 'delivered' THEN now() END,
       failed_at = CASE WHEN $3 = 'failed' THEN now() END,
       reason = CASE WHEN $3 = 'failed' THEN 'mailbox full' END,
       provider_code = CASE WHEN $3 = 'failed' THEN '5.2.2' END
WHERE notice_id = $1 AND recipient_id = $2 AND channel = $4 AND is_latest
"""


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {"only": {"dispatcher"}}


async def _create(api: httpx.AsyncClient, body: dict[str, Any]) -> str:
    created = await api.post("/v1/notices", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _settle(system: System, notice_id: str, outcomes: dict[str, tuple[str, str]]) -> None:
    """What the providers said, written as the tracker would, then the notice's status."""
    assert system.infra is not None
    async with system.infra.pool.acquire() as connection:
        for recipient, statuses in outcomes.items():
            for channel, status in zip(("email", "sms"), statuses, strict=True):
                await connection.execute(_OUTCOME, uuid.UUID(notice_id), recipient, status, channel)
        await connection.execute("SELECT settle_notices(ARRAY[$1::uuid])", uuid.UUID(notice_id))


@pytest.fixture
async def world(system: System, api: httpx.AsyncClient) -> dict[str, str]:
    """Agency A: a partially failed notice (OUTCOMES), a sent one where everything was
    delivered, a draft; agency B: a partially failed notice."""
    body = notice(6, agency=A, property="a-residence", title="Works in the lift")
    body["source"] = {"service": "incidents", "kind": "works", "reference": "LIFT-7"}
    partial = await _create(api, body)
    await _settle(system, partial, OUTCOMES)
    assert system.infra is not None
    pool = system.infra.pool
    await pool.execute(
        "UPDATE recipients SET email_wants = 'no', email_changed_by_kind = 'manager' "
        "WHERE agency_id = $1 AND id = 'owner-3'",
        A,
    )
    await pool.execute(
        "INSERT INTO suppressions (channel, address, rule, reason) "
        "VALUES ('email', 'owner4@example.org', 'hard_bounce', 'mailbox does not exist')"
    )
    await pool.execute(
        "UPDATE recipients SET email = NULL WHERE agency_id = $1 AND id = 'owner-5'", A
    )

    delivered = await _create(api, notice(2, agency=A, title="General assembly"))
    await _settle(system, delivered, {"owner-0": ("delivered", "delivered"),
                                      "owner-1": ("delivered", "delivered")})  # fmt: skip
    draft = await _create(api, notice(1, agency=A, send=False, title="Draft of a letter"))
    other = await _create(api, notice(3, agency=B, title="Their deposit call"))
    await _settle(system, other, {"owner-0": ("failed", "failed")} | {
        f"owner-{i}": ("delivered", "delivered") for i in (1, 2)})  # fmt: skip
    return {"partial": partial, "delivered": delivered, "draft": draft, "other": other}


def text(fragment: str) -> str:
    """What a reader sees of some HTML: its text, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def element(page: str, pattern: str) -> str:
    """The first element matching ``pattern`` (a regex of its opening tag up to its end
    tag), as HTML."""
    found = re.search(pattern, page, re.DOTALL)
    assert found, f"nothing matches {pattern!r}"
    return found.group(0)


def titles(page: str) -> list[str]:
    return [
        text(t) for t in re.findall(r'<th scope="row"><a href="/ui/notices/[^"]+">(.*?)</a>', page)
    ]


def labels(page: str) -> dict[str, str]:
    """Each labelled input's label, by the input's id."""
    return {
        for_: text(label)
        for for_, label in re.findall(r'<label for="([^"]+)"[^>]*>(.*?)</label>', page, re.DOTALL)
    }


# --- the list -----------------------------------------------------------------------------


async def test_the_list_shows_the_agencys_notices_newest_first_with_their_counts(
    system: System, world: dict[str, str]
) -> None:
    async with signed_in(system, "jane@example.org", "manager", [A]) as client:
        page = await client.get("/ui/notices")
        assert page.status_code == 200
        assert titles(page.text) == ["Draft of a letter", "General assembly", "Works in the lift"]
        assert "Their deposit call" not in page.text
        assert '<th scope="col" rowspan="2">Agency</th>' not in page.text, "one agency: no column"
        row = element(
            page.text, rf'<tr>\s*<th scope="row"><a href="/ui/notices/{world["partial"]}".*?</tr>'
        )
        # email: sent, delivered, failed, skipped; then sms
        assert re.findall(r'<td class="number[^"]*">(\d+)</td>', row) == [
            "6", "1", "5", "0", "6", "4", "1", "0",
        ]  # fmt: skip
        assert "partially failed" in text(row)
        assert "incidents · works · LIFT-7" in text(row)
        assert "a-residence" in row

    async with signed_in(system, "sam@example.org", "support", None) as support:
        page = await support.get("/ui/notices")
        assert "Their deposit call" in titles(page.text)
        assert '<th scope="col" rowspan="2">Agency</th>' in page.text


async def test_the_list_filters_as_the_api_does(system: System, world: dict[str, str]) -> None:
    today = dt.datetime.now(ZoneInfo("Europe/Paris")).date()
    cases = {
        "status=draft": ["Draft of a letter"],
        "status=sent&status=partially_failed": ["General assembly", "Works in the lift"],
        "source_service=incidents&source_kind=works": ["Works in the lift"],
        "source_reference=LIFT-7&status=": ["Works in the lift"],
        "property=a-residence": ["Works in the lift"],
        f"since={today}&until={today}": [
            "Draft of a letter", "General assembly", "Works in the lift",
        ],
        f"since={today + dt.timedelta(days=1)}": [],
        f"until={today - dt.timedelta(days=1)}": [],
    }  # fmt: skip
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        for query, expected in cases.items():
            page = await client.get(f"/ui/notices?{query}")
            assert page.status_code == 200, query
            assert titles(page.text) == expected, query
        page = await client.get("/ui/notices?status=sent&status=draft")
        assert 'value="sent" checked' in page.text
        assert 'value="draft" checked' in page.text
        assert 'value="failed" checked' not in page.text
        empty = await client.get("/ui/notices?source_service=nobody")
        assert "No notice matches." in empty.text


async def test_the_list_pages_by_keyset(
    system: System, api: httpx.AsyncClient, world: dict[str, str]
) -> None:
    for number in range(24):
        await _create(api, notice(1, agency=A, send=False, title=f"Letter {number:02d}"))
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        first = await client.get("/ui/notices")
        shown = titles(first.text)
        assert len(shown) == 25
        assert shown[:2] == ["Letter 23", "Letter 22"]
        link = re.search(r'<a href="([^"]*cursor=[^"]*)">Next page</a>', first.text)
        assert link
        second = await client.get(html.unescape(link.group(1)))
        assert titles(second.text) == ["General assembly", "Works in the lift"]
        assert "Next page" not in second.text
        assert '<a href="/ui/notices">First page</a>' in second.text


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/ui/notices?status=lost", "status"),
        ("/ui/notices?since=yesterday", "since"),
        ("/ui/notices?until=2026-13-01", "until"),
        ("/ui/notices?cursor=not-a-cursor", "cursor"),
        ("/ui/notices?colour=blue", "colour"),
        ("/ui/notices/{partial}?status=lost", "status"),
        ("/ui/notices/{partial}?cursor=%25%25", "cursor"),
        ("/ui/notices/{partial}?problem=anything", "problem"),
    ],
)
async def test_a_bad_filter_is_a_400_page_naming_it(
    system: System, world: dict[str, str], path: str, field: str
) -> None:
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        page = await client.get(path.format(**world))
        assert page.status_code == 400
        assert f"The filter “{field}” is not valid." in page.text


# --- a notice's page ------------------------------------------------------------------------


async def test_the_page_of_a_partially_failed_notice(system: System, world: dict[str, str]) -> None:
    notice_id = world["partial"]
    async with signed_in(system, "jane@example.org", "manager", [A]) as client:
        page = await client.get(f"/ui/notices/{notice_id}")
        assert page.status_code == 200
        head = text(element(page.text, r'<header id="notice-head".*?</header>'))
        assert "Works in the lift" in head
        assert "partially failed" in head
        assert "incidents · works · LIFT-7" in head
        assert "a-residence" in head
        assert f'href="/ui/unreachable?notice_id={notice_id}"' in page.text

        email = text(element(page.text, r'<h3 id="stats-email">.*?</section>'))
        assert "6 Sent" in email
        assert "1 Delivered 17% of sent" in email
        assert "5 Failed" in email
        sms = text(element(page.text, r'<h3 id="stats-sms">.*?</section>'))
        assert "4 Delivered 67% of sent" in sms
        assert "1 Failed" in sms

        table = element(page.text, r'<div id="notice-recipients".*?</table>')
        boxes = labels(table)
        assert [boxes[f"pick-{i}"] for i in range(1, 7)] == [f"Owner {i}" for i in range(6)]
        assert 'name="recipient_id" value="owner-2" form="resend-form"' in table
        assert "Reason: mailbox full" in text(table)
        assert "<code>5.2.2</code>" in table

        # live: the page listens to its stream and marks what to refresh
        assert f'data-live="/ui/notices/{notice_id}/live"' in page.text
        for part in ("notice-head", "notice-stats", "notice-recipients", "notice-history"):
            assert f'id="{part}" data-live-part' in page.text
        assert "Resend history" in page.text
        assert "No resend yet." in page.text


async def test_the_recipient_table_filters_by_status_and_pages(
    system: System, world: dict[str, str]
) -> None:
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        failed = await client.get(f"/ui/notices/{world['partial']}?status=failed")
        names = re.findall(r'<th scope="row">(Owner \d)', failed.text)
        assert names == ["Owner 1", "Owner 2", "Owner 3", "Owner 4", "Owner 5"]
        assert '<option value="failed" selected>' in failed.text

        first = await client.get(f"/ui/notices/{world['partial']}?limit=4&problem=notice_sending")
        assert re.findall(r'<th scope="row">(Owner \d)', first.text) == [
            "Owner 0", "Owner 1", "Owner 2", "Owner 3",
        ]  # fmt: skip
        link = re.search(r'<a href="([^"]*cursor=[^"]*)">Next page</a>', first.text)
        assert link
        assert "problem" not in link.group(1), "a resend's outcome is said once"
        second = await client.get(html.unescape(link.group(1)))
        assert re.findall(r'<th scope="row">(Owner \d)', second.text) == ["Owner 4", "Owner 5"]
        assert "First page" in second.text


async def test_the_resend_button_shows_only_for_a_resendable_notice_and_who_may_resend(
    system: System, world: dict[str, str]
) -> None:
    button = (
        '<button type="button" class="js-only" data-opens="resend-dialog">Resend failures</button>'
    )
    async with signed_in(system, "jane@example.org", "manager", [A]) as manager:
        page = await manager.get(f"/ui/notices/{world['partial']}")
        assert button in page.text
        assert '<dialog id="resend-dialog" role="dialog"' in page.text
        for nothing_failed in (world["delivered"], world["draft"]):
            page = await manager.get(f"/ui/notices/{nothing_failed}")
            assert page.status_code == 200
            assert 'data-opens="resend-dialog"' not in page.text
            assert "?resend=open" not in page.text
            assert 'name="recipient_id"' not in page.text
        # nothing was ever sent: no dialog either (a sent notice keeps one for a late
        # bounce to reveal the button into, live)
        assert "<dialog" not in page.text

    async with signed_in(system, "vic@example.org", "viewer", [A]) as viewer:
        page = await viewer.get(f"/ui/notices/{world['partial']}")
        assert page.status_code == 200
        assert "Resend failures" not in page.text
        assert "<dialog" not in page.text
        assert 'name="recipient_id"' not in page.text
        refused = await viewer.post(
            f"/ui/notices/{world['partial']}/resends",
            data={"csrf": csrf_of(page), "scope": "failed"},
        )
        assert refused.status_code == 403
        assert "Your role does not allow this." in refused.text
    assert system.infra is not None
    assert await system.infra.pool.fetchval("SELECT count(*) FROM resends") == 0


async def test_a_notice_where_every_message_failed_offers_its_failures_and_resends_them(
    system: System, api: httpx.AsyncClient
) -> None:
    """A failed notice is resendable, as the API says: the page shows the button, the
    dialog opens with its counts, and the resend it posts goes out."""
    notice_id = await _create(api, notice(2, agency=A, title="Water cut"))
    await _settle(system, notice_id, {f"owner-{i}": ("failed", "failed") for i in (0, 1)})
    button = (
        '<button type="button" class="js-only" data-opens="resend-dialog">Resend failures</button>'
    )
    async with signed_in(system, "jane@example.org", "manager", [A]) as client:
        page = await client.get(f"/ui/notices/{notice_id}")
        assert page.status_code == 200
        head = element(page.text, r'<header id="notice-head".*?</header>')
        assert '<span class="status failed">' in head
        assert button in page.text
        assert 'name="recipient_id" value="owner-1" form="resend-form"' in page.text

        opened = await client.get(f"/ui/notices/{notice_id}?resend=open")
        dialog = element(opened.text, r'<dialog id="resend-dialog".*?</dialog>')
        assert " open>" in dialog.split("\n")[0]
        assert scopes_of(dialog)["failed"] == "Failed only · 2 recipients"

        answer = await client.post(
            f"/ui/notices/{notice_id}/resends", data={"csrf": csrf_of(page), "scope": "failed"}
        )
        assert answer.status_code == 303
        assert answer.headers["location"].startswith(f"/ui/notices/{notice_id}?resent=")
        after = await client.get(answer.headers["location"])
        assert "Resent to 2 recipients: 2 emails, 2 texts." in text(
            element(after.text, r'<p class="success" role="status">.*?</p>')
        )
    assert system.infra is not None
    resends = await system.infra.pool.fetch("SELECT scope, recipients, email, sms FROM resends")
    assert [tuple(row) for row in resends] == [("failed", 2, 2, 2)]


def scopes_of(fragment: str) -> dict[str, str]:
    found = labels(fragment)
    return {scope: found[f"scope-{scope}"] for scope in ("failed", "undelivered", "selected")}


def help_of(fragment: str, scope: str) -> str:
    return text(element(fragment, rf'<div class="help" id="scope-{scope}-help">.*?</div>'))


async def test_the_dialog_counts_each_scope_and_says_who_is_left_out_and_why(
    system: System, api: httpx.AsyncClient, world: dict[str, str]
) -> None:
    notice_id = world["partial"]
    async with signed_in(system, "jane@example.org", "manager", [A]) as client:
        options = await client.get(f"/ui/notices/{notice_id}/resend-options")
        assert options.status_code == 200
        assert scopes_of(options.text) == {
            "failed": "Failed only · 2 recipients",
            "undelivered": "All undelivered · 2 recipients",
            "selected": "Selected recipients · 0 recipients",
        }
        assert 'value="failed" id="scope-failed"' in options.text
        failed = help_of(options.text, "failed")
        assert "Resends 2 emails and 1 text." in failed
        assert "Left out: 3 recipients." in failed
        # the reasons' labels are the one catalogue's (relaybook.reachability.reasons)
        assert "Owner 3, Email: Unsubscribed" in failed
        assert "Owner 4, Email: Unsubscribed automatically" in failed
        assert "Owner 5, Email: No address" in failed
        undelivered = help_of(options.text, "undelivered")
        assert "Resends 1 email and 2 texts." in undelivered
        assert "Left out: 1 recipient." in undelivered
        assert "Owner 3, Email: Unsubscribed" in undelivered
        assert "Tick recipients in the table first." in help_of(options.text, "selected")

        ticked = await client.get(
            f"/ui/notices/{notice_id}/resend-options",
            params={"recipient_ids": "owner-0,owner-1,owner-3"},
        )
        assert scopes_of(ticked.text)["selected"] == "Selected recipients · 1 recipient"
        selected = help_of(ticked.text, "selected")
        assert "Resends 1 email and 0 texts." in selected
        assert "Owner 3, Email: Unsubscribed" in selected
        assert "Owner 4" not in selected

        # the same numbers as the API's
        api_counts = (
            await api.get(
                f"/v1/notices/{notice_id}/resend-options",
                params={"recipient_ids": "owner-0,owner-1,owner-3"},
            )
        ).json()
        assert [api_counts[s]["recipients"] for s in ("failed", "undelivered", "selected")] == [
            2, 2, 1,
        ]  # fmt: skip

        stranger = await client.get(
            f"/ui/notices/{notice_id}/resend-options", params={"recipient_ids": "owner-1,nobody"}
        )
        assert stranger.status_code == 400
        assert "not recipients of this notice" in stranger.text

        # without script, the dialog opens as part of the page, with the same counts
        page = await client.get(f"/ui/notices/{notice_id}?resend=open")
        dialog = element(page.text, r'<dialog id="resend-dialog".*?</dialog>')
        assert 'role="dialog"' in dialog
        assert " open>" in dialog.split("\n")[0]
        assert scopes_of(dialog)["failed"] == "Failed only · 2 recipients"
        assert '<button type="submit">Resend</button>' in dialog


async def test_a_resend_posted_says_how_many_emails_and_texts_went_and_is_in_the_history(
    system: System, world: dict[str, str]
) -> None:
    notice_id = world["partial"]
    async with signed_in(system, "jane@example.org", "manager", [A]) as client:
        page = await client.get(f"/ui/notices/{notice_id}")
        token = csrf_of(page)
        answer = await client.post(
            f"/ui/notices/{notice_id}/resends",
            # the boxes ticked go with the form whatever the scope: only "selected" uses them
            data={"csrf": token, "scope": "failed", "recipient_id": ["owner-1"]},
        )
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert location.startswith(f"/ui/notices/{notice_id}?resent=")
        after = await client.get(location)
        assert "Resent to 2 recipients: 2 emails, 1 text." in text(
            element(after.text, r'<p class="success" role="status">.*?</p>')
        )
        history = text(element(after.text, r'<section id="notice-history".*?</section>'))
        assert "Resend history" in history
        assert "Failed only 2 2 1 full jane@example.org" in history

        # the notice is being sent again: no second resend meanwhile, and a clear message
        again = await client.post(
            f"/ui/notices/{notice_id}/resends", data={"csrf": token, "scope": "failed"}
        )
        assert again.headers["location"] == f"/ui/notices/{notice_id}?problem=notice_sending"
        shown = await client.get(again.headers["location"])
        assert "This notice is still being sent: resend once it is done." in shown.text
    assert system.infra is not None
    resends = await system.infra.pool.fetch("SELECT scope, recipients, email, sms FROM resends")
    assert [tuple(row) for row in resends] == [("failed", 2, 2, 1)]


@pytest.mark.parametrize(
    ("form", "problem", "message"),
    [
        ({"scope": "selected"}, "no_selection", "Tick at least one recipient"),
        ({"scope": "selected", "recipient_id": ["owner-0"]}, "no_failed_recipients",
         "Nothing to resend in this scope"),
        ({"scope": "selected", "recipient_id": ["owner-1", "nobody"]}, "unknown_recipients",
         "Some ticked recipients are not recipients of this notice"),
    ],
)  # fmt: skip
async def test_a_refused_resend_is_a_clear_message_and_changes_nothing(
    system: System, world: dict[str, str], form: dict[str, Any], problem: str, message: str
) -> None:
    notice_id = world["partial"]
    async with signed_in(system, "jane@example.org", "manager", [A]) as client:
        token = csrf_of(await client.get(f"/ui/notices/{notice_id}"))
        answer = await client.post(f"/ui/notices/{notice_id}/resends", data={"csrf": token, **form})
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/ui/notices/{notice_id}?problem={problem}"
        page = await client.get(answer.headers["location"])
        assert page.status_code == 200
        assert message in text(element(page.text, r'<p class="alert" role="alert">.*?</p>'))
    assert system.infra is not None
    assert await system.infra.pool.fetchval("SELECT count(*) FROM resends") == 0


async def test_a_draft_cannot_be_resent_and_a_scope_must_be_chosen(
    system: System, world: dict[str, str]
) -> None:
    async with signed_in(system, "jane@example.org", "manager", [A]) as client:
        token = csrf_of(await client.get(f"/ui/notices/{world['draft']}"))
        answer = await client.post(
            f"/ui/notices/{world['draft']}/resends", data={"csrf": token, "scope": "failed"}
        )
        assert answer.headers["location"].endswith("?problem=notice_not_sent")
        page = await client.get(answer.headers["location"])
        assert "This notice has not been sent yet" in page.text
        nothing = await client.post(
            f"/ui/notices/{world['partial']}/resends", data={"csrf": token, "scope": "all"}
        )
        assert nothing.status_code == 400
        assert "Choose what to resend." in nothing.text


async def test_a_resend_without_the_csrf_token_is_refused(
    system: System, world: dict[str, str]
) -> None:
    async with signed_in(system, "jane@example.org", "manager", [A]) as client:
        for token in ({}, {"csrf": "forged"}):
            refused = await client.post(
                f"/ui/notices/{world['partial']}/resends", data={"scope": "failed", **token}
            )
            assert refused.status_code == 403
            assert "This form has expired" in refused.text
    assert system.infra is not None
    assert await system.infra.pool.fetchval("SELECT count(*) FROM resends") == 0


async def test_another_agencys_notice_is_a_404_on_every_route(
    system: System, world: dict[str, str]
) -> None:
    theirs = world["other"]
    async with signed_in(system, "jane@example.org", "manager", [A]) as client:
        token = csrf_of(await client.get("/ui/notices"))
        for notice_id in (theirs, str(uuid.uuid4()), "not-a-notice"):
            for path in ("", "/live", "/resend-options"):
                page = await client.get(f"/ui/notices/{notice_id}{path}")
                assert page.status_code == 404, (notice_id, path)
                assert "This page does not exist, or is not yours to see." in page.text
            for form in ({"scope": "failed"}, {"scope": "selected"}):
                posted = await client.post(
                    f"/ui/notices/{notice_id}/resends", data={"csrf": token, **form}
                )
                assert posted.status_code == 404, (notice_id, form)
    assert system.infra is not None
    assert await system.infra.pool.fetchval("SELECT count(*) FROM resends") == 0


async def test_the_pages_speak_french(system: System, world: dict[str, str]) -> None:
    notice_id = world["partial"]
    async with signed_in(system, "jeanne@example.org", "manager", [A], "fr-FR,fr;q=0.9") as client:
        listing = await client.get("/ui/notices")
        assert '<html lang="fr">' in listing.text
        assert "échecs partiels" in listing.text
        page = await client.get(f"/ui/notices/{notice_id}")
        assert ">Renvoyer les échecs</button>" in page.text
        assert "Historique des renvois" in page.text
        assert "Statistiques" in page.text
        options = await client.get(f"/ui/notices/{notice_id}/resend-options")
        assert scopes_of(options.text) == {
            "failed": "Échecs uniquement · 2 destinataires",
            "undelivered": "Tous les non-livrés · 2 destinataires",
            "selected": "Destinataires sélectionnés · 0 destinataire",
        }
        assert "Owner 3, E-mail : Désabonné" in help_of(options.text, "failed")
        opened = await client.get(f"/ui/notices/{notice_id}?resend=open")
        assert '<button type="submit">Renvoyer</button>' in opened.text
        answer = await client.post(
            f"/ui/notices/{notice_id}/resends", data={"csrf": csrf_of(page), "scope": "failed"}
        )
        done = await client.get(answer.headers["location"])
        assert "Renvoyé à 2 destinataires : 2 e-mails, 1 SMS." in text(done.text)
        assert "Échecs uniquement" in text(
            element(done.text, r'<section id="notice-history".*?</section>')
        )


# --- live updates ------------------------------------------------------------------------


class Events:
    """The event names a server-sent-events stream sends (comments skipped), read by a
    task of its own so that waiting for one can time out without breaking the stream."""

    def __init__(self, answer: httpx.Response) -> None:
        self.names: asyncio.Queue[str] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(answer))

    async def _read(self, answer: httpx.Response) -> None:
        async for line in answer.aiter_lines():
            if line.startswith(("event: ", "retry: ")):
                await self.names.put(line)

    async def next(self, within: float) -> str | None:
        try:
            return await asyncio.wait_for(self.names.get(), within)
        except TimeoutError:
            return None

    def stop(self) -> None:
        self._reader.cancel()


async def test_the_live_stream_announces_changes_to_its_notices_deliveries_only(
    system: System, world: dict[str, str]
) -> None:
    assert system.infra is not None
    pool = system.infra.pool
    touch = "UPDATE deliveries SET updated_at = now() WHERE notice_id = $1"
    mine, other = uuid.UUID(world["partial"]), uuid.UUID(world["delivered"])
    async with (
        signed_in(system, "jane@example.org", "viewer", [A]) as client,
        client.stream("GET", f"/ui/notices/{mine}/live") as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = Events(answer)
        try:
            assert await events.next(5) == "retry: 3000"
            # the stream listens once it has answered: touch until it has heard
            heard = None
            for _ in range(50):
                await pool.execute(touch, mine)
                heard = await events.next(0.3)
                if heard:
                    break
            assert heard == "event: changed"
            while await events.next(1.0):
                pass  # the touches that were on their way
            await pool.execute(touch, other)
            assert await events.next(1.5) is None, "another notice's change is not ours"
            await pool.execute(touch, mine)
            assert await events.next(5) == "event: changed"
        finally:
            events.stop()
