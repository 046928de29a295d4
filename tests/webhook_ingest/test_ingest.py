"""Webhook ingest on a real port and a real broker: signed SendGrid batches and Twilio
forms, built the way the providers build them (and checked with the SDKs' own
verifiers), become canonical delivery events; anything unsigned, forged, stale,
malformed or oversize is refused and publishes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

import schemas
from provider_sandbox.signing import SendGridSigner, twilio_signature
from relaybook.platform.http import create_app
from relaybook.platform.kafka import Producer, ensure_topics
from relaybook.tooling.embedded import EmbeddedBroker
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System
from schemas import CONTRACTS, TOPICS
from tests.support import own_tansu, read_topic, storable_everywhere, until
from webhook_ingest.app import routes

SIGNER = SendGridSigner(ec.generate_private_key(ec.SECP256R1()))
ROTATED = SendGridSigner(ec.generate_private_key(ec.SECP256R1()))
STRANGER = SendGridSigner(ec.generate_private_key(ec.SECP256R1()))
TOKEN = "twilio-auth-token-for-tests"
PUBLIC = "https://hooks.example.org/relay"
DELIVERY = str(uuid.uuid4())


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {
        "only": {"ingest"},
        "sendgrid_webhook_public_keys": (SIGNER.public_key, ROTATED.public_key),
        "twilio_auth_token": TOKEN,
        "public_webhook_base_url": PUBLIC,
        "ingest_max_body_bytes": 64 * 1024,
    }


@pytest.fixture
async def ingest(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.servers["ingest"].url, timeout=30) as client:
        yield client


def sendgrid_event(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "email": "owner@example.org",
        "timestamp": 1_790_000_000,
        "event": name,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "delivery_id": DELIVERY,
        **fields,
    }


def signed(body: bytes, signer: SendGridSigner = SIGNER, at: float | None = None) -> dict[str, str]:
    headers = signer.headers(body, int(time.time() if at is None else at))
    return {"Content-Type": "application/json", **headers}


def encode(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events).encode()


async def test_a_signed_batch_becomes_canonical_events_keyed_by_delivery(
    ingest: httpx.AsyncClient, system: System
) -> None:
    events = [
        sendgrid_event("processed"),
        sendgrid_event("delivered", response="250 OK"),
        sendgrid_event("open", sg_machine_open=True),
        sendgrid_event("open", sg_machine_open=False),
        sendgrid_event("click", url="https://portal.example.org/dc"),
        sendgrid_event(
            "bounce",
            type="bounce",
            status="5.1.1",
            reason="550 5.1.1 no such user",
            bounce_classification="Invalid Address",
        ),
        # an asynchronous bounce: no custom args, no message id
        sendgrid_event(
            "bounce", type="blocked", status="5.7.1", delivery_id=None, sg_message_id=""
        ),
        sendgrid_event("deferred", response="452 4.2.2 mailbox full", attempt="2"),
        sendgrid_event("a_type_sendgrid_adds_next_year", shiny=True),
    ]
    body = encode(events)
    headers = signed(body)
    # the SDK's own verifier agrees with the way the test signs
    webhook = EventWebhook()
    assert webhook.verify_signature(
        body.decode(),
        headers["X-Twilio-Email-Event-Webhook-Signature"],
        headers["X-Twilio-Email-Event-Webhook-Timestamp"],
        webhook.convert_public_key_to_ecdsa(SIGNER.public_key),
    )

    response = await ingest.post("/webhooks/sendgrid", content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"received": len(events)}
    published = await read_topic(system.settings, "delivery-events", len(events))
    assert len(published) == len(events)
    by_id = {value["event_id"]: (key, value) for key, value in published}
    for raw in events:
        key, value = by_id[f"sendgrid:{raw['sg_event_id']}"]
        schemas.validate(value)
        assert value["raw"] == raw
        assert key == (value["delivery_id"] or "owner@example.org")
    types = [by_id[f"sendgrid:{raw['sg_event_id']}"][1] for raw in events]
    assert [t["type"] for t in types] == [
        "processed",
        "delivered",
        "opened",
        "opened",
        "clicked",
        "bounced",
        "bounced",
        "deferred",
        "a_type_sendgrid_adds_next_year",
    ]
    assert [t["machine_open"] for t in types[2:4]] == [True, False]
    assert types[4]["url"] == "https://portal.example.org/dc"
    hard = types[5]
    assert (hard["bounce_type"], hard["provider_code"], hard["bounce_classification"]) == (
        "bounce",
        "5.1.1",
        "invalid address",
    )
    assert hard["reason"] == "550 5.1.1 no such user"
    assert hard["delivery_id"] == DELIVERY
    blocked = types[6]
    assert (blocked["delivery_id"], blocked["provider_message_id"]) == (None, None)
    assert blocked["address"] == "owner@example.org"
    assert (types[7]["attempt"], types[7]["reason"]) == (2, "452 4.2.2 mailbox full")
    assert types[0]["occurred_at"] == "2026-09-21T14:13:20Z"


async def test_either_configured_key_is_accepted_so_keys_can_rotate(
    ingest: httpx.AsyncClient, system: System
) -> None:
    for signer in (SIGNER, ROTATED):
        body = encode([sendgrid_event("delivered")])
        response = await ingest.post(
            "/webhooks/sendgrid", content=body, headers=signed(body, signer)
        )
        assert response.status_code == 200, response.text
    await read_topic(system.settings, "delivery-events", 2)


@pytest.mark.parametrize(
    ("tamper", "status", "code"),
    [
        ("missing", 401, "missing_signature"),
        ("unknown key", 403, "invalid_signature"),
        ("stale", 403, "stale_signature"),
        ("from the future", 403, "stale_signature"),
        ("not base64", 403, "invalid_signature"),
        ("body changed", 403, "invalid_signature"),
        ("timestamp changed", 403, "invalid_signature"),
    ],
)
async def test_an_unproven_batch_is_refused_and_publishes_nothing(
    ingest: httpx.AsyncClient, system: System, tamper: str, status: int, code: str
) -> None:
    body = encode([sendgrid_event("delivered")])
    headers = signed(body)
    if tamper == "missing":
        del headers["X-Twilio-Email-Event-Webhook-Signature"]
    elif tamper == "unknown key":
        headers = signed(body, STRANGER)
    elif tamper == "stale":
        headers = signed(body, at=time.time() - 301)
    elif tamper == "from the future":
        headers = signed(body, at=time.time() + 301)
    elif tamper == "not base64":
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "not*base64!"
    elif tamper == "body changed":
        body = body.replace(b"delivered", b"bounce")
    else:
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(time.time()) - 1)

    response = await ingest.post("/webhooks/sendgrid", content=body, headers=headers)

    assert response.status_code == status
    assert response.json()["error"] == code
    await _nothing_published(system)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[{not json", "the body is not JSON"),
        (b'{"event": "delivered"}', "the body is not a JSON array of events"),
        (b'[{"event": "delivered", "timestamp": 1}]', "event 0: `sg_event_id` must be"),
        (b'[{"event": "open", "sg_event_id": "a", "timestamp": "x"}]', "event 0: `timestamp`"),
        (b'[{"sg_event_id": "a", "timestamp": 1}, 3]', "event 0: `event` must be"),
    ],
)
async def test_a_malformed_batch_is_refused_whole(
    ingest: httpx.AsyncClient, system: System, body: bytes, detail: str
) -> None:
    response = await ingest.post("/webhooks/sendgrid", content=body, headers=signed(body))

    assert response.status_code == 400
    assert response.json()["error"] == "malformed"
    assert response.json()["detail"].startswith(detail)
    await _nothing_published(system)


async def test_an_oversize_body_is_refused_before_it_is_read(
    ingest: httpx.AsyncClient, system: System
) -> None:
    body = encode([sendgrid_event("delivered", filler="x" * 70_000)])
    response = await ingest.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length to trust
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = await ingest.post("/webhooks/sendgrid", content=chunked(), headers=signed(body))
    assert response.status_code == 413
    await _nothing_published(system)


def twilio_form(status: str = "delivered", **fields: str) -> dict[str, str]:
    return {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "MessageSid": "SM" + uuid.uuid4().hex,
        "MessageStatus": status,
        "SmsSid": "SM0",
        "SmsStatus": status,
        "To": "+33612345678",
        **fields,
    }


def twilio_headers(url: str, form: dict[str, str]) -> dict[str, str]:
    signature = twilio_signature(TOKEN, url, form)
    assert RequestValidator(TOKEN).validate(url, form, signature)  # the SDK agrees
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signature,
    }


async def test_twilio_callbacks_are_verified_against_the_public_url_behind_a_proxy(
    ingest: httpx.AsyncClient, system: System
) -> None:
    path = f"/webhooks/twilio?delivery_id={DELIVERY}"
    failed = twilio_form("undelivered", ErrorCode="30005")
    delivered = twilio_form("delivered")
    stop = twilio_form("received", Body=" stop ", From="+33698765432")

    # signed for the URL this process sees (not the one Twilio was given): refused
    local = twilio_headers(str(ingest.base_url) + path, delivered)
    refused = await ingest.post(path, content=urlencode(delivered), headers=local)
    assert (refused.status_code, refused.json()["error"]) == (403, "invalid_signature")

    for form in (failed, delivered):
        answer = await ingest.post(
            path, content=urlencode(form), headers=twilio_headers(PUBLIC + path, form)
        )
        assert answer.status_code == 204, answer.text
    inbound = "/webhooks/twilio/inbound"
    answer = await ingest.post(
        inbound, content=urlencode(stop), headers=twilio_headers(PUBLIC + inbound, stop)
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    assert "<Response>" in answer.text

    published = {
        value["event_id"]: (key, value)
        for key, value in await read_topic(system.settings, "delivery-events", 3)
    }
    assert len(published) == 3
    key, event = published[f"twilio:{failed['MessageSid']}:undelivered"]
    assert key == DELIVERY
    assert (event["type"], event["provider_code"], event["delivery_id"]) == (
        "undelivered",
        "30005",
        DELIVERY,
    )
    assert event["reason"] == "Unknown destination handset"
    assert event["raw"] == failed
    key, event = published[f"twilio:{stop['MessageSid']}:opted_out"]
    assert (key, event["type"], event["delivery_id"]) == ("+33698765432", "opted_out", None)
    for _, value in published.values():
        schemas.validate(value)


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ("no signature", 401, "missing_signature"),
        ("field added", 403, "invalid_signature"),
        ("query changed", 403, "invalid_signature"),
        ("json body", 415, "unsupported_media_type"),
        ("no MessageSid", 400, "malformed"),
        ("event id past the contract", 400, "malformed"),
    ],
)
async def test_a_bad_twilio_callback_is_refused(
    ingest: httpx.AsyncClient, system: System, change: str, status: int, code: str
) -> None:
    path = f"/webhooks/twilio?delivery_id={DELIVERY}"
    form = twilio_form()
    headers = twilio_headers(PUBLIC + path, form)
    if change == "no signature":
        del headers["X-Twilio-Signature"]
    elif change == "field added":
        form["ErrorCode"] = "30005"
    elif change == "query changed":
        path = f"/webhooks/twilio?delivery_id={uuid.uuid4()}"
    elif change == "json body":
        headers["Content-Type"] = "application/json"
    elif change == "event id past the contract":  # twilio:<sid>:delivered, 200 at most
        form["MessageSid"] = "SM" + "0" * 200
        headers = twilio_headers(PUBLIC + path, form)
    else:
        del form["MessageSid"]
        headers = twilio_headers(PUBLIC + path, form)

    response = await ingest.post(path, content=urlencode(form), headers=headers)

    assert response.status_code == status
    assert response.json()["error"] == code
    if change == "event id past the contract":
        assert "event_id" in response.json()["detail"]
    await _nothing_published(system)


async def _nothing_published(system: System) -> None:
    published = await read_topic(system.settings, "delivery-events", 0, within=0.5)
    assert published == []


async def test_while_the_broker_is_away_batches_get_503_and_are_recorded_once_it_is_back(
    settings: Settings,
) -> None:
    """Nothing is lost: the provider keeps posting a refused batch until it is accepted."""
    broker = EmbeddedBroker()
    own = dataclasses.replace(
        settings,
        **own_tansu(broker.start()),
        sendgrid_webhook_public_keys=(SIGNER.public_key,),
        ingest_publish_timeout_s=1.0,
    )
    producer = Producer(own, CONTRACTS)
    try:
        await ensure_topics(own, TOPICS)
        await producer.start()
        app = create_app("ingest", routes=routes(own, producer), checks={})
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest"
        ) as client:
            first = encode([sendgrid_event("delivered")])
            assert (
                await client.post("/webhooks/sendgrid", content=first, headers=signed(first))
            ).status_code == 200
            broker.stop()

            refused = encode([sendgrid_event("bounce", type="bounce", status="5.1.1")])
            response = await client.post(
                "/webhooks/sendgrid", content=refused, headers=signed(refused)
            )
            assert response.status_code == 503
            assert response.headers["Retry-After"].isdigit()
            assert response.json()["error"] == "unavailable"

            broker = EmbeddedBroker(broker.port)  # back, empty (the broker keeps no data)
            broker.start()
            await ensure_topics(own, TOPICS)

            async def accepted() -> bool:
                retry = await client.post(
                    "/webhooks/sendgrid", content=refused, headers=signed(refused)
                )
                return retry.status_code == 200

            await until(accepted, within=30)
        published = await read_topic(own, "delivery-events", 1)
        assert {value["type"] for _, value in published} == {"bounced"}
    finally:
        await producer.stop()
        broker.stop()


@pytest.mark.parametrize(
    ("signature", "timestamp", "status"),
    [
        (None, "now", 401),
        ("good", None, 401),
        ("good", "²", 403),  # str.isdigit() says yes, int() says no
        ("good", "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\uff10", 403),  # fullwidth
        ("good", "-1", 403),
        ("good", "1e9", 403),
        ("good", "9" * 40, 403),
        ("é" * 20, "now", 403),
        ("A" * 5000, "now", 403),
        ("not base64!", "now", 403),
    ],
)
async def test_a_sendgrid_signature_header_of_any_shape_is_refused_before_the_body_is_read(
    ingest: httpx.AsyncClient,
    system: System,
    signature: str | None,
    timestamp: str | None,
    status: int,
) -> None:
    """The body is oversize: a 401/403 (not 413) shows the headers were judged first."""
    body = encode([sendgrid_event("delivered", filler="x" * 70_000)])
    good = signed(body)
    headers: dict[str, bytes] = {"Content-Type": b"application/json"}
    if signature is not None:
        value = good["X-Twilio-Email-Event-Webhook-Signature"] if signature == "good" else signature
        headers["X-Twilio-Email-Event-Webhook-Signature"] = value.encode("utf-8")
    if timestamp is not None:
        value = good["X-Twilio-Email-Event-Webhook-Timestamp"] if timestamp == "now" else timestamp
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = value.encode("utf-8")

    response = await ingest.post("/webhooks/sendgrid", content=body, headers=headers)

    assert response.status_code == status, response.text
    await _nothing_published(system)


@pytest.mark.parametrize(
    ("signature", "status"),
    [(None, 401), ("é" * 28, 403), ("A" * 27, 403), ("A" * 5000, 403), ("Ā" * 28, 403)],
)
async def test_a_twilio_signature_header_of_any_shape_is_refused_before_the_body_is_read(
    ingest: httpx.AsyncClient, system: System, signature: str | None, status: int
) -> None:
    headers = {"Content-Type": b"application/json"}  # judged after the signature
    if signature is not None:
        headers["X-Twilio-Signature"] = signature.encode("utf-8")
    response = await ingest.post("/webhooks/twilio", content=b"x" * 70_000, headers=headers)
    assert response.status_code == status, response.text
    await _nothing_published(system)


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("fragment", "check"),
    [
        # what PostgreSQL cannot store: the event is kept, its texts made storable, its
        # raw payload kept to the byte as escaped JSON
        (r'"reason": "mailbox\u0000full", "type": "bounce"', "nul"),
        (r'"reason": "half \ud800 a pair", "type": "bounce"', "surrogate"),
        (r'"reason": "fine", "huge": 123456789012345678901234567890', "huge"),
        ('"reason": "fine", "nested": ' + _deep(300), "deep"),
        (r'"reason": "fine", "attempt": "²"', "superscript"),
    ],
)
async def test_a_signed_event_with_unstorable_content_is_kept_harmlessly(
    ingest: httpx.AsyncClient, system: System, fragment: str, check: str
) -> None:
    event_id = uuid.uuid4().hex
    body = (
        f'[{{"event": "bounce", "email": "owner@example.org", "timestamp": 1790000000, '
        f'"sg_event_id": "{event_id}", "delivery_id": "{DELIVERY}", {fragment}}}]'
    ).encode()
    response = await ingest.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    [(_, event)] = await read_topic(system.settings, "delivery-events", 1)
    schemas.validate(event)
    assert event["event_id"] == f"sendgrid:{event_id}"
    assert storable_everywhere(event)
    if check == "nul":
        assert event["reason"] == "mailbox\ufffdfull"
        assert json.loads(event["raw"]["escaped_json"])["reason"] == "mailbox\x00full"
    elif check == "surrogate":
        assert event["reason"] == "half \ufffd a pair"
        assert json.loads(event["raw"]["escaped_json"])["reason"] == "half \ud800 a pair"
    elif check == "huge":
        assert event["raw"]["reason"] == "fine"
    elif check == "deep":
        assert json.loads(event["raw"]["escaped_json"])["nested"] == json.loads(_deep(300))


async def test_a_signed_batch_nested_past_the_parsers_limit_is_malformed(
    ingest: httpx.AsyncClient, system: System
) -> None:
    body = f"[{_deep(5000)}]".encode()
    response = await ingest.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert (response.status_code, response.json()["error"]) == (400, "malformed")
    await _nothing_published(system)


async def test_a_twilio_form_with_a_nul_is_kept_harmlessly(
    ingest: httpx.AsyncClient, system: System
) -> None:
    path = f"/webhooks/twilio?delivery_id={DELIVERY}"
    form = twilio_form("undelivered", ErrorCode="3000\x005", Body="STOP\x00")
    response = await ingest.post(
        path, content=urlencode(form), headers=twilio_headers(PUBLIC + path, form)
    )
    assert response.status_code == 204, response.text
    [(_, event)] = await read_topic(system.settings, "delivery-events", 1)
    assert event["provider_code"] == "3000\ufffd5"
    assert storable_everywhere(event)


#: the largest body ingest takes by default (RELAYBOOK_INGEST_MAX_BODY_BYTES): a SendGrid
#: batch may be that large, a Twilio callback never
DEFAULT_MAX_BODY = 4 * 1024 * 1024
TWILIO_ROUTES = ("/webhooks/twilio", "/webhooks/twilio/inbound")
DEFAULT_LIMITS = {
    "only": {"ingest"},
    "twilio_auth_token": TOKEN,
    "public_webhook_base_url": PUBLIC,
    "ingest_max_body_bytes": DEFAULT_MAX_BODY,
}


def _large_form(size: int) -> bytes:
    """A form of ``size`` bytes of tiny fields: the costliest kind to parse."""
    return (b"a=1&" * (size // 4 + 1))[:size]


@pytest.mark.timing
@pytest.mark.parametrize("system_options", [DEFAULT_LIMITS])
async def test_four_large_forms_with_a_bogus_signature_never_hold_up_healthz(
    ingest: httpx.AsyncClient, system: System
) -> None:
    """Four 4 MiB forms posted at once with a well-shaped but bogus signature (two with
    their length, two chunked) are refused with a 413 (a Twilio callback is a few hundred
    bytes), and meanwhile every /healthz answers within 100 ms: no large form is read
    whole, nor parsed on the event loop."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "A" * 28}
    body = _large_form(DEFAULT_MAX_BODY)
    posted = asyncio.Event()
    latencies: list[float] = []

    async def poll_healthz() -> None:
        async with httpx.AsyncClient(base_url=str(ingest.base_url), timeout=30) as health:
            while not posted.is_set() or len(latencies) < 5:
                started = time.perf_counter()
                answer = await health.get("/healthz")
                latencies.append(time.perf_counter() - started)
                assert answer.status_code == 200

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    async def post(path: str, chunked: bool) -> list[object]:
        content = chunks() if chunked else body
        answer = await ingest.post(path, content=content, headers=headers)
        return [answer.status_code, answer.json()["error"]]

    polling = asyncio.create_task(poll_healthz())
    await until(lambda: asyncio.sleep(0, bool(latencies)))  # polling before the posts
    answers = await asyncio.gather(*(post(TWILIO_ROUTES[i % 2], i < 2) for i in range(4)))
    posted.set()
    await polling

    assert max(latencies) < 0.1, f"slowest /healthz: {max(latencies) * 1000:.0f} ms"
    assert answers == [[413, "payload_too_large"]] * 4
    await _nothing_published(system)


@pytest.mark.parametrize("system_options", [DEFAULT_LIMITS])
@pytest.mark.parametrize("path", TWILIO_ROUTES)
async def test_a_twilio_body_over_64_kib_is_refused_as_it_streams_in(
    ingest: httpx.AsyncClient, system: System, path: str
) -> None:
    """Over 64 KiB, a Twilio route answers 413 though the ingest's own limit is 4 MiB:
    before any of the body is sent when its Content-Length is over, and as soon as a
    chunked body passes the cap, while its sender is still sending (never after its
    end). A signed form of 64 KiB exactly is taken."""
    headers = twilio_headers(PUBLIC + path, twilio_form())
    declared = await _answer_while_sending(
        ingest, path, {**headers, "Content-Length": str(DEFAULT_MAX_BODY)}, b""
    )
    assert declared.startswith(b"HTTP/1.1 413 "), declared
    chunk = b"a=1&" * 2048
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10))  # 80 KiB
    chunked = await _answer_while_sending(
        ingest, path, {**headers, "Transfer-Encoding": "chunked"}, chunks
    )
    assert chunked.startswith(b"HTTP/1.1 413 "), chunked

    form = twilio_form("delivered", Body="")
    form["Body"] = "x" * (64 * 1024 - len(urlencode(form)))
    assert len(urlencode(form)) == 64 * 1024
    taken = await ingest.post(
        path, content=urlencode(form), headers=twilio_headers(PUBLIC + path, form)
    )
    assert taken.status_code in {200, 204}, taken.text
    assert len(await read_topic(system.settings, "delivery-events", 1)) == 1


async def _answer_while_sending(
    ingest: httpx.AsyncClient, path: str, headers: dict[str, str], body: bytes
) -> bytes:
    """The status line ingest answers to a POST of which only the head and ``body`` were
    sent, the rest of the body never (fails if none comes within 10 s)."""
    url = ingest.base_url
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


async def test_a_twilio_form_of_over_200_fields_is_refused_and_200_are_taken(
    ingest: httpx.AsyncClient, system: System
) -> None:
    """A Twilio callback has a few dozen fields: past 200 (counted before parsing) the
    form is refused whole, however small; 200 fields, signed, are taken."""
    path = f"/webhooks/twilio?delivery_id={DELIVERY}"
    base = twilio_form("delivered")
    taken = {**base, **{f"Extra{i}": "" for i in range(200 - len(base))}}
    answer = await ingest.post(
        path, content=urlencode(taken), headers=twilio_headers(PUBLIC + path, taken)
    )
    assert answer.status_code == 204, answer.text
    assert len(await read_topic(system.settings, "delivery-events", 1)) == 1

    refused = {**taken, "OneTooMany": ""}
    answer = await ingest.post(
        path, content=urlencode(refused), headers=twilio_headers(PUBLIC + path, refused)
    )
    assert (answer.status_code, answer.json()["error"]) == (413, "payload_too_large")
    assert "200 fields" in answer.json()["detail"]


@pytest.mark.parametrize(
    "system_options",
    [{**DEFAULT_LIMITS, "sendgrid_webhook_public_keys": (SIGNER.public_key,)}],
)
async def test_a_large_sendgrid_batch_is_judged_off_the_loop_as_a_small_one_is(
    ingest: httpx.AsyncClient, system: System
) -> None:
    """A batch over 64 KiB is verified, parsed and normalised on a worker thread: signed,
    it is taken whole; forged, it is refused 403; signed but not an array, 400."""
    events = [sendgrid_event("delivered", response="250 OK") for _ in range(400)]
    body = encode(events)
    assert len(body) > 64 * 1024
    forged = await ingest.post("/webhooks/sendgrid", content=body, headers=signed(body, STRANGER))
    assert (forged.status_code, forged.json()["error"]) == (403, "invalid_signature")
    shapeless = json.dumps({"events": events}).encode()
    refused = await ingest.post("/webhooks/sendgrid", content=shapeless, headers=signed(shapeless))
    assert (refused.status_code, refused.json()["error"]) == (400, "malformed")

    taken = await ingest.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert taken.json() == {"received": 400}
    published = await read_topic(system.settings, "delivery-events", 400)
    assert {value["event_id"] for _, value in published} == {
        f"sendgrid:{event['sg_event_id']}" for event in events
    }
