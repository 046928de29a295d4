"""Webhook ingest's settings: how large, how old and how many webhooks it takes; with the
providers' own (:class:`relaybook.sending.settings.SendingSettings`: the keys and token
webhooks are signed with, the URL they were posted to, ingest's port)."""

from __future__ import annotations

import dataclasses

from relaybook.platform.settings import _float_seconds, _positive_int, _setting
from relaybook.sending.settings import SendingSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class IngestSettings(SendingSettings):
    sendgrid_webhook_tolerance_s: float = _setting(
        _float_seconds, 300.0, doc="max age of a signed SendGrid webhook"
    )
    ingest_max_body_bytes: int = _setting(
        _positive_int, 4 * 1024 * 1024, doc="largest webhook body accepted (SendGrid: 768 KB)"
    )
    ingest_publish_timeout_s: float = _setting(
        _float_seconds, 5.0, doc="how long a webhook waits for the broker before a 503"
    )
    ingest_max_events_in_flight: int = _setting(
        _positive_int, 20_000, doc="events an ingest waits on the broker for; past it, 503"
    )
