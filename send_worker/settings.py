"""The send worker's settings: its port, the sender, and how hard it presses the
providers (requests in flight, rates, timeouts, attempts); with the providers' own
(:class:`relaybook.sending.settings.SendingSettings`), which it reads too."""

from __future__ import annotations

import dataclasses

from relaybook.platform.settings import (
    _float_seconds,
    _non_negative,
    _port,
    _positive_int,
    _setting,
    _text,
)
from relaybook.sending.settings import SendingSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerSettings(SendingSettings):
    worker_port: int = _setting(_port, 8002, doc="send workers' health, readiness and metrics")
    email_from: str = _setting(_text, "notices@relaybook.test", doc="sender address of emails")
    email_from_name: str | None = _setting(_text, doc="sender name of emails")
    provider_timeout_s: float = _setting(
        _float_seconds, 10.0, doc="timeout of every call to SendGrid or Twilio"
    )
    sendgrid_concurrency: int = _setting(
        _positive_int, 4, doc="mail-send requests in flight per worker (1000 emails each)"
    )
    twilio_concurrency: int = _setting(_positive_int, 20, doc="SMS requests in flight per worker")
    sendgrid_rate_limit: float = _setting(
        _non_negative, 0.0, doc="mail-send requests per second per worker; 0: no limit"
    )
    twilio_rate_limit: float = _setting(
        _non_negative, 0.0, doc="SMS per second per worker; 0: no limit"
    )
    sms_yield_s: float = _setting(
        _non_negative,
        5.0,
        doc="texts wait up to this long while the same worker sends emails (1000 to a"
        " request, they are done sooner); 0: side by side",
    )
    send_max_attempts: int = _setting(
        _positive_int, 8, doc="tries of a send that meets transient errors before it fails"
    )
    unknown_outcome_grace_s: float = _setting(
        _float_seconds,
        180.0,
        doc="how long a send a crash left without an answer waits for the provider's word"
        " (SendGrid's events, Twilio's list) before it goes again",
    )
