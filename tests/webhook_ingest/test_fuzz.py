"""Property tests: whatever a provider (or anyone) sends, the normalisers and signature
parsers answer a canonical, storable event or a refusal of their own (4xx), never
another exception; and signed batches of arbitrary JSON posted to a running ingest get
2xx or 4xx, never 5xx, while the tracker behind it goes on storing the next good event."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from provider_sandbox.signing import SendGridSigner, twilio_signature
from relaybook.platform.storable import has_unstorable
from relaybook.tooling.system import System
from tests.support import storable_everywhere, until
from webhook_ingest import WebhookError
from webhook_ingest.events import parse_batch, sendgrid_event, twilio_inbound, twilio_status
from webhook_ingest.signatures import SendGridVerifier, check_twilio_header, verify_twilio

SIGNER = SendGridSigner(ec.generate_private_key(ec.SECP256R1()))
TOKEN = "twilio-auth-token-for-fuzzing"
RECEIVED = "2026-11-26T10:00:00Z"
#: NUL and lone surrogates included: hypothesis leaves surrogates out by default
ANY_CHAR = st.characters(exclude_categories=())
TEXT = st.text(ANY_CHAR, max_size=30)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
#: SendGrid-shaped events with arbitrary values in the fields the normaliser reads
EVENTS = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(["delivered", "bounce", "open", "click", "deferred", "dropped"])
        | TEXT
        | JSON,
        "sg_event_id": st.text(ANY_CHAR, min_size=1, max_size=100) | JSON,
        "timestamp": st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=True, allow_infinity=True)
        | JSON,
        "email": TEXT | JSON,
        "delivery_id": st.uuids().map(str) | TEXT | JSON,
        "sg_message_id": TEXT | JSON,
        "reason": TEXT | JSON,
        "response": TEXT | JSON,
        "status": TEXT | JSON,
        "type": st.sampled_from(["bounce", "blocked"]) | TEXT | JSON,
        "bounce_classification": TEXT | JSON,
        "url": TEXT | JSON,
        "sg_machine_open": JSON,
        "attempt": st.integers() | TEXT | JSON,
        "extra": JSON,
    },
)
#: the text of a form as the ingest parses it (strict UTF-8: NUL included, no lone surrogate)
FORM_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
#: Twilio-shaped forms: arbitrary fields, and any of the fields the normalisers read, with
#: values of any shape (a MessageSid long enough to take the event id past its contract's
#: 200 characters included). Arbitrary names alone would almost never be "MessageSid"
FORMS = st.tuples(
    st.dictionaries(FORM_TEXT, FORM_TEXT, max_size=4),
    st.fixed_dictionaries(
        {},
        optional={
            "MessageSid": FORM_TEXT
            | st.text(st.characters(exclude_categories=("Cs",)), min_size=180, max_size=220),
            "MessageStatus": st.sampled_from(["queued", "sent", "delivered", "undelivered"])
            | FORM_TEXT,
            "To": FORM_TEXT,
            "From": FORM_TEXT,
            "Body": st.sampled_from(["STOP", " stop ", "START", "hello"]) | FORM_TEXT,
            "ErrorCode": st.sampled_from(["30003", "30007", "21610"]) | FORM_TEXT,
            "OptOutType": st.sampled_from(["STOP", "START", "HELP"]) | FORM_TEXT,
        },
    ),
).map(lambda pair: pair[0] | pair[1])
PROPERTIES = settings(
    max_examples=300,
    database=None,
    deadline=None,
    derandomize=True,  # the same examples in every CI run; run more by hand when these change
    suppress_health_check=[HealthCheck.too_slow],
)


def _canonical(event: dict[str, Any]) -> None:
    """What a consumer needs of an event: its contract, and JSON that orjson writes and
    PostgreSQL stores."""
    schemas.validate(event)
    orjson.dumps(event)
    assert storable_everywhere(event)


def refusal(call: Callable[[], Any]) -> int | None:
    """The status of the refusal ``call`` raised, or None when it returned."""
    try:
        call()
    except WebhookError as refused:
        return refused.status
    return None


@PROPERTIES
@given(raw=EVENTS | JSON)
def test_a_sendgrid_event_is_canonical_and_storable_or_malformed(raw: Any) -> None:
    made: list[dict[str, Any]] = []
    assert refusal(lambda: made.append(sendgrid_event(raw, 0, RECEIVED))) in {None, 400}
    for event in made:
        _canonical(event)


@PROPERTIES
@given(form=FORMS)
def test_a_twilio_form_is_canonical_and_storable_or_malformed(form: dict[str, str]) -> None:
    """A callback is refused (400) exactly when it lacks MessageSid or MessageStatus, an
    inbound text exactly when it lacks MessageSid or From. Otherwise the event is storable,
    and follows its contract, unless its event id (built from MessageSid) is over the
    contract's 200 characters: then the contract's check names ``event_id``, and the ingest,
    which checks every event before it publishes it, answers 400
    (test_ingest.py::test_a_bad_twilio_callback_is_refused)."""
    made: list[dict[str, Any]] = []
    status = refusal(lambda: made.append(twilio_status(form, str(uuid.uuid4()), RECEIVED)))
    assert status == (400 if not (form.get("MessageSid") and form.get("MessageStatus")) else None)
    inbound = refusal(lambda: made.append(twilio_inbound(form, RECEIVED)))
    assert inbound == (400 if not (form.get("MessageSid") and form.get("From")) else None)
    for event in made:
        orjson.dumps(event)
        assert storable_everywhere(event)
        if len(event["event_id"]) <= 200:
            schemas.validate(event)
        else:
            with pytest.raises(schemas.MessageError, match=r"^delivery-event/v1: event_id: "):
                schemas.validate(event)


@PROPERTIES
@given(body=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_body_parses_or_is_malformed(body: bytes) -> None:
    assert refusal(lambda: parse_batch(body)) in {None, 400}


@PROPERTIES
@given(signature=st.none() | TEXT, timestamp=st.none() | TEXT | st.integers().map(str))
def test_sendgrid_signature_headers_of_any_shape_are_refused_with_401_or_403(
    signature: str | None, timestamp: str | None
) -> None:
    verifier = SendGridVerifier([SIGNER.public_key], 300)

    def check() -> None:
        verifier.verify(b"[]", verifier.check_headers(signature, timestamp, time.time()))

    assert refusal(check) in {401, 403}


@PROPERTIES
@given(
    signature=st.none() | TEXT,
    params=st.lists(st.tuples(TEXT, TEXT).filter(lambda p: not has_unstorable("".join(p)))),
)
def test_twilio_signatures_of_any_shape_are_refused_with_401_or_403(
    signature: str | None, params: list[tuple[str, str]]
) -> None:
    url = "https://hooks.example.org/webhooks/twilio"

    def check(header: str | None) -> None:
        verify_twilio(TOKEN, url, params, check_twilio_header(TOKEN, header))

    assert refusal(lambda: check(signature)) in {401, 403}
    if len(dict(params)) == len(params):  # and the right signature is accepted
        assert refusal(lambda: check(twilio_signature(TOKEN, url, dict(params)))) is None


# --- signed batches of arbitrary JSON against a running ingest and tracker


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {
        "only": {"ingest", "tracker"},
        "sendgrid_webhook_public_keys": (SIGNER.public_key,),
        "twilio_auth_token": TOKEN,
    }


def _examples(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` values drawn by hypothesis (reproducibly) to post one by one."""
    drawn: list[Any] = []

    @settings(max_examples=count, database=None, derandomize=True, deadline=None)
    @given(strategy)
    def draw(value: Any) -> None:
        drawn.append(value)

    draw()
    return drawn


async def test_signed_batches_of_arbitrary_json_get_2xx_or_4xx_and_the_journal_goes_on(
    system: System, db: asyncpg.Connection
) -> None:
    batches = _examples(st.lists(EVENTS, min_size=1, max_size=5) | JSON, 250)
    answers: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=system.servers["ingest"].url, timeout=30) as ingest:
        for batch in batches:
            body = json.dumps(batch).encode()  # the standard library writes what orjson won't
            headers = {"Content-Type": "application/json", **SIGNER.headers(body, int(time.time()))}
            response = await ingest.post("/webhooks/sendgrid", content=body, headers=headers)
            answers[response.status_code] = answers.get(response.status_code, 0) + 1
            assert response.status_code < 500, (response.text, batch)

        good = uuid.uuid4().hex
        body = json.dumps(
            [{"event": "delivered", "sg_event_id": good, "timestamp": 1790000000, "email": "a@b.c"}]
        ).encode()
        headers = {"Content-Type": "application/json", **SIGNER.headers(body, int(time.time()))}
        assert (await ingest.post("/webhooks/sendgrid", content=body, headers=headers)).is_success

    async def stored() -> bool:
        return bool(
            await db.fetchval(
                "SELECT 1 FROM delivery_events WHERE event_id = $1", f"sendgrid:{good}"
            )
        )

    await until(stored, within=15)
    assert answers.get(200, 0) > 0, answers
    assert answers.get(400, 0) > 0, answers
