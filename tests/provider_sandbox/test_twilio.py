"""The sandbox's Twilio, driven by the official async SDK: messages created as Twilio
answers them, the magic test numbers refused with their codes, and signed status
callbacks that Twilio's own RequestValidator accepts."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from .conftest import Harness, until


@pytest.fixture
async def twilio(harness: Harness) -> AsyncIterator[Client]:
    client = harness.twilio()
    yield client
    await client.http_client.close()


def callback_url(harness: Harness, delivery_id: str) -> str:
    return f"{harness.receiver_url}/webhooks/twilio?delivery_id={delivery_id}"


def verified_callbacks(harness: Harness, path: str = "/webhooks/twilio") -> list[dict[str, str]]:
    """Every callback received, after checking its signature with Twilio's validator."""
    validator = RequestValidator(harness.sandbox.credentials.twilio_auth_token)
    callbacks = []
    for post in harness.receiver.posts(path):
        params = dict(parse_qsl(post.body.decode()))
        url = f"{harness.receiver_url}{post.path}" + (f"?{post.query}" if post.query else "")
        assert validator.validate(url, params, post.headers["x-twilio-signature"])
        assert post.headers["content-type"] == "application/x-www-form-urlencoded"
        callbacks.append(params | {"_query": post.query})
    return callbacks


async def create(harness: Harness, twilio: Client, to: str, delivery_id: str = "d-1") -> Any:
    return await twilio.messages.create_async(
        to=to,
        from_="+15005550006",
        body="Deposit call Q4: 1,250.00 EUR due on 1 December.",
        status_callback=callback_url(harness, delivery_id),
    )


async def test_a_message_is_created_and_its_callbacks_report_queued_sent_delivered(
    harness: Harness, twilio: Client
) -> None:
    message = await create(harness, twilio, "+33612345678")
    assert message.sid.startswith("SM")
    assert len(message.sid) == 34
    assert message.status == "queued"
    assert message.to == "+33612345678"
    assert message.account_sid == harness.sandbox.credentials.twilio_account_sid
    await harness.drain()
    callbacks = verified_callbacks(harness)
    assert [c["MessageStatus"] for c in callbacks] == ["queued", "sent", "delivered"]
    for callback in callbacks:
        assert callback["MessageSid"] == message.sid
        assert callback["_query"] == "delivery_id=d-1", "the delivery id rides in the URL"
        assert callback["To"] == "+33612345678"
        assert callback["ApiVersion"] == "2010-04-01"
        assert "ErrorCode" not in callback


@pytest.mark.parametrize("sandbox_options", [{"sandbox_webhooks": False}])
async def test_with_webhooks_off_messages_are_created_and_no_callback_is_posted(
    harness: Harness, twilio: Client
) -> None:
    message = await create(harness, twilio, "+33612345678")
    assert message.status == "queued"
    [record] = harness.sandbox.messages
    assert record["statuses"][-1] == "delivered"
    await harness.drain()  # with webhooks on, this waits for the story's three callbacks
    assert harness.receiver.received == []


@pytest.mark.parametrize(
    ("to", "statuses", "code"),
    [
        ("+15005553005", ["queued", "sent", "undelivered"], "30005"),
        ("+15005553003", ["queued", "sent", "undelivered"], "30003"),
        ("+15005553007", ["queued", "failed"], "30007"),
    ],
)
async def test_failing_numbers_end_undelivered_or_failed_with_their_error_code(
    harness: Harness, twilio: Client, to: str, statuses: list[str], code: str
) -> None:
    await create(harness, twilio, to)
    await harness.drain()
    callbacks = verified_callbacks(harness)
    assert [c["MessageStatus"] for c in callbacks] == statuses
    assert callbacks[-1]["ErrorCode"] == code


@pytest.mark.parametrize(
    ("to", "code"),
    [("+15005550001", 21211), ("+15005550004", 21610), ("+15005550009", 21614), ("0612", 21211)],
)
async def test_magic_numbers_are_refused_at_once_with_twilios_code(
    harness: Harness, twilio: Client, to: str, code: int
) -> None:
    with pytest.raises(TwilioRestException) as raised:
        await create(harness, twilio, to)
    assert raised.value.status == 400
    assert raised.value.code == code
    assert harness.sandbox.messages == []


async def test_wrong_credentials_are_a_401_with_code_20003(harness: Harness) -> None:
    from twilio.http.async_http_client import AsyncTwilioHttpClient  # noqa: PLC0415

    client = Client(
        harness.sandbox.credentials.twilio_account_sid,
        "wrong-token",
        http_client=AsyncTwilioHttpClient(timeout=10),
    )
    client.api.base_url = harness.url
    try:
        with pytest.raises(TwilioRestException) as raised:
            await client.messages.create_async(to="+33612345678", from_="+15005550006", body="x")
    finally:
        await client.http_client.close()
    assert (raised.value.status, raised.value.code) == (401, 20003)


async def test_missing_fields_are_refused_with_twilios_codes(
    harness: Harness, twilio: Client
) -> None:
    with pytest.raises(TwilioRestException) as raised:
        await twilio.messages.create_async(to="+33612345678", body="x")
    assert raised.value.code == 21603
    with pytest.raises(TwilioRestException) as raised:
        await twilio.messages.create_async(to="+33612345678", from_="+15005550006")
    assert raised.value.code == 21602


async def test_an_owner_texting_stop_is_posted_signed_and_blocks_the_number_until_start(
    harness: Harness, twilio: Client, http: Any
) -> None:
    answer = await http.post(
        "/_sandbox/twilio/inbound", json={"from": "+33687654321", "body": "Stop"}
    )
    assert answer.status_code == 202
    await until(lambda: len(harness.receiver.posts("/webhooks/twilio/inbound")) == 1)
    [inbound] = verified_callbacks(harness, "/webhooks/twilio/inbound")
    assert (inbound["From"], inbound["Body"], inbound["OptOutType"]) == (
        "+33687654321",
        "Stop",
        "STOP",
    )
    with pytest.raises(TwilioRestException) as raised:
        await create(harness, twilio, "+33687654321")
    assert raised.value.code == 21610

    await http.post("/_sandbox/twilio/inbound", json={"from": "+33687654321", "body": "START"})
    await until(lambda: len(harness.receiver.posts("/webhooks/twilio/inbound")) == 2)
    assert verified_callbacks(harness, "/webhooks/twilio/inbound")[1]["OptOutType"] == "START"
    assert (await create(harness, twilio, "+33687654321")).status == "queued"


async def test_injected_faults_reach_the_sdk_as_twilio_errors(
    harness: Harness, twilio: Client, http: Any
) -> None:
    await http.post("/_sandbox/faults", json={"provider": "twilio", "status": 503})
    with pytest.raises(TwilioRestException) as raised:
        await create(harness, twilio, "+33612345678")
    assert raised.value.status == 503
    assert (await create(harness, twilio, "+33612345678")).status == "queued"


async def test_a_callback_refused_with_503_is_posted_again(
    harness: Harness, twilio: Client
) -> None:
    harness.receiver.refuse = 1
    await create(harness, twilio, "+33612345678")
    await harness.drain()
    assert sorted(c["MessageStatus"] for c in verified_callbacks(harness)) == [
        "delivered",
        "queued",
        "sent",
    ]
    statuses = [p["status"] for p in harness.sandbox.poster.posts if p["provider"] == "twilio"]
    assert statuses.count(503) == 1


async def test_the_inspection_endpoint_lists_what_was_sent(
    harness: Harness, twilio: Client, http: Any
) -> None:
    message = await create(harness, twilio, "+33612345678", delivery_id="d-9")
    listed = (await http.get("/_sandbox/messages", params={"provider": "twilio"})).json()[
        "messages"
    ]
    assert [(m["sid"], m["to"], m["statuses"]) for m in listed] == [
        (message.sid, "+33612345678", ["queued", "sent", "delivered"])
    ]
    assert listed[0]["status_callback"].endswith("delivery_id=d-9")
    assert (await http.get("/_sandbox/messages", params={"to": "+330000"})).json() == {
        "messages": []
    }


async def test_the_sdks_list_call_finds_messages_by_recipient_and_date_sent_page_by_page(
    harness: Harness, twilio: Client
) -> None:
    """Twilio's Messages list as the official SDK calls it: ``To`` and ``DateSent>`` (the
    SDK's ``date_sent_after``, a date or a time) filter, newest first, the same resource
    as the create answer with ``date_sent`` and ``status`` as its story went, followed
    page by page through ``next_page_uri``."""
    created = [await create(harness, twilio, "+33612345678") for _ in range(5)]
    other = await create(harness, twilio, "+33687654321")
    await harness.drain()  # each story told: a status's callback is posted as it is reached
    today = dt.datetime.now(dt.UTC)

    listed = await twilio.messages.list_async(
        to="+33612345678", date_sent_after=today - dt.timedelta(minutes=1), page_size=2
    )
    assert [m.sid for m in listed] == [m.sid for m in reversed(created)]
    assert {m.status for m in listed} == {"delivered"}
    assert all(m.date_sent is not None and m.date_created is not None for m in listed)
    assert {m.body for m in listed} == {created[0].body}
    assert len(await twilio.messages.list_async(to="+33612345678", limit=3)) == 3
    on_the_day = await twilio.messages.list_async(date_sent_after=today.strftime("%Y-%m-%d"))
    assert {m.sid for m in on_the_day} == {m.sid for m in [*created, other]}
    assert await twilio.messages.list_async(date_sent_after=today + dt.timedelta(minutes=1)) == []
    assert await twilio.messages.list_async(from_="+15005550000") == []

    first = await twilio.messages.page_async(to="+33612345678", page_size=2)
    assert first._payload["next_page_uri"].startswith(
        f"/2010-04-01/Accounts/{harness.sandbox.credentials.twilio_account_sid}/Messages.json?"
    )
    assert first._payload["previous_page_uri"] is None
    assert (first._payload["page"], first._payload["start"], first._payload["end"]) == (0, 0, 1)
    later = await create(harness, twilio, "+33612345678")  # pages keep their place
    second = await first.next_page_async()
    assert [m.sid for m in second] == [created[2].sid, created[1].sid]
    assert (second._payload["page"], second._payload["start"]) == (1, 2)
    back = await second.previous_page_async()
    assert [m.sid for m in back] == [created[4].sid, created[3].sid]
    assert later.sid not in {m.sid for m in back}


async def test_a_text_never_sent_has_no_date_sent_and_no_date_sent_filter_finds_it(
    harness: Harness, http: Any
) -> None:
    """The list gives the resource the create call answered, as its story went on: a text
    that failed before reaching the carrier never gets a ``date_sent``, so it is listed
    without a date filter and not with one."""
    account = harness.sandbox.credentials.twilio_account_sid
    path = f"/2010-04-01/Accounts/{account}/Messages.json"
    auth = (account, harness.sandbox.credentials.twilio_auth_token)
    form = {"To": "+15005553007", "From": "+15005550006", "Body": "Deposit call Q4"}
    created = (await http.post(path, data=form, auth=auth)).json()
    async with asyncio.timeout(5):  # queued, then failed
        while True:
            page = (await http.get(path, params={"To": "+15005553007"}, auth=auth)).json()
            [listed] = page["messages"]
            if listed["status"] != "queued":
                break
            await asyncio.sleep(0.02)
    assert listed.keys() == created.keys()
    story = {"status", "date_updated"}
    assert {k: v for k, v in listed.items() if k not in story} == {
        k: v for k, v in created.items() if k not in story
    }
    assert (listed["status"], listed["date_sent"]) == ("failed", None)
    dated = {"To": "+15005553007", "DateSent>": dt.datetime.now(dt.UTC).date().isoformat()}
    assert (await http.get(path, params=dated, auth=auth)).json()["messages"] == []


async def test_the_list_refuses_bad_filters_and_wrong_credentials_as_twilio_does(
    harness: Harness, twilio: Client, http: Any
) -> None:
    account = harness.sandbox.credentials.twilio_account_sid
    path = f"/2010-04-01/Accounts/{account}/Messages.json"
    token = harness.sandbox.credentials.twilio_auth_token
    for params in ({"DateSent>": "yesterday"}, {"PageSize": "0"}, {"PageToken": "PAnope"}):
        answer = await http.get(path, params=params, auth=(account, token))
        assert (answer.status_code, answer.json()["code"]) == (400, 20001), params
    assert (await http.get(path, auth=(account, "wrong"))).status_code == 401
    answer = await http.get(path, params={"PageSize": "5000"}, auth=(account, token))
    assert answer.json()["page_size"] == 1000
