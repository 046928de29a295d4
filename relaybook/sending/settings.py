"""The providers' settings that the send worker, webhook ingest and the provider sandbox
all read: credentials, API base URLs, the keys webhooks are signed with, and the URL the
providers post to."""

from __future__ import annotations

import base64
import binascii
import dataclasses

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from relaybook.platform.settings import _http_url, _port, _setting, _text


def _public_keys(raw: str) -> tuple[str, ...]:
    """Base64 DER SubjectPublicKeyInfo keys, as SendGrid shows them; each must be P-256."""
    keys = tuple(part.strip() for part in raw.split(",") if part.strip())
    for index, key in enumerate(keys, start=1):
        try:
            loaded = load_der_public_key(base64.b64decode(key, validate=True))
        except (binascii.Error, ValueError):
            raise ValueError(f"key {index} is not a base64 DER public key") from None
        if not isinstance(loaded, ec.EllipticCurvePublicKey) or loaded.curve.name != "secp256r1":
            raise ValueError(f"key {index} is not an ECDSA P-256 public key")
    return keys


def _keys(keys: tuple[str, ...]) -> str:
    return f"{len(keys)} key(s)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SendingSettings:
    """``None`` means "not configured": under ``relaybook up`` the sandbox then stands in
    for that provider (provider_sandbox.credentials.stand_in)."""

    # webhook ingest's port is declared here, not by webhook_ingest: the URL the
    # providers call (webhook_base_url), which the worker and the sandbox read too,
    # defaults to it
    ingest_port: int = _setting(_port, 8001, doc="webhook ingest")
    sendgrid_api_key: str | None = _setting(_text, secret=True, doc="SendGrid API key")
    sendgrid_base_url: str | None = _setting(_http_url, doc="SendGrid API base URL")
    sendgrid_webhook_public_keys: tuple[str, ...] = _setting(
        _public_keys, (), doc="base64 DER ECDSA keys, comma-separated (rotation)", shown=_keys
    )
    twilio_account_sid: str | None = _setting(_text, doc="Twilio account SID")
    twilio_auth_token: str | None = _setting(
        _text, secret=True, doc="Twilio auth token (signs webhooks too)"
    )
    twilio_base_url: str | None = _setting(_http_url, doc="Twilio API base URL")
    twilio_from: str | None = _setting(_text, doc="sender number or messaging service SID")
    public_webhook_base_url: str | None = _setting(
        _http_url, doc="URL providers call; default http://127.0.0.1:<INGEST_PORT>"
    )

    @property
    def webhook_base_url(self) -> str:
        """The URL the providers call; Twilio signatures are computed over it."""
        return self.public_webhook_base_url or f"http://127.0.0.1:{self.ingest_port}"
