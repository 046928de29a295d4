"""The SendGrid payload is what the SDK's helpers build, and provider answers map to the
right outcome; the retry policy grows, jitters and honours the provider's reset."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from aiohttp import FormData
from sendgrid.helpers.mail import Category, Content, CustomArg, From, Mail, Personalization, To

from relaybook.tooling.settings import Settings
from send_worker.providers import Email, EmailContent, SendGrid, form
from send_worker.retry import Outcome, http_outcome, next_attempt


async def test_the_payload_is_exactly_what_the_sdk_helpers_build() -> None:
    sendgrid = SendGrid(Settings(sendgrid_api_key="SG.x", email_from_name="Syndic"))
    emails = [Email("d1", "n1", "a@example.org", "Ann"), Email("d2", "n1", "b@example.org", None)]
    content = EmailContent("Deposit call", "Pay now", "<p>Pay now</p>", "deposit_call")
    try:
        payload = sendgrid.payload(content, emails)
    finally:
        await sendgrid.close()
    mail = Mail(from_email=From("notices@relaybook.test", "Syndic"), subject="Deposit call")
    mail.add_content(Content("text/plain", "Pay now"))
    mail.add_content(Content("text/html", "<p>Pay now</p>"))
    mail.category = Category("deposit_call")
    for email in emails:
        personalization = Personalization()
        personalization.add_to(To(email.address, email.name))
        personalization.add_custom_arg(CustomArg("delivery_id", email.delivery_id))
        personalization.add_custom_arg(CustomArg("notice_id", email.notice_id))
        mail.add_personalization(personalization)
    expected = mail.get()

    def by_delivery(personalizations: list[dict[str, object]]) -> list[dict[str, object]]:
        # the SDK's helper prepends each personalization; their order means nothing
        return sorted(personalizations, key=lambda p: str(p["custom_args"]))

    assert by_delivery(payload.pop("personalizations")) == by_delivery(
        expected.pop("personalizations")
    )
    assert payload == expected


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (429, "transient", None),
        (500, "transient", None),
        (503, "transient", None),
        (400, "permanent", "400"),
        (401, "permanent", "401"),
        (413, "permanent", "413"),
    ],
)
def test_http_answers_map_to_outcomes(status: int, kind: str, code: str | None) -> None:
    outcome = http_outcome(status, "why", "1795377605")
    assert (outcome.kind, outcome.code) == (kind, code)
    assert outcome.retry_not_before == (1795377605.0 if status == 429 else None)


def test_backoff_grows_with_jitter_and_never_comes_before_the_reset() -> None:
    now = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    draw = random.Random(1)
    delays = [(next_attempt(n, now, draw) - now).total_seconds() for n in range(1, 12)]
    assert 1 <= delays[0] <= 2
    assert 2 <= delays[1] <= 4
    assert all(d <= 600 for d in delays)
    assert delays[-1] >= 300, "capped at 10 minutes, not below half of it"
    reset = now.timestamp() + 3600
    assert next_attempt(1, now, draw, reset).timestamp() == reset


def test_a_text_s_form_is_encoded_as_aiohttp_would_encode_it() -> None:
    data: dict[str, object] = {
        "To": "+33612345678",
        "Body": "Loyer dû : 1 200 € & charges = 80 €/mois?",
        "From": "+15005550006",
        "StatusCallback": "http://127.0.0.1:8081/webhooks/twilio?delivery_id=abc-123",
    }
    assert form(data) == FormData(data)()._value


def test_a_providers_words_are_kept_storable() -> None:
    """A NUL or a lone surrogate in a provider's error would fail the wave's outcome in
    PostgreSQL: they become U+FFFD, the rest is kept."""
    outcome = http_outcome(400, "bad\x00address \ud800", None)
    assert outcome.reason == "bad\ufffdaddress \ufffd"
    assert Outcome.accepted("id\x00").message_id == "id\ufffd"
