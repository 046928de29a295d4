"""The bounce policy's thresholds and the Twilio error codes it counts: when an address
has failed enough to be unsubscribed (:mod:`relaybook.reachability.policy`)."""

from __future__ import annotations

import dataclasses

from relaybook.platform.settings import _float_days, _non_negative, _positive_int, _setting
from relaybook.reachability.classify import SMS_PERMANENT_CODES, SMS_TRANSIENT_CODES


def _codes(raw: str) -> tuple[str, ...]:
    codes = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not codes or not all(code.isdigit() for code in codes):
        raise ValueError("must be comma-separated numeric error codes")
    return codes


@dataclasses.dataclass(frozen=True, kw_only=True)
class BounceSettings:
    bounce_email_hard_threshold: int = _setting(
        _positive_int, 3, doc="hard bounces of an email address that unsubscribe it"
    )
    bounce_email_hard_window_days: float = _setting(
        _float_days, 30.0, doc="...counted over this many days"
    )
    bounce_email_soft_threshold: int = _setting(
        _positive_int,
        5,
        doc="soft bounces of an email address since its last success that unsubscribe it",
    )
    bounce_email_soft_window_days: float = _setting(
        _float_days, 30.0, doc="...counted over at most this many days"
    )
    bounce_sms_hard_threshold: int = _setting(
        _positive_int, 2, doc="permanent SMS errors of a number that unsubscribe it"
    )
    bounce_sms_hard_window_days: float = _setting(
        _float_days, 30.0, doc="...counted over this many days"
    )
    bounce_sms_soft_threshold: int = _setting(
        _positive_int,
        5,
        doc="transient SMS errors of a number since its last success that unsubscribe it",
    )
    bounce_sms_soft_window_days: float = _setting(
        _float_days, 30.0, doc="...counted over at most this many days"
    )
    bounce_soft_suppression_days: float = _setting(
        _non_negative,
        30.0,
        doc="days an unsubscribe for soft failures lasts; 0: until lifted",
    )
    bounce_sms_permanent_codes: tuple[str, ...] = _setting(
        _codes, SMS_PERMANENT_CODES, doc="Twilio error codes counted as permanent"
    )
    bounce_sms_transient_codes: tuple[str, ...] = _setting(
        _codes, SMS_TRANSIENT_CODES, doc="Twilio error codes counted as transient (soft)"
    )
