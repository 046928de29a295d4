"""What happens to a message in the sandbox, chosen by its address. Pure and table-driven:
the same address, rates and random draws always give the same story.

Email, by domain (or local part):

=========================  ===================================================
``bounce.sandbox.test``    processed, then hard bounce 5.1.1 (Invalid Address)
``full.sandbox.test``      processed, deferred 4.2.2, then bounce 5.2.2 (Mailbox
                           Unavailable: soft)
``blocked.sandbox.test``   processed, then ``type: blocked`` 5.7.1 (Reputation:
                           the sender's fault, not the recipient's)
``spam.sandbox.test``      processed, delivered, then spamreport
``dropped.sandbox.test``   dropped, "Bounced Address" (the provider suppresses it)
local part with ``+click`` processed, delivered, open, click
anything else              processed, delivered; open and click at the configured
                           rates, machine opens (Apple MPP) too
=========================  ===================================================

SMS, by the end of the number: ``3005`` undelivered 30005, ``3003`` undelivered 30003,
``3007`` failed 30007, anything else sent then delivered. Twilio's magic numbers fail at
once, as Twilio answers them: ``+15005550001`` 21211, ``+15005550004`` 21610,
``+15005550009`` 21614.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

#: (delay after the send in seconds, SendGrid event name, extra fields)
EmailStep = tuple[float, str, dict[str, Any]]

_HARD_BOUNCE = {
    "type": "bounce",
    "status": "5.1.1",
    "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
    "bounce_classification": "Invalid Address",
}
_MAILBOX_FULL = {
    "type": "bounce",
    "status": "5.2.2",
    "reason": "552 5.2.2 The email account that you tried to reach is over quota.",
    "bounce_classification": "Mailbox Unavailable",
}
_BLOCKED = {
    "type": "blocked",
    "status": "5.7.1",
    "reason": "550 5.7.1 Service unavailable; client host blocked using a reputation list",
    "bounce_classification": "Reputation",
}
_DELIVERED = {"response": "250 2.0.0 OK", "tls": 1}

_DOMAINS: dict[str, list[EmailStep]] = {
    "bounce.sandbox.test": [(0.0, "processed", {}), (0.05, "bounce", _HARD_BOUNCE)],
    "full.sandbox.test": [
        (0.0, "processed", {}),
        (0.03, "deferred", {"response": "452 4.2.2 Mailbox full, try again later", "attempt": "1"}),
        (0.08, "bounce", _MAILBOX_FULL),
    ],
    "blocked.sandbox.test": [(0.0, "processed", {}), (0.05, "bounce", _BLOCKED)],
    "spam.sandbox.test": [
        (0.0, "processed", {}),
        (0.03, "delivered", _DELIVERED),
        (0.08, "spamreport", {}),
    ],
    "dropped.sandbox.test": [(0.0, "dropped", {"reason": "Bounced Address", "status": "5.0.0"})],
}


@dataclasses.dataclass(frozen=True)
class Rates:
    """How often the "anything else" story opens, clicks and is machine-opened."""

    open: float = 0.6
    click: float = 0.3
    machine_open: float = 0.1


def email_story(
    address: str, rates: Rates, draw: random.Random, link: str | None
) -> list[EmailStep]:
    """The SendGrid events one email to ``address`` produces, in the order they happen."""
    local, _, domain = address.lower().rpartition("@")
    if domain in _DOMAINS:
        return list(_DOMAINS[domain])
    steps: list[EmailStep] = [(0.0, "processed", {}), (0.03, "delivered", _DELIVERED)]
    opens = "+click" in local or draw.random() < rates.open
    clicks = "+click" in local or (opens and draw.random() < rates.click)
    if draw.random() < rates.machine_open:
        steps.append((0.04, "open", {"sg_machine_open": True, "useragent": "Mozilla/5.0"}))
    if opens:
        steps.append((0.06, "open", {"sg_machine_open": False, "useragent": _USER_AGENT}))
    if clicks:
        url = link or "https://example.org/"
        steps.append(
            (
                0.09,
                "click",
                {"url": url, "url_offset": {"index": 0, "type": "html"}, "useragent": _USER_AGENT},
            )
        )
    return steps


_USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0"


@dataclasses.dataclass(frozen=True)
class SmsOutcome:
    """A synchronous refusal (``error_code`` with ``http_status``) or the callbacks to post."""

    statuses: tuple[str, ...] = ()
    error_code: int | None = None
    message: str = ""
    http_status: int = 400


#: Twilio's magic test numbers: refused at once, as Twilio's API answers them
MAGIC_NUMBERS = {
    "+15005550001": SmsOutcome(error_code=21211, message="Invalid 'To' Phone Number"),
    "+15005550004": SmsOutcome(
        error_code=21610, message="Attempt to send to unsubscribed recipient"
    ),
    "+15005550009": SmsOutcome(
        error_code=21614, message="'To' number is not a valid mobile number"
    ),
}

#: asynchronous error code -> (final status, description)
ASYNC_ERRORS = {
    "3005": ("undelivered", 30005, "Unknown destination handset"),
    "3003": ("undelivered", 30003, "Unreachable destination handset"),
    "3007": ("failed", 30007, "Message filtered by the carrier"),
}


def sms_story(to: str) -> tuple[SmsOutcome, int | None]:
    """The outcome of one SMS to ``to``, and the asynchronous error code if any."""
    if to in MAGIC_NUMBERS:
        return MAGIC_NUMBERS[to], None
    for ending, (final, code, _text) in ASYNC_ERRORS.items():
        if to.endswith(ending):
            # "failed" never reached the carrier; "undelivered" did, and was refused there
            path = ("queued", final) if final == "failed" else ("queued", "sent", final)
            return SmsOutcome(statuses=path), code
    return SmsOutcome(statuses=("queued", "sent", "delivered")), None
