"""Classification, table-driven: every code and spelling the providers use, and above
all which failures are *not* the recipient's."""

from __future__ import annotations

from typing import Any

import pytest

from relaybook.reachability.classify import Kind, SmsCodes, classify


def email(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "channel": "email", **fields}


def sms(kind: str, code: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "channel": "sms", "provider_code": code, **fields}


def bounce(
    code: str | None, bounce_type: str = "bounce", label: str | None = None
) -> dict[str, Any]:
    return email(
        "bounced", provider_code=code, bounce_type=bounce_type, bounce_classification=label
    )


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        # hard: the mailbox does not exist
        (bounce("5.1.1", label="invalid address"), Kind.HARD),
        (bounce("5.1.10"), Kind.HARD),
        (bounce(None, label="invalid address"), Kind.HARD),
        (bounce("5.0.0", label="invalid"), Kind.HARD),
        (bounce("5.5.0"), Kind.HARD),
        (email("dropped", reason="Invalid"), Kind.HARD),
        # soft: try again later
        (bounce("5.2.2", label="mailbox unavailable"), Kind.SOFT),
        (bounce("4.2.2"), Kind.SOFT),
        (bounce("4.4.1", label="technical"), Kind.SOFT),
        (bounce(None, label="unclassified"), Kind.SOFT),
        (bounce(None), Kind.SOFT),
        # the sender's doing, never the recipient's
        (bounce("5.7.1", "blocked", "reputation"), Kind.SENDER_SIDE),
        (bounce("5.7.1", "bounce", "invalid address"), Kind.SENDER_SIDE),
        (bounce("4.7.0"), Kind.SENDER_SIDE),
        (bounce("5.0.0", "blocked", "content"), Kind.SENDER_SIDE),
        (bounce(None, "blocked", "frequency/volume"), Kind.SENDER_SIDE),
        (bounce(None, "blocked", "frequency or volume"), Kind.SENDER_SIDE),
        (email("dropped", reason="Spam Content (if spam checker app enabled)"), Kind.SENDER_SIDE),
        (email("failed", provider_code="400"), Kind.SENDER_SIDE),
        # complaints, provider suppressions, opt-outs
        (email("spam_reported"), Kind.COMPLAINT),
        (email("dropped", reason="Bounced Address"), Kind.PROVIDER_SUPPRESSED),
        (email("dropped", reason="Spam Reporting Address"), Kind.PROVIDER_SUPPRESSED),
        (email("dropped", reason="Unsubscribed Address"), Kind.PROVIDER_SUPPRESSED),
        (email("unsubscribed"), Kind.OPT_OUT),
        (email("group_unsubscribed"), Kind.OPT_OUT),
        (email("group_resubscribed"), Kind.OPT_IN),
        # successes and the rest
        (email("delivered"), Kind.SUCCESS),
        (email("opened", machine_open=True), Kind.SUCCESS),
        (email("clicked"), Kind.SUCCESS),
        (email("deferred", provider_code="4.2.2"), Kind.NEUTRAL),
        (email("processed"), Kind.NEUTRAL),
        (email("accepted"), Kind.NEUTRAL),
        (email("a_type_from_next_year"), Kind.NEUTRAL),
        # SMS
        (sms("undelivered", "30005"), Kind.HARD),
        (sms("undelivered", "30006"), Kind.HARD),
        (sms("failed", "21211"), Kind.HARD),
        (sms("failed", "21614"), Kind.HARD),
        (sms("undelivered", "30003"), Kind.SOFT),
        (sms("undelivered", "30008"), Kind.SOFT),
        (sms("failed", "30007"), Kind.SENDER_SIDE),
        (sms("failed", "unavailable"), Kind.SENDER_SIDE),
        (sms("failed", "400"), Kind.SENDER_SIDE),
        (sms("failed", "21610"), Kind.OPT_OUT),
        (sms("opted_out"), Kind.OPT_OUT),
        (sms("opted_in"), Kind.OPT_IN),
        (sms("delivered"), Kind.SUCCESS),
        (sms("read"), Kind.SUCCESS),
        (sms("sent"), Kind.NEUTRAL),
        (sms("inbound"), Kind.NEUTRAL),
    ],
)
def test_each_event_is_classified(event: dict[str, Any], kind: Kind) -> None:
    assert classify(event).kind is kind


def test_the_sms_code_tables_are_configuration() -> None:
    codes = SmsCodes(permanent=frozenset({"30003"}), transient=frozenset({"30005"}))
    assert classify(sms("undelivered", "30003"), codes).kind is Kind.HARD
    assert classify(sms("undelivered", "30005"), codes).kind is Kind.SOFT


def test_the_note_says_why_in_words() -> None:
    assert classify(bounce("5.1.1", label="Invalid Address")).note == (
        "hard bounce 5.1.1 (invalid address)"
    )
    assert classify(sms("undelivered", "30005")).note == "permanent SMS error 30005"
