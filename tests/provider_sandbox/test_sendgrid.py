"""The sandbox's SendGrid, driven by the official SDK: requests validated like the real
API, events posted as signed JSON batches that SendGrid's own verifier accepts, each
scenario telling its story."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import pytest
from python_http_client.exceptions import (
    BadRequestsError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
)
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.mail import Category, Content, CustomArg, Mail, Personalization, To

from .conftest import Harness, until

LINK = "https://portal.example.org/deposit-calls/DC-2026-11"


def mail(*addresses: str, **custom: str) -> Mail:
    """One notice: one personalization per recipient, each with its own delivery id."""
    message = Mail(from_email="notices@syndic.example.org", subject="Deposit call Q4")
    message.add_content(Content("text/plain", f"Your deposit call: {LINK}"))
    message.add_content(Content("text/html", f'<p>Your <a href="{LINK}">deposit call</a></p>'))
    message.category = Category("deposit_call")
    for index, address in enumerate(addresses):
        personalization = Personalization()
        personalization.add_to(To(address))
        personalization.add_custom_arg(CustomArg("delivery_id", f"d-{index}"))
        for key, value in custom.items():
            personalization.add_custom_arg(CustomArg(key, value))
        message.add_personalization(personalization)
    return message


async def send(harness: Harness, message: Mail | dict[str, Any], **client: Any) -> Any:
    body = message.get() if isinstance(message, Mail) else message
    sg = harness.sendgrid(**client)
    return await asyncio.to_thread(sg.client.mail.send.post, request_body=body)


def verified_events(harness: Harness) -> list[dict[str, Any]]:
    """Every event received, after checking each batch with SendGrid's own verifier."""
    verifier = EventWebhook()
    key = verifier.convert_public_key_to_ecdsa(harness.sandbox.signer.public_key)
    events: list[dict[str, Any]] = []
    for post in harness.receiver.posts("/webhooks/sendgrid"):
        signature = post.headers["x-twilio-email-event-webhook-signature"]
        timestamp = post.headers["x-twilio-email-event-webhook-timestamp"]
        assert verifier.verify_signature(post.body.decode(), signature, timestamp, key)
        assert abs(int(timestamp) - time.time()) < 60
        batch = json.loads(post.body)
        assert isinstance(batch, list)
        events.extend(batch)
    return events


def story(events: list[dict[str, Any]], address: str) -> list[dict[str, Any]]:
    return [event for event in events if event["email"] == address]


async def test_a_valid_send_is_accepted_with_a_message_id(harness: Harness) -> None:
    response = await send(harness, mail("owner1@example.org"))
    assert response.status_code == 202
    assert response.body in (b"", "")
    message_id = response.headers["X-Message-Id"]
    assert len(message_id) >= 20
    [record] = harness.sandbox.messages
    assert record["to"] == "owner1@example.org"
    assert record["custom_args"] == {"delivery_id": "d-0"}
    assert record["sg_message_id"].startswith(message_id + ".")


@pytest.mark.parametrize("sandbox_options", [{"sandbox_webhooks": False}])
async def test_with_webhooks_off_sends_are_accepted_and_nothing_is_posted(
    harness: Harness,
) -> None:
    response = await send(harness, mail("owner1@example.org", "a@bounce.sandbox.test"))
    assert response.status_code == 202
    assert len(harness.sandbox.messages) == 2
    await asyncio.sleep(0.2)  # four batch intervals
    assert harness.receiver.received == []


async def test_every_email_scenario_tells_its_story_in_signed_batches(harness: Harness) -> None:
    addresses = [
        "a@bounce.sandbox.test",
        "b@full.sandbox.test",
        "c@blocked.sandbox.test",
        "d@spam.sandbox.test",
        "e@dropped.sandbox.test",
        "owner+click@example.org",
    ]
    response = await send(harness, mail(*addresses))
    message_id = response.headers["X-Message-Id"]
    await harness.drain()
    events = verified_events(harness)

    def kinds(address: str) -> list[str]:
        return [event["event"] for event in story(events, address)]

    assert kinds("a@bounce.sandbox.test") == ["processed", "bounce"]
    hard = story(events, "a@bounce.sandbox.test")[-1]
    assert (hard["type"], hard["status"], hard["bounce_classification"]) == (
        "bounce",
        "5.1.1",
        "Invalid Address",
    )
    assert kinds("b@full.sandbox.test") == ["processed", "deferred", "bounce"]
    full = story(events, "b@full.sandbox.test")
    assert full[1]["attempt"] == "1"
    assert (full[2]["status"], full[2]["bounce_classification"]) == ("5.2.2", "Mailbox Unavailable")
    assert kinds("c@blocked.sandbox.test") == ["processed", "bounce"]
    blocked = story(events, "c@blocked.sandbox.test")[-1]
    assert (blocked["type"], blocked["status"], blocked["bounce_classification"]) == (
        "blocked",
        "5.7.1",
        "Reputation",
    )
    assert kinds("d@spam.sandbox.test") == ["processed", "delivered", "spamreport"]
    assert kinds("e@dropped.sandbox.test") == ["dropped"]
    assert story(events, "e@dropped.sandbox.test")[0]["reason"] == "Bounced Address"
    clicked = story(events, "owner+click@example.org")
    assert [e["event"] for e in clicked if not e.get("sg_machine_open")] == [
        "processed",
        "delivered",
        "open",
        "click",
    ]
    assert clicked[-1]["url"] == LINK

    for event in events:
        assert len(event["sg_event_id"]) >= 20
        assert event["category"] == "deposit_call"
        assert isinstance(event["timestamp"], int)
        assert event["smtp-id"] == f"<{message_id}@ismtpd-sandbox>"
        if event["sg_message_id"]:  # asynchronous bounces carry neither id nor custom args
            assert event["sg_message_id"].startswith(message_id + ".")
            assert event["delivery_id"] == f"d-{addresses.index(event['email'])}"
    assert len({event["sg_event_id"] for event in events}) == len(events), "no duplicates asked"


@pytest.mark.parametrize(
    "sandbox_options",
    [
        {
            "sandbox_async_bounce_rate": 1.0,
            "sandbox_duplicate_rate": 0.0,
            "sandbox_reorder_rate": 0.0,
        }
    ],
)
async def test_asynchronous_bounces_come_without_message_id_or_custom_args(
    harness: Harness,
) -> None:
    await send(harness, mail("gone@bounce.sandbox.test", notice_id="n-1"))
    await harness.drain()
    processed, bounce = story(verified_events(harness), "gone@bounce.sandbox.test")
    assert processed["delivery_id"] == "d-0"
    assert bounce["sg_message_id"] == ""
    assert "delivery_id" not in bounce
    assert "notice_id" not in bounce
    assert bounce["email"] == "gone@bounce.sandbox.test", "the address is what is left to match"


@pytest.mark.parametrize(
    "sandbox_options",
    [
        {
            "sandbox_duplicate_rate": 0.2,
            "sandbox_reorder_rate": 0.3,
            "sandbox_open_rate": 1.0,
            "sandbox_click_rate": 0.0,
            "sandbox_machine_open_rate": 0.0,
        }
    ],
)
async def test_duplicates_and_disorder_happen_at_the_configured_rates(harness: Harness) -> None:
    await send(harness, mail(*(f"owner{i}@example.org" for i in range(200))))
    await harness.drain()
    posts = harness.receiver.posts("/webhooks/sendgrid")
    events = verified_events(harness)
    unique = {event["sg_event_id"] for event in events}
    assert len(unique) == 200 * 3  # processed, delivered, open
    duplicated = len(events) - len(unique)
    assert 0.12 * len(unique) < duplicated < 0.28 * len(unique), duplicated
    assert len(posts) > 1, "events are batched across several posts"
    position = {}
    for index, event in enumerate(events):
        position.setdefault(event["sg_event_id"], index)
    opened_first = sum(
        1
        for address in {event["email"] for event in events}
        if min(position[e["sg_event_id"]] for e in story(events, address) if e["event"] == "open")
        < min(
            position[e["sg_event_id"]] for e in story(events, address) if e["event"] == "delivered"
        )
    )
    assert opened_first > 10, "some opens arrive before their delivery"


@pytest.mark.parametrize("sandbox_options", [{"sandbox_seed": 7}])
async def test_the_same_seed_tells_the_same_story(harness: Harness, tmp_path: Any) -> None:
    from provider_sandbox.app import Sandbox  # noqa: PLC0415

    twin = Sandbox(harness.settings, harness.sandbox.credentials, harness.sandbox.signer)
    first = await send(harness, mail("x@example.org", "y@bounce.sandbox.test"))
    body = mail("x@example.org", "y@bounce.sandbox.test").get()
    from provider_sandbox import sendgrid  # noqa: PLC0415

    twin_id = sendgrid.random_id(twin.draw)
    assert twin_id == first.headers["X-Message-Id"]
    _, twin_events = sendgrid.accept(body, twin_id, twin.draw, twin.rates, twin.async_bounce_rate)
    await harness.drain()
    received = {e["sg_event_id"] for e in verified_events(harness)}
    assert received == {event["sg_event_id"] for _, event in twin_events}


async def test_a_receiver_answering_503_gets_the_batch_again_until_it_accepts(
    harness: Harness,
) -> None:
    harness.receiver.refuse = 2
    await send(harness, mail("owner@example.org"))
    await harness.drain()
    attempts = [post for post in harness.sandbox.poster.posts if post["provider"] == "sendgrid"]
    assert [post["status"] for post in attempts].count(503) == 2
    by_batch: dict[str, list[dict[str, Any]]] = {}
    for post in attempts:
        by_batch.setdefault(post["body"], []).append(post)
    for tries in by_batch.values():
        assert tries[-1]["status"] == 200, "every batch is accepted in the end"
        assert [t["attempt"] for t in tries] == list(range(1, len(tries) + 1))
    assert any(len(tries) > 1 for tries in by_batch.values()), "a refused batch came again"
    assert {e["event"] for e in verified_events(harness)} >= {"processed", "delivered"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "personalizations": [{"to": [{"email": "a@b.org"}]}],
                "subject": "s",
                "content": [{"type": "text/plain", "value": "x"}],
            },
            "from.email",
        ),
        (
            {
                "from": {"email": "n@x.org"},
                "subject": "s",
                "content": [{"type": "text/plain", "value": "x"}],
            },
            "personalizations",
        ),
        (
            {
                "from": {"email": "n@x.org"},
                "personalizations": [{"to": [{"email": "nope"}]}],
                "subject": "s",
                "content": [{"type": "text/plain", "value": "x"}],
            },
            "personalizations.0.to.0.email",
        ),
        (
            {
                "from": {"email": "n@x.org"},
                "personalizations": [{"to": [{"email": "a@b.org"}]}],
                "subject": "s",
            },
            "content",
        ),
        (
            {
                "from": {"email": "n@x.org"},
                "personalizations": [{"to": [{"email": "a@b.org"}]}],
                "content": [{"type": "text/plain", "value": "x"}],
            },
            "subject",
        ),
        (
            {
                "from": {"email": "n@x.org"},
                "personalizations": [{"to": [{"email": "a@b.org"}], "custom_args": {"n": 1}}],
                "subject": "s",
                "content": [{"type": "text/plain", "value": "x"}],
            },
            "personalizations.0.custom_args.n",
        ),
        (
            {
                "from": {"email": "n@x.org"},
                "personalizations": [{"to": [{"email": f"a{i}@b.org"}]} for i in range(1001)],
                "subject": "s",
                "content": [{"type": "text/plain", "value": "x"}],
            },
            "personalizations",
        ),
    ],
)
async def test_an_invalid_request_is_a_400_with_sendgrids_errors(
    harness: Harness, body: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequestsError) as raised:
        await send(harness, body)
    errors = json.loads(raised.value.body)["errors"]
    assert field in [problem["field"] for problem in errors]
    assert all(problem["message"] for problem in errors)
    assert harness.sandbox.messages == []


async def test_a_wrong_api_key_is_a_401(harness: Harness) -> None:
    with pytest.raises(UnauthorizedError):
        await send(harness, mail("a@example.org"), api_key="SG.wrong")


@pytest.mark.parametrize("sandbox_options", [{"sandbox_rate_limit": 2}])
async def test_over_the_rate_limit_is_a_429_with_the_reset_time(harness: Harness) -> None:
    answers: Counter[str] = Counter()
    refusals: list[TooManyRequestsError] = []
    for _ in range(6):
        try:
            await send(harness, mail("a@example.org"))
            answers["accepted"] += 1
        except TooManyRequestsError as refused:
            answers["limited"] += 1
            refusals.append(refused)
    reset = int(refusals[-1].headers["X-RateLimit-Reset"]) if refusals else None
    assert all(r.headers["X-RateLimit-Remaining"] == "0" for r in refusals)
    assert answers["limited"] >= 1
    assert answers["accepted"] >= 2
    assert reset is not None
    assert 0 < reset - time.time() <= 2


async def test_injected_faults_answer_the_next_requests_then_stop(
    harness: Harness, http: Any
) -> None:
    answer = await http.post(
        "/_sandbox/faults", json={"provider": "sendgrid", "status": 503, "count": 2}
    )
    assert answer.json() == {"provider": "sendgrid", "queued": 2}
    for _ in range(2):
        with pytest.raises(ServiceUnavailableError):
            await send(harness, mail("a@example.org"))
    await http.post("/_sandbox/faults", json={"provider": "sendgrid", "status": 429})
    with pytest.raises(TooManyRequestsError) as limited:
        await send(harness, mail("a@example.org"))
    assert "X-RateLimit-Reset" in limited.value.headers
    assert (await send(harness, mail("a@example.org"))).status_code == 202
    assert len(harness.sandbox.messages) == 1


async def test_a_delay_fault_lets_a_client_time_out_while_the_send_still_goes_out(
    harness: Harness, http: Any
) -> None:
    """As with SendGrid: a send that timed out may well have been sent."""
    await http.post("/_sandbox/faults", json={"provider": "sendgrid", "delay_s": 1.5})
    sg = harness.sendgrid()
    sg.client.timeout = 0.5
    with pytest.raises(TimeoutError):
        await asyncio.to_thread(
            sg.client.mail.send.post, request_body=mail("late@example.org").get()
        )
    await until(lambda: len(harness.sandbox.messages) == 1)


async def test_bad_fault_requests_are_refused(http: Any) -> None:
    answer = await http.post("/_sandbox/faults", json={"provider": "mailgun", "status": 503})
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_request"
