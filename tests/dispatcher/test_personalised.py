"""Personalised notices end to end (issue 35): each owner's own figures, in their
language, through the workers to the provider sandbox; the journal says what each message
went out as; a template that cannot serve every recipient is refused at creation."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from relaybook.notices.request import parse_notice
from relaybook.notices.store import NoticeStore
from relaybook.platform.kafka import Producer
from relaybook.tooling.system import System
from tests.send_worker.test_worker import queued_jobs, send_worker
from tests.support import until

DEPOSIT_CALL: dict[str, Any] = {
    "source": {"service": "accounting", "kind": "deposit_call", "reference": "DC-2027-Q1"},
    "title": "Appel de fonds T1 2027",
    "default_language": "fr",
    "email": {
        "subject": "Appel de fonds : {{ data.amount | money }}",
        "text": "Bonjour {{ recipient.name }}, lots {{ data.lots | join: ', ' }} :"
        " {{ data.amount | money }} avant le {{ data.due | date }}.",
        "html": "<p>Bonjour {{ recipient.name }}, {{ data.amount | money }}</p>",
    },
    "sms": {"text": "Appel de fonds {{ data.amount | money }} avant le {{ data.due | date }}"},
    "content": {
        "nl": {
            "email": {
                "subject": "Provisie-oproep: {{ data.amount | money }}",
                "text": "Beste {{ recipient.name }}, {{ data.amount | money }}"
                " voor {{ data.due | date }}.",
            },
            "sms": {"text": "Provisie {{ data.amount | money }} voor {{ data.due | date }}"},
        }
    },
    "recipients": [
        {
            "id": "owner-fr",
            "name": "Jeanne <Martin>",
            "email": "jeanne@example.org",
            "phone": "+33612345001",
            "data": {"amount": "1234.56", "due": "2027-01-15", "lots": ["A12", "C3"]},
        },
        {
            "id": "owner-nl",
            "name": "Pieter",
            "email": "pieter@example.org",
            "phone": "+32470000002",
            "language": "nl-BE",
            "data": {"amount": "310", "due": "2027-01-15", "lots": ["B7"]},
        },
    ],
    "send": True,
}


async def messages(sandbox: httpx.AsyncClient) -> list[dict[str, Any]]:
    return (await sandbox.get("/_sandbox/messages")).json()["messages"]  # type: ignore[no-any-return]


async def test_each_owner_gets_their_own_figures_in_their_language(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    created = await api.post("/v1/notices", json=DEPOSIT_CALL)
    assert created.status_code == 201, created.text

    async def all_four() -> bool:
        return len(await messages(sandbox)) == 4

    await until(all_four)
    by_to = {m["to"]: m for m in await messages(sandbox)}
    assert by_to["jeanne@example.org"]["subject"] == "Appel de fonds : 1\u202f234,56\xa0€"
    assert by_to["pieter@example.org"]["subject"] == "Provisie-oproep: €\xa0310,00"
    # in a text, plain spaces: CLDR's no-break ones would make it UCS-2
    assert by_to["+33612345001"]["body"] == "Appel de fonds 1 234,56 € avant le 15 janvier 2027"
    assert by_to["+32470000002"]["body"] == "Provisie € 310,00 voor 15 januari 2027"

    async def journaled() -> bool:
        page = (await api.get("/v1/journal", params={"notice_id": created.json()["id"]})).json()
        return all(item["content_sha256"] for item in page["items"])

    await until(journaled)
    items = (await api.get("/v1/journal", params={"notice_id": created.json()["id"]})).json()
    by_key = {(i["recipient_id"], i["channel"]): i for i in items["items"]}
    assert {key: item["language"] for key, item in by_key.items()} == {
        ("owner-fr", "email"): "fr",
        ("owner-fr", "sms"): "fr",
        ("owner-nl", "email"): "nl",
        ("owner-nl", "sms"): "nl",
    }
    text = by_key["owner-nl", "sms"]
    sent = "Provisie € 310,00 voor 15 januari 2027"
    assert text["content_sha256"] == hashlib.sha256(orjson.dumps({"text": sent})).hexdigest()
    assert text["segments"] == 1
    assert by_key["owner-fr", "email"]["segments"] is None
    assert await db.fetchval("SELECT language FROM recipients WHERE id = 'owner-nl'") == "nl-BE"


@pytest.mark.parametrize("system_options", [{"only": {"sandbox"}}])
@pytest.mark.parametrize(("subject", "requests"), [("{{ notice.title }}", 1), ("{{ data.n }}", 3)])
async def test_emails_alike_share_one_request_and_personal_ones_one_per_content(
    system: System,
    sandbox: httpx.AsyncClient,
    pool: asyncpg.Pool,
    producer: Producer,
    subject: str,
    requests: int,
) -> None:
    """One batch of one notice's 30 emails: content that names no recipient is rendered
    once and goes in one request; personal content goes in one request per distinct
    content (here 3 values of n), not one per recipient."""
    body = {
        "source": DEPOSIT_CALL["source"],
        "title": "AG 2027",
        "email": {"subject": subject, "text": "Convocation"},
        "recipients": [
            {"id": f"o{i}", "email": f"o{i}@example.org", "data": {"n": i % 3}} for i in range(30)
        ],
        "send": True,
    }
    _, answer = await NoticeStore(pool).create(
        parse_notice(body, dt.datetime.now(dt.UTC)), "test", None
    )
    jobs = await queued_jobs(pool, answer["id"])
    async with send_worker(system.settings, pool, producer) as worker:
        await worker.lane("email")(jobs)
    sent = await messages(sandbox)
    assert len(sent) == 30
    assert len({m["message_id"] for m in sent}) == requests


@pytest.mark.parametrize(
    ("change", "field", "detail"),
    [
        (
            {"recipients": [{"id": "a", "email": "a@example.org", "data": {"due": "2027-01-15"}}]},
            "recipients",
            "data.amount is used by the notice's content and missing from the data of a",
        ),
        ({"email": {"subject": "{% if %}", "text": "x"}}, "email.subject", "not a valid template"),
        ({"sms": {"text": "{{ data.amount | rm_rf }}"}}, "sms.text", "unknown filter: rm_rf"),
        (
            {"content": {"nl": {"sms": {"text": "{% include 'x' %}"}}}},
            "content.nl.sms.text",
            "unexpected tag 'include'",
        ),
        ({"content": {"fr": {"sms": {"text": "x"}}}}, "content.fr", "is the default language"),
        (
            {"content": {"nl": {"sms": {"text": "x"}}, "NL": {"sms": {"text": "y"}}}},
            "content.NL",
            "is content.nl again",
        ),
        (
            {"recipients": [{"id": "a", "email": "a@example.org", "data": {"x": "y" * 20_000}}]},
            "recipients[0].data",
            "is over 16384 bytes",
        ),
        ({"default_language": "français"}, "default_language", ""),
    ],
)
async def test_a_notice_whose_content_cannot_be_rendered_is_refused_and_nothing_is_created(
    api: httpx.AsyncClient, db: asyncpg.Connection, change: dict[str, Any], field: str, detail: str
) -> None:
    answer = await api.post("/v1/notices", json={**DEPOSIT_CALL, **change})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert detail in answer.json()["detail"]
    assert await db.fetchval("SELECT count(*) FROM notices") == 0
    assert await db.fetchval("SELECT count(*) FROM notice_data") == 0


async def test_the_preview_shows_a_recipients_messages_as_they_will_get_them(
    api: httpx.AsyncClient,
) -> None:
    draft = (await api.post("/v1/notices", json={**DEPOSIT_CALL, "send": False})).json()
    preview = await api.get(f"/v1/notices/{draft['id']}/preview", params={"recipient": "owner-nl"})
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert shown["recipient_id"] == "owner-nl"
    assert shown["email"]["language"] == "nl"
    assert shown["email"]["subject"] == "Provisie-oproep: €\xa0310,00"
    assert shown["email"]["html"] is None
    sms = "Provisie € 310,00 voor 15 januari 2027"
    assert shown["sms"] == {
        "language": "nl",
        "content_sha256": hashlib.sha256(orjson.dumps({"text": sms})).hexdigest(),
        "text": sms,
        "segments": 1,
        "encoding": "GSM-7",
    }
    french = await api.get(
        f"/v1/notices/{draft['id']}/preview", params={"recipient": "owner-fr", "channel": "email"}
    )
    assert set(french.json()) == {"notice_id", "recipient_id", "email"}
    assert (
        french.json()["email"]["html"] == "<p>Bonjour Jeanne &lt;Martin&gt;, 1\u202f234,56\xa0€</p>"
    )


async def test_the_preview_of_someone_the_notice_does_not_reach_is_404(
    api: httpx.AsyncClient,
) -> None:
    draft = (await api.post("/v1/notices", json={**DEPOSIT_CALL, "send": False})).json()
    path = f"/v1/notices/{draft['id']}/preview"
    assert (await api.get(path, params={"recipient": "nobody"})).status_code == 404
    assert (
        await api.get(path, params={"recipient": "owner-fr", "channel": "fax"})
    ).status_code == 422
    other = "/v1/notices/6f1d2b3c-4a5e-4f60-8172-93a4b5c6d7e8/preview"
    assert (await api.get(other, params={"recipient": "owner-fr"})).status_code == 404
