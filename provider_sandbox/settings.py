"""The provider sandbox's settings: its port, its seed and the shares of its random
choices, its webhooks and signing key; with the providers' own
(:class:`relaybook.sending.settings.SendingSettings`), for which it stands in."""

from __future__ import annotations

import base64
import binascii
import dataclasses

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_private_key

from relaybook.platform.settings import (
    _bool,
    _count,
    _float_seconds,
    _int,
    _port,
    _rate,
    _setting,
)
from relaybook.sending.settings import SendingSettings


def _private_key(raw: str) -> str:
    try:
        loaded = load_der_private_key(base64.b64decode(raw.strip(), validate=True), password=None)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("is not a base64 DER private key") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise ValueError("is not an ECDSA P-256 private key")
    return raw.strip()


@dataclasses.dataclass(frozen=True, kw_only=True)
class SandboxSettings(SendingSettings):
    sandbox_port: int = _setting(_port, 8025, doc="provider sandbox")
    sandbox_seed: int = _setting(
        _int, 1, doc="sandbox: seed of its random choices (same seed, same choices)"
    )
    sandbox_duplicate_rate: float = _setting(
        _rate, 0.05, doc="sandbox: share of webhook events posted twice"
    )
    sandbox_reorder_rate: float = _setting(
        _rate, 0.1, doc="sandbox: share of webhook events held back behind later ones"
    )
    sandbox_open_rate: float = _setting(_rate, 0.6, doc="sandbox: share of delivered emails opened")
    sandbox_click_rate: float = _setting(_rate, 0.3, doc="sandbox: share of opened emails clicked")
    sandbox_machine_open_rate: float = _setting(
        _rate, 0.1, doc="sandbox: share of delivered emails opened by a machine (Apple MPP)"
    )
    sandbox_async_bounce_rate: float = _setting(
        _rate, 0.3, doc="sandbox: share of bounces without sg_message_id and custom args"
    )
    sandbox_webhooks: bool = _setting(
        _bool,
        True,
        doc="sandbox: post webhooks (SendGrid events, Twilio status callbacks); off: sends "
        "are only accepted (load tests)",
    )
    sandbox_batch_interval_s: float = _setting(
        _float_seconds, 0.25, doc="sandbox: how often event batches are posted (SendGrid: ~30 s)"
    )
    sandbox_rate_limit: int = _setting(
        _count, 0, doc="sandbox: mail-send requests per second before 429; 0: no limit"
    )
    sandbox_signing_key: str | None = _setting(
        _private_key,
        secret=True,
        doc="sandbox: base64 DER P-256 private key; unset: generated, kept in the data dir",
    )
