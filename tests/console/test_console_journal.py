"""The console's log book: the journal (filtered, paged by keyset, per source), a
message's timeline as the tracker records the providers' events, the CSV exports
(streamed, every page, formula-safe, in the person's language), and the owners a notice
reached on no channel. An agency-bound person never sees another agency's rows, and a
filter the API would refuse is a 400 page, never a 500."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
import uuid
from typing import Any

import httpx
import pytest

from relaybook.platform.kafka import Record
from relaybook.tooling.system import System
from tests.console.console_support import browser, signed_in
from tests.support import notice
from tracker.journal import Journal

A, B = "agency-a", "agency-b"
_NEXT = re.compile(r'href="([^"]*cursor=[^"]*)" rel="next"')


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {"only": {"dispatcher"}}


async def create(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created = await api.post("/v1/notices", json=body)
    assert created.status_code == 201, created.text
    answer: dict[str, Any] = created.json()
    return answer


async def delivery(system: System, notice_id: str, recipient: str, channel: str) -> uuid.UUID:
    """The latest attempt of a recipient on a channel (read as the tables' owner)."""
    assert system.infra is not None
    found = await system.infra.pool.fetchval(
        "SELECT id FROM deliveries WHERE notice_id = $1 AND recipient_id = $2 "
        "AND channel = $3 AND is_latest",
        uuid.UUID(notice_id),
        recipient,
        channel,
    )
    assert isinstance(found, uuid.UUID)
    return found


async def provider_says(system: System, *events: tuple[uuid.UUID, str, dict[str, Any]]) -> None:
    """Provider events about deliveries, recorded by the journal tracker as it records
    webhooks: (delivery, type, other fields), a second apart."""
    assert system.infra is not None
    now = dt.datetime.now(dt.UTC)
    records = []
    for second, (delivery_id, kind, fields) in enumerate(events):
        stamp = (now + dt.timedelta(seconds=second)).isoformat().replace("+00:00", "Z")
        value = {
            "schema": "delivery-event/v1",
            "event_id": f"sendgrid:{uuid.uuid4().hex}",
            "type": kind,
            "channel": fields.pop("channel", "email"),
            "provider": "sendgrid",
            "occurred_at": stamp,
            "received_at": stamp,
            "delivery_id": str(delivery_id),
            **fields,
        }
        records.append(Record("delivery-events", 0, 0, str(delivery_id), value))
    await Journal(system.infra.pool).handle(records)


def rows(page: httpx.Response) -> int:
    assert page.status_code == 200, page.text
    return page.text.count('<th scope="row">')


def next_link(page: httpx.Response) -> str | None:
    found = _NEXT.search(page.text)
    return html.unescape(found.group(1)) if found else None


def table(answer: httpx.Response) -> list[list[str]]:
    """A CSV download's rows, its header first."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"].startswith('attachment; filename="')
    assert answer.text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(answer.text.removeprefix("\ufeff"))))


async def test_the_journal_lists_every_message_newest_first_filtered_and_paged(
    system: System, api: httpx.AsyncClient
) -> None:
    first = await create(api, notice(3, agency=A))  # 6 messages
    works = notice(2, agency=A, title="General assembly 2027")
    works["source"] = {"service": "works", "kind": "meeting", "reference": "AGM-2027"}
    await create(api, works)  # 4 more, newer
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        page = await client.get("/ui/journal", params={"limit": "4"})
        assert rows(page) == 4
        assert "<h1>Journal</h1>" in page.text
        for field in (
            "source_service",
            "source_kind",
            "source_reference",
            "property",
            "recipient_id",
            "notice_id",
            "channel",
            "status",
            "since",
            "until",
        ):
            assert f'<label for="filter-{field}">' in page.text, field
            assert f'id="filter-{field}"' in page.text, field
        assert 'type="date"' in page.text
        assert page.text.index("General assembly 2027") < page.text.index('rel="next"')
        assert "Deposit call Q4 2026" not in page.text, "the older notice is on later pages"
        assert 'href="/ui/journal.csv?limit=4"' in page.text
        seen = rows(page)
        target = next_link(page)
        while target is not None:
            assert "limit=4" in target, "the next page keeps the filters"
            page = await client.get(target)
            seen += rows(page)
            assert "First page" in page.text
            target = next_link(page)
        assert seen == 10
        assert f'href="/ui/notices/{first["id"]}">Deposit call Q4 2026</a>' in page.text

        only = await client.get("/ui/journal", params={"source_service": "works", "channel": ""})
        assert rows(only) == 4
        assert "Deposit call Q4 2026" not in only.text
        assert 'value="works"' in only.text, "the form shows the filters given"
        assert "/ui/journal.csv?source_service=works" in only.text
        texts = await client.get(
            "/ui/journal", params={"channel": "sms", "status": "queued", "recipient_id": "owner-2"}
        )
        assert rows(texts) == 1
        today = dt.datetime.now(dt.UTC).date()
        assert rows(await client.get("/ui/journal", params={"until": "2000-01-01"})) == 0
        assert (
            "No message matches these filters."
            in (await client.get("/ui/journal", params={"until": "2000-01-01"})).text
        )
        days = {
            "since": str(today - dt.timedelta(days=1)),
            "until": str(today + dt.timedelta(days=1)),
        }
        assert rows(await client.get("/ui/journal", params=days)) == 10
        moment = {"since": "2000-01-01T00:00:00Z"}  # what the API takes works here too
        assert rows(await client.get("/ui/journal", params=moment)) == 10


async def test_the_journal_of_one_source_shows_only_its_messages(
    system: System, api: httpx.AsyncClient
) -> None:
    await create(api, notice(2, agency=A))
    letter = notice(1, agency=A, title="Letter about the roof")
    letter["source"] = {"service": "works", "kind": "letter", "reference": "ROOF/2027"}
    await create(api, letter)
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        journal = await client.get("/ui/journal")
        own = "/ui/journal/sources/works/letter/ROOF%2F2027"
        assert f'href="{own}"' in journal.text, "each row links to its source's journal"
        page = await client.get(own)
        assert rows(page) == 2
        assert "Journal of works · letter · ROOF/2027" in page.text
        assert "Deposit call Q4 2026" not in page.text
        assert 'id="filter-source_service"' not in page.text, "the path fixes the source"
        assert "/ui/journal.csv?source_service=works&amp;source_kind=letter" in page.text
        assert rows(await client.get(own, params={"channel": "sms"})) == 1
        first = await client.get(own, params={"limit": "1"})
        assert f'action="{own}"' in first.text
        following = next_link(first)
        assert following is not None
        assert following.startswith(f"{own}?limit=1&cursor=")
        assert rows(await client.get(following)) == 1
        assert rows(await client.get("/ui/journal/sources/works")) == 2
        assert rows(await client.get("/ui/journal/sources/accounting/deposit_call")) == 4
        assert rows(await client.get("/ui/journal/sources/nobody")) == 0
        too_deep = await client.get("/ui/journal/sources/works/letter/ROOF/2027")
        assert too_deep.status_code == 404


async def test_a_message_page_shows_the_timeline_of_its_provider_events(
    system: System, api: httpx.AsyncClient
) -> None:
    made = await create(api, notice(2, agency=A))
    clicked = await delivery(system, made["id"], "owner-0", "email")
    bounced = await delivery(system, made["id"], "owner-1", "email")
    await provider_says(
        system,
        (clicked, "processed", {}),
        (clicked, "delivered", {}),
        (clicked, "opened", {"machine_open": True}),
        (clicked, "clicked", {"url": "https://portal.example.org/dc"}),
        (
            bounced,
            "bounced",
            {
                "reason": "550 5.1.1 The account does not exist",
                "provider_code": "5.1.1",
                "bounce_classification": "invalid",
            },
        ),
    )
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        page = await client.get(f"/ui/messages/{clicked}")
        assert page.status_code == 200, page.text
        assert "Message to Owner 0" in page.text
        assert "Timeline" in page.text
        timeline = page.text[page.text.index("Timeline") :]
        order = [
            timeline.index(f">{kind}</span>")
            for kind in ("processed", "delivered", "opened", "clicked")
        ]
        assert order == sorted(order), "the events in the order they happened"
        assert "by a machine (privacy protection), not a person" in timeline
        assert "https://portal.example.org/dc" in timeline
        assert f'href="/ui/notices/{made["id"]}"' in page.text
        assert 'href="/ui/journal?recipient_id=owner-0"' in page.text
        assert 'href="/ui/journal/sources/accounting/deposit_call/DC-2026-Q4"' in page.text

        failed = await client.get(f"/ui/messages/{bounced}")
        assert "550 5.1.1 The account does not exist (code 5.1.1)" in failed.text
        assert '<span class="status failed">failed</span>' in failed.text
        journal = await client.get("/ui/journal", params={"status": "failed"})
        assert rows(journal) == 1
        assert "550 5.1.1 The account does not exist (code 5.1.1)" in journal.text

        for unknown in ("not-a-uuid", str(uuid.uuid4())):
            missing = await client.get(f"/ui/messages/{unknown}")
            assert missing.status_code == 404
            assert "This page does not exist, or is not yours to see." in missing.text


async def test_the_csv_export_streams_every_filtered_row_formula_safe(
    system: System, api: httpx.AsyncClient
) -> None:
    body = notice(300, agency=A)  # 600 messages: more than one page of the export
    body["recipients"][0]["name"] = '=HYPERLINK("http://evil.example")'
    body["recipients"][1]["name"] = "@SUM(1+1)"
    await create(api, body)
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        every = table(await client.get("/ui/journal.csv"))
        assert every[0][:3] == [
            "Date (Europe/Paris)",
            "Sent at (Europe/Paris)",
            "Delivered at (Europe/Paris)",
        ]
        assert "Recipient id" in every[0]
        assert "Notice title" in every[0]
        assert len(every) == 1 + 600
        assert len({line[-1] for line in every[1:]}) == 600, "each message once"
        names = every[0].index("Recipient name")
        assert '\'=HYPERLINK("http://evil.example")' in {line[names] for line in every}
        assert "'@SUM(1+1)" in {line[names] for line in every}
        assert not any(cell.startswith(("=", "+", "-", "@")) for line in every for cell in line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", every[1][0])

        texts = table(
            await client.get(
                "/ui/journal.csv", params={"channel": "sms", "recipient_id": "owner-7"}
            )
        )
        assert len(texts) == 2
        assert texts[1][every[0].index("Channel")] == "sms"
        assert texts[1][every[0].index("Status")] == "queued"
        page = await client.get("/ui/journal", params={"channel": "sms"})
        assert 'href="/ui/journal.csv?channel=sms"' in page.text


#: a whole CSV whose every cell is quoted (a quote inside a cell is doubled)
_ALL_QUOTED = re.compile(r'(?:"(?:[^"]|"")*"(?:,"(?:[^"]|"")*")*\r\n)+')


def spreadsheet_cells(text: str, separator: str) -> list[list[str]]:
    """The cells a spreadsheet shows for a CSV when it splits lines on ``separator``:
    outside quotes only, a quote toggling them anywhere in a cell (so a ``;`` within a
    quoted cell never splits it, whatever the file's own separator)."""
    lines: list[list[str]] = [[""]]
    quoted = False
    for char in text.removeprefix("\ufeff"):
        if char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            lines[-1].append("")
        elif char == "\n" and not quoted:
            lines.append([""])
        elif char != "\r" or quoted:
            lines[-1][-1] += char
    return [line for line in lines if line != [""]]


async def test_every_csv_cell_is_quoted_and_text_from_outside_never_starts_a_formula(
    system: System, api: httpx.AsyncClient
) -> None:
    """A French spreadsheet splits lines on ``;``: a name holding one stays one cell,
    since every cell is quoted. A value that would start a formula (=, +, -, @, tab, CR),
    a name or the bounce reason the recipient's mail server wrote, starts with a ``'``."""
    body = notice(3, agency=A, title="-Works on the roof")
    body["recipients"][0]["name"] = "Dupont;=1+1"
    body["recipients"][1]["name"] = "+33 Martin"
    body["recipients"][2]["name"] = "\tTab;=2+2"
    made = await create(api, body)
    bounced = await delivery(system, made["id"], "owner-0", "email")
    await provider_says(
        system,
        (bounced, "bounced", {"reason": "=cmd|' /C calc'!A0", "provider_code": "-5.1.1"}),
        (
            await delivery(system, made["id"], "owner-0", "sms"),
            "undelivered",
            {"channel": "sms", "reason": "@SUM(1;2)", "provider_code": "\r=3+3"},
        ),
    )
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        journal = await client.get("/ui/journal.csv")
        unreachable = await client.get("/ui/unreachable.csv", params={"notice_id": made["id"]})
    for export in (journal, unreachable):
        lines = table(export)
        raw = export.text.removeprefix("\ufeff")
        assert _ALL_QUOTED.fullmatch(raw), "every cell is quoted, the header's too"
        assert '"Dupont;=1+1"' in raw
        assert "Dupont;=1+1" in {cell for line in lines for cell in line}
        for separator in (";", ","):
            shown = spreadsheet_cells(export.text, separator)
            starts = [cell for line in shown for cell in line if cell.startswith(("=", "+"))]
            assert not starts, (separator, starts)
        formulas = [
            cell
            for line in lines
            for cell in line
            if cell.startswith(("=", "+", "-", "@", "\t", "\r"))
        ]
        assert not formulas, formulas
    cells = {cell for line in table(journal) for cell in line}
    for hostile in ("+33 Martin", "\tTab;=2+2", "-Works on the roof", "=cmd|' /C calc'!A0",
                    "-5.1.1", "@SUM(1;2)", "\r=3+3"):  # fmt: skip
        assert f"'{hostile}" in cells, hostile
    header, *owners = table(unreachable)
    (owner,) = [line for line in owners if line[header.index("Recipient id")] == "owner-0"]
    assert owner[header.index("email reason")] == "'=cmd|' /C calc'!A0"
    assert owner[header.index("sms provider code")] == "'\r=3+3"
    assert owner[header.index("Notice title")] == "'-Works on the roof"
    attempt = table(journal)[0].index("Attempt")
    assert {line[attempt] for line in table(journal)[1:]} == {"1"}, "our own counts as they are"


async def test_unreachable_owners_are_those_a_notice_reached_on_no_channel(
    system: System, api: httpx.AsyncClient
) -> None:
    body = notice(1, agency=A, property="residence", title="Water cut on Monday")
    body["recipients"] = [
        {"id": "nowhere", "name": "No Address", "properties": ["residence", "garage"]},
        {
            "id": "bounced",
            "name": "Bounced Owner",
            "email": "b@example.org",
            "phone": "+33600000002",
        },
        {"id": "halfway", "email": "h@example.org", "phone": "+33600000003"},
        {"id": "waiting", "email": "w@example.org"},
    ]
    made = await create(api, body)
    draft = notice(1, agency=A, send=False, title="Not sent yet")
    draft["recipients"] = [{"id": "drafted"}]
    await create(api, draft)
    theirs = notice(1, agency=B, title="Secret of agency b")
    theirs["recipients"] = [{"id": "stranger"}]
    await create(api, theirs)
    notice_id = made["id"]
    await provider_says(
        system,
        (
            await delivery(system, notice_id, "bounced", "email"),
            "bounced",
            {"reason": "550 5.1.1 unknown user", "provider_code": "5.1.1"},
        ),
        (
            await delivery(system, notice_id, "bounced", "sms"),
            "undelivered",
            {"channel": "sms", "reason": "unreachable handset", "provider_code": "30003"},
        ),
        (await delivery(system, notice_id, "halfway", "email"), "delivered", {}),
        (
            await delivery(system, notice_id, "halfway", "sms"),
            "undelivered",
            {"channel": "sms", "provider_code": "30005"},
        ),
    )
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        page = await client.get("/ui/unreachable")
        assert rows(page) == 2
        assert "<h1>Unreachable owners</h1>" in page.text
        for shown in (
            "nowhere",
            "No Address",
            "garage, residence",
            "bounced",
            "Bounced Owner",
            "Water cut on Monday",
            "No address",
            "550 5.1.1 unknown user (code 5.1.1)",
            "unreachable handset (code 30003)",
            f'href="/ui/notices/{notice_id}"',
        ):
            assert shown in page.text, shown
        for hidden in ("halfway", "waiting", "drafted", "stranger", "Secret of agency b"):
            assert hidden not in page.text, hidden
        assert page.text.index(">bounced</a>") < page.text.index(">nowhere</a>"), "by id"

        one = await client.get("/ui/unreachable", params={"limit": "1", "property": "residence"})
        assert rows(one) == 1
        following = next_link(one)
        assert following is not None
        assert "property=residence" in following
        second = await client.get(following)
        assert rows(second) == 1
        assert ">nowhere</a>" in second.text
        assert next_link(second) is None
        assert rows(await client.get("/ui/unreachable", params={"property": "elsewhere"})) == 0
        assert rows(await client.get("/ui/unreachable", params={"notice_id": notice_id})) == 2
        assert rows(await client.get("/ui/unreachable", params={"until": "2000-01-01"})) == 0

        export = table(await client.get("/ui/unreachable.csv", params={"notice_id": notice_id}))
        header = export[0]
        assert header[0] == "Notice date (Europe/Paris)"
        assert header[-6:] == [
            "email status",
            "email reason",
            "email provider code",
            "sms status",
            "sms reason",
            "sms provider code",
        ]
        assert [line[header.index("Recipient id")] for line in export[1:]] == ["bounced", "nowhere"]
        nowhere = export[2]
        assert nowhere[header.index("Properties")] == "garage residence"
        assert nowhere[header.index("Property")] == "residence"
        assert nowhere[-6:] == ["skipped", "No address", "", "skipped", "No address", ""]
        assert export[1][-6:] == [
            "failed",
            "550 5.1.1 unknown user",
            "5.1.1",
            "failed",
            "unreachable handset",
            "30003",
        ]


async def test_an_owner_resent_to_is_unreachable_no_more(
    system: System, api: httpx.AsyncClient
) -> None:
    """The latest attempt counts, as in the notice's statistics: a resend's new attempt
    replaces the failed one."""
    body = notice(1, agency=A, sms=None)
    made = await create(api, body)
    first = await delivery(system, made["id"], "owner-0", "email")
    await provider_says(system, (first, "bounced", {"reason": "mailbox full"}))
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        assert rows(await client.get("/ui/unreachable")) == 1
        resent = await api.post(f"/v1/notices/{made['id']}/resends", json={"scope": "failed"})
        assert resent.status_code == 202, resent.text
        assert rows(await client.get("/ui/unreachable")) == 0, "queued again: not yet"
        again = await delivery(system, made["id"], "owner-0", "email")
        assert again != first
        await provider_says(system, (again, "delivered", {}))
        assert rows(await client.get("/ui/unreachable")) == 0
        history = await client.get(f"/ui/messages/{again}")
        assert f'href="/ui/messages/{first}"' in history.text, "the attempt it retried"


async def test_another_agencys_messages_are_never_shown(
    system: System, api: httpx.AsyncClient
) -> None:
    mine = notice(1, agency=A)
    mine["recipients"][0]["phone"] = None
    await create(api, mine)
    theirs = notice(1, agency=B, title="Secret of agency b")
    theirs["recipients"][0]["phone"] = None  # the same owner id, unreachable by text too
    theirs["recipients"][0]["email"] = None
    made = await create(api, theirs)
    their_message = await delivery(system, made["id"], "owner-0", "email")
    async with signed_in(system, "jane@example.org", "manager", [A]) as client:
        pages = {
            "/ui/journal": 2,
            "/ui/journal?recipient_id=owner-0": 2,
            f"/ui/journal?notice_id={made['id']}": 0,
            "/ui/journal/sources/accounting": 2,
            "/ui/unreachable": 0,
            f"/ui/unreachable?notice_id={made['id']}": 0,
        }
        for path, count in pages.items():
            page = await client.get(path)
            assert rows(page) == count, path
            assert "Secret of agency b" not in page.text
            assert str(their_message) not in page.text
        for path, count in {"/ui/journal.csv": 2, "/ui/unreachable.csv": 0}.items():
            export = await client.get(path)
            assert len(table(export)) == 1 + count
            assert "Secret of agency b" not in export.text
            assert made["id"] not in export.text
        foreign = await client.get(f"/ui/messages/{their_message}")
        nobody = uuid.uuid4()
        unknown = await client.get(f"/ui/messages/{nobody}")
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.text.replace(str(their_message), "?") == unknown.text.replace(
            str(nobody), "?"
        ), "exactly what a message that never existed answers"
    async with signed_in(system, "ops@example.org", "ops", None) as staff:
        assert "Secret of agency b" in (await staff.get(f"/ui/messages/{their_message}")).text


async def test_a_bad_filter_is_a_400_page_naming_it(system: System) -> None:
    bad = [
        ({"channel": "fax"}, "Channel"),
        ({"status": "lost"}, "Status"),
        ({"notice_id": "42"}, "Notice id"),
        ({"since": "2026-02-30"}, "Since"),
        ({"until": "yesterday"}, "Until"),
        ({"since": "9999-12-31T23:00:00-05:00"}, "Since"),
        ({"limit": "0"}, "Rows per page"),
        ({"limit": "1e2"}, "Rows per page"),
        ({"cursor": "not-a-cursor"}, "Page"),
        ({"colour": "blue"}, "colour"),
        ({"recipient_id": "x" * 201}, "Recipient id"),
    ]
    async with signed_in(system, "jane@example.org", "viewer", [A]) as client:
        for path in ("/ui/journal", "/ui/journal.csv", "/ui/unreachable", "/ui/unreachable.csv"):
            for params, field in bad:  # a journal's filter is not one of the other list's
                if path.endswith(".csv") and "cursor" in params:
                    continue  # an export is of every page: it takes no cursor
                answer = await client.get(path, params=params)
                assert answer.status_code == 400, (path, params, answer.text[:200])
                assert f"The filter “{field}” is not valid" in answer.text, (path, params)
        assert (await client.get("/ui/journal/sources/" + "x" * 201)).status_code == 400


async def test_the_pages_speak_french(system: System, api: httpx.AsyncClient) -> None:
    made = await create(api, notice(1, agency=A))
    message = await delivery(system, made["id"], "owner-0", "email")
    async with signed_in(system, "jeanne@example.org", "viewer", [A], language="fr") as client:
        journal = await client.get("/ui/journal")
        assert "<h1>Journal de bord</h1>" in journal.text
        assert "Exporter en CSV" in journal.text
        assert '<label for="filter-source_service">Service source</label>' in journal.text
        assert "en attente" in journal.text
        page = await client.get(f"/ui/messages/{message}")
        assert "Message à Owner 0" in page.text
        assert "Chronologie" in page.text
        unreachable = await client.get("/ui/unreachable")
        assert "<h1>Propriétaires injoignables</h1>" in unreachable.text
        header = table(await client.get("/ui/journal.csv"))[0]
        assert header[0] == "Date (Europe/Paris)"
        assert "Identifiant du destinataire" in header
        refused = await client.get("/ui/journal", params={"channel": "fax"})
        assert refused.status_code == 400
        assert "Le filtre « Canal » n'est pas valide" in html.unescape(refused.text)


async def test_a_stranger_is_sent_to_sign_in(system: System) -> None:
    async with browser(system) as client:
        for path in (
            "/ui/journal",
            "/ui/journal.csv?channel=sms",
            "/ui/unreachable",
            f"/ui/messages/{uuid.uuid4()}",
        ):
            answer = await client.get(path)
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/ui/login?next=")
