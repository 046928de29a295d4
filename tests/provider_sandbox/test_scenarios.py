"""Scenarios and signatures as pure functions: the table of stories, and signatures that
the providers' own verifiers accept and that break when anything is touched."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from provider_sandbox.scenarios import Rates, email_story, sms_story
from provider_sandbox.signing import SendGridSigner, twilio_signature

NEVER = Rates(open=0, click=0, machine_open=0)
ALWAYS = Rates(open=1, click=1, machine_open=1)


def names(address: str, rates: Rates = NEVER) -> list[str]:
    return [name for _, name, _ in email_story(address, rates, random.Random(1), "https://x.org")]


@pytest.mark.parametrize(
    ("address", "story"),
    [
        ("a@bounce.sandbox.test", ["processed", "bounce"]),
        ("a@BOUNCE.sandbox.test", ["processed", "bounce"]),
        ("a@full.sandbox.test", ["processed", "deferred", "bounce"]),
        ("a@blocked.sandbox.test", ["processed", "bounce"]),
        ("a@spam.sandbox.test", ["processed", "delivered", "spamreport"]),
        ("a@dropped.sandbox.test", ["dropped"]),
        ("jo+click@example.org", ["processed", "delivered", "open", "click"]),
        ("jo@example.org", ["processed", "delivered"]),
    ],
)
def test_each_address_tells_its_story(address: str, story: list[str]) -> None:
    assert names(address) == story


def test_other_addresses_open_and_click_at_the_configured_rates() -> None:
    assert names("jo@example.org", ALWAYS) == ["processed", "delivered", "open", "open", "click"]
    draw = random.Random(3)
    stories = [email_story(f"o{i}@x.org", Rates(), draw, None) for i in range(2000)]
    human_opens = sum(
        any(n == "open" and not e.get("sg_machine_open") for _, n, e in s) for s in stories
    )
    clicks = sum(any(n == "click" for _, n, _ in s) for s in stories)
    assert 0.55 < human_opens / 2000 < 0.65
    assert 0.15 < clicks / 2000 < 0.21  # 0.6 open x 0.3 click


def test_events_happen_in_time_order_within_a_story() -> None:
    for address in ("a@full.sandbox.test", "jo+click@example.org", "a@spam.sandbox.test"):
        delays = [delay for delay, _, _ in email_story(address, ALWAYS, random.Random(1), None)]
        assert delays == sorted(delays)


@pytest.mark.parametrize(
    ("to", "statuses", "error", "sync_code"),
    [
        ("+33612345678", ("queued", "sent", "delivered"), None, None),
        ("+15005553005", ("queued", "sent", "undelivered"), 30005, None),
        ("+15005553003", ("queued", "sent", "undelivered"), 30003, None),
        ("+15005553007", ("queued", "failed"), 30007, None),
        ("+15005550001", (), None, 21211),
        ("+15005550004", (), None, 21610),
        ("+15005550009", (), None, 21614),
    ],
)
def test_each_number_has_its_outcome(
    to: str, statuses: tuple[str, ...], error: int | None, sync_code: int | None
) -> None:
    outcome, code = sms_story(to)
    assert outcome.statuses == statuses
    assert code == error
    assert outcome.error_code == sync_code


def test_sendgrid_signatures_pass_sendgrids_verifier_and_fail_when_touched(tmp_path: Path) -> None:
    signer = SendGridSigner.load_or_create(tmp_path / "key")
    assert oct((tmp_path / "key").stat().st_mode & 0o777) == "0o600"
    assert SendGridSigner.load_or_create(tmp_path / "key").public_key == signer.public_key
    body = b'[{"email":"a@b.org","event":"delivered","sg_event_id":"x"}]'
    headers = signer.headers(body, 1795377605)
    signature = headers["X-Twilio-Email-Event-Webhook-Signature"]
    timestamp = headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    verifier = EventWebhook(signer.public_key)
    assert verifier.verify_signature(body.decode(), signature, timestamp)
    assert not verifier.verify_signature(
        body.decode().replace("delivered", "bounce"), signature, timestamp
    )
    assert not verifier.verify_signature(body.decode(), signature, "1795377606")
    other = SendGridSigner.load_or_create(tmp_path / "other")
    assert not EventWebhook(other.public_key).verify_signature(body.decode(), signature, timestamp)
    base64.b64decode(signature, validate=True)


def test_twilio_signatures_match_twilios_validator() -> None:
    url = "https://hooks.example.org/webhooks/twilio?delivery_id=6f1d"
    params = {
        "MessageSid": "SM1",
        "MessageStatus": "delivered",
        "To": "+33612345678",
        "AccountSid": "AC1",
    }
    signature = twilio_signature("token-1", url, params)
    validator = RequestValidator("token-1")
    assert signature == validator.compute_signature(url, params)
    assert validator.validate(url, params, signature)
    assert not validator.validate(url, params | {"MessageStatus": "failed"}, signature)
    assert not RequestValidator("token-2").validate(url, params, signature)
