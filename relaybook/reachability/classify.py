"""What one delivery event says about the address it concerns: a pure, table-driven
function of a canonical ``delivery-event``.

Only failures that are the *recipient's* count against an address. A block for the
sender's reputation or content (5.7.x / 4.7.x, SendGrid ``blocked`` for Reputation,
Content or Frequency/Volume, Twilio 30007 carrier filtering) is recorded as
``sender_side`` and never counted: it says nothing about the mailbox. A deferral alone
counts for nothing; the bounce that ends a run of deferrals counts as that bounce.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any


class Kind(enum.StrEnum):
    HARD = "hard"
    SOFT = "soft"
    SENDER_SIDE = "sender_side"
    COMPLAINT = "complaint"
    PROVIDER_SUPPRESSED = "provider_suppressed"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    SUCCESS = "success"
    NEUTRAL = "neutral"


#: SMS error codes (Twilio) by what they say about the number. Twilio advises keeping
#: such tables as configuration: RELAYBOOK_BOUNCE_SMS_PERMANENT_CODES and
#: RELAYBOOK_BOUNCE_SMS_TRANSIENT_CODES (relaybook.reachability.settings) replace the
#: first two, these their defaults.
SMS_PERMANENT_CODES = ("30005", "30006", "21211", "21614")
SMS_TRANSIENT_CODES = ("30003", "30008", "30004")
SMS_PERMANENT = frozenset(SMS_PERMANENT_CODES)
SMS_TRANSIENT = frozenset(SMS_TRANSIENT_CODES)
SMS_SENDER_SIDE = frozenset({"30007", "30034", "30002", "30001"})
SMS_OPT_OUT = frozenset({"21610"})

#: SendGrid bounce classifications of a block that is the sender's doing (lowercased
#: prefixes: the spelling varies between sources, "Frequency/Volume", "frequency or volume")
_SENDER_CLASSES = ("reputation", "content", "frequency")
#: dropped reasons: the provider already suppresses the address
_PROVIDER_SUPPRESSED = ("bounced address", "spam reporting address", "unsubscribed address")


@dataclasses.dataclass(frozen=True)
class Verdict:
    kind: Kind
    #: why, in words a manager can read ("hard bounce 5.1.1", "replied STOP")
    note: str


@dataclasses.dataclass(frozen=True)
class SmsCodes:
    permanent: frozenset[str] = SMS_PERMANENT
    transient: frozenset[str] = SMS_TRANSIENT


#: most events are successes: their verdicts made once (a verdict is immutable)
_SUCCESSES = {
    kind: Verdict(Kind.SUCCESS, kind) for kind in ("delivered", "opened", "clicked", "read")
}


def classify(event: Mapping[str, Any], sms: SmsCodes | None = None) -> Verdict:
    kind = event["type"]
    if kind in _SUCCESSES:
        return _SUCCESSES[kind]
    if event["channel"] == "email":
        return _email(event)
    return _sms(event, sms or SmsCodes())


def _email(event: Mapping[str, Any]) -> Verdict:
    kind = event["type"]
    code = (event.get("provider_code") or "").strip()
    if kind == "bounced":
        return _bounce(code, event.get("bounce_type"), event.get("bounce_classification"))
    if kind == "dropped":
        reason = (event.get("reason") or "").strip().lower()
        if reason.startswith(_PROVIDER_SUPPRESSED):
            return Verdict(Kind.PROVIDER_SUPPRESSED, f"dropped by the provider: {reason}")
        if reason.startswith("invalid"):
            return Verdict(Kind.HARD, "dropped by the provider: invalid address")
        return Verdict(Kind.SENDER_SIDE, f"dropped by the provider: {reason or 'no reason'}")
    if kind == "spam_reported":
        return Verdict(Kind.COMPLAINT, "marked as spam")
    if kind in {"unsubscribed", "group_unsubscribed"}:
        return Verdict(Kind.OPT_OUT, "unsubscribed from the email")
    if kind == "group_resubscribed":
        return Verdict(Kind.OPT_IN, "resubscribed from the email")
    if kind == "failed":  # the mail-send API refused the request itself: our side
        return Verdict(Kind.SENDER_SIDE, f"refused by the provider's API {code}".strip())
    return Verdict(Kind.NEUTRAL, kind)


def _bounce(code: str, bounce_type: Any, classification: Any) -> Verdict:
    label = (classification or "").strip().lower()
    where = f"{code} ({label})" if code and label else code or label or "no code"
    if code.startswith(("5.7.", "4.7.")) or (
        bounce_type == "blocked" and label.startswith(_SENDER_CLASSES)
    ):
        return Verdict(Kind.SENDER_SIDE, f"blocked: {where}")
    if code == "5.2.2" or code.startswith("4."):
        return Verdict(Kind.SOFT, f"soft bounce {where}")
    if code.startswith("5.1.") or label.startswith("invalid"):
        return Verdict(Kind.HARD, f"hard bounce {where}")
    if label.startswith(("mailbox unavailable", "technical", "unclassified")):
        return Verdict(Kind.SOFT, f"soft bounce {where}")
    if code.startswith("5."):  # RFC 3463: permanent
        return Verdict(Kind.HARD, f"hard bounce {where}")
    return Verdict(Kind.SOFT, f"soft bounce {where}")


def _sms(event: Mapping[str, Any], codes: SmsCodes) -> Verdict:
    kind = event["type"]
    if kind == "opted_out":
        return Verdict(Kind.OPT_OUT, event.get("reason") or "replied STOP")
    if kind == "opted_in":
        return Verdict(Kind.OPT_IN, event.get("reason") or "replied START")
    if kind not in {"failed", "undelivered"}:
        return Verdict(Kind.NEUTRAL, kind)
    code = (event.get("provider_code") or "").strip()
    if code in SMS_OPT_OUT:
        return Verdict(Kind.OPT_OUT, f"the number replied STOP ({code})")
    if code in codes.permanent:
        return Verdict(Kind.HARD, f"permanent SMS error {code}")
    if code in codes.transient:
        return Verdict(Kind.SOFT, f"transient SMS error {code}")
    if code in SMS_SENDER_SIDE:
        return Verdict(Kind.SENDER_SIDE, f"SMS error {code} (the sender's side)")
    if not code.isdigit() or not code.startswith(("2", "3")):
        return Verdict(Kind.SENDER_SIDE, f"SMS refused {code or 'without a code'}")
    return Verdict(Kind.SOFT, f"SMS error {code}")
