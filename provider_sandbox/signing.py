"""Webhook signatures exactly as the providers make them.

SendGrid: ECDSA P-256 with SHA-256 over the timestamp followed by the raw body bytes;
the DER signature, base64, in ``X-Twilio-Email-Event-Webhook-Signature``, the timestamp
in ``X-Twilio-Email-Event-Webhook-Timestamp``. The public key is published as base64 DER
SubjectPublicKeyInfo.

Twilio: HMAC-SHA1 keyed with the auth token over the full URL followed by every POST
parameter's name and value, sorted by name; base64, in ``X-Twilio-Signature``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_der_private_key,
)

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"


class SendGridSigner:
    """Signs event batches with one P-256 key."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key

    @classmethod
    def from_base64_der(cls, text: str) -> SendGridSigner:
        key = load_der_private_key(base64.b64decode(text), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> SendGridSigner:
        """The key kept at ``path`` (base64 DER), created on first use, owner-only."""
        if path.exists():
            return cls.from_base64_der(path.read_text().strip())
        key = ec.generate_private_key(ec.SECP256R1())
        der = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(base64.b64encode(der).decode() + "\n")
        return cls(key)

    @property
    def public_key(self) -> str:
        """Base64 DER SubjectPublicKeyInfo, as SendGrid shows it in its settings."""
        der = self._key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int) -> dict[str, str]:
        """The two signature headers for ``body`` posted at ``timestamp`` (Unix seconds)."""
        signed = str(timestamp).encode() + body
        signature = self._key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return {
            SENDGRID_SIGNATURE: base64.b64encode(signature).decode(),
            SENDGRID_TIMESTAMP: str(timestamp),
        }


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature`` of a form POST of ``params`` to ``url``."""
    payload = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()
