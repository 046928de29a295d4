"""Checking that a webhook really comes from its provider, over the bytes exactly as
received (never re-serialised).

SendGrid: ECDSA P-256 / SHA-256 over ``timestamp + body``, checked against every
configured public key (so a key can be rotated without losing a batch), and the
timestamp must be within the tolerance: a captured batch cannot be replayed later.

Twilio: HMAC-SHA1 keyed with the auth token over the *public* URL (the configured
``RELAYBOOK_PUBLIC_WEBHOOK_BASE_URL`` + the original path and query, never the URL this
process sees behind a proxy) followed by every form field's name and value, sorted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from webhook_ingest import WebhookError

SENDGRID_SIGNATURE = "x-twilio-email-event-webhook-signature"
SENDGRID_TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
TWILIO_SIGNATURE = "x-twilio-signature"


class SignatureError(WebhookError):
    """The request is not provably from the provider: 401 when the signature is missing,
    403 when it is wrong or stale."""


#: the longest signature header read: a DER ECDSA P-256 signature is at most 72 bytes
MAX_SIGNATURE = 200


class SendGridSignature(NamedTuple):
    """The signature headers of a SendGrid post, checked for shape and freshness."""

    der: bytes
    timestamp: bytes


def _ascii_digits(text: str) -> bool:
    # str.isdigit() alone takes "²" and other digits int() refuses
    return text.isascii() and text.isdigit()


class SendGridVerifier:
    def __init__(self, public_keys: Sequence[str], tolerance_s: float) -> None:
        self._keys: list[ec.EllipticCurvePublicKey] = []
        for text in public_keys:  # validated by the settings already
            key = load_der_public_key(base64.b64decode(text))
            assert isinstance(key, ec.EllipticCurvePublicKey)
            self._keys.append(key)
        self._tolerance = tolerance_s

    def check_headers(
        self, signature: str | None, timestamp: str | None, now: float
    ) -> SendGridSignature:
        """The signature headers, checked for shape and freshness before the body is
        read; raises :class:`SignatureError` for headers of any other shape."""
        if not signature or not timestamp:
            raise SignatureError(
                401, "missing_signature", "the SendGrid signature headers are missing"
            )
        if not self._keys:
            raise SignatureError(
                403, "invalid_signature", "no SendGrid webhook public key is configured"
            )
        if not _ascii_digits(timestamp) or len(timestamp) > 12:
            raise SignatureError(403, "invalid_signature", "the timestamp is not Unix seconds")
        if abs(now - int(timestamp)) > self._tolerance:
            raise SignatureError(
                403, "stale_signature", f"the timestamp is over {self._tolerance:g} s from now"
            )
        if not signature.isascii() or len(signature) > MAX_SIGNATURE:
            raise SignatureError(403, "invalid_signature", "the signature is not base64")
        try:
            der = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError(403, "invalid_signature", "the signature is not base64") from None
        return SendGridSignature(der, timestamp.encode())

    def verify(self, body: bytes, headers: SendGridSignature) -> None:
        """Returns if one configured key signed ``timestamp + body``; raises
        :class:`SignatureError` otherwise."""
        der = headers.der
        signed = headers.timestamp + body
        for key in self._keys:
            try:
                key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                continue
            return
        raise SignatureError(403, "invalid_signature", "the signature does not match")


def check_twilio_header(auth_token: str | None, signature: str | None) -> bytes:
    """The X-Twilio-Signature header, checked for shape before the body is read (an
    HMAC-SHA1 in base64 is 28 ASCII characters); raises :class:`SignatureError`."""
    if not signature:
        raise SignatureError(401, "missing_signature", "the X-Twilio-Signature header is missing")
    if not auth_token:
        raise SignatureError(403, "invalid_signature", "no Twilio auth token is configured")
    if not signature.isascii() or len(signature) != 28:
        raise SignatureError(403, "invalid_signature", "the signature is not an HMAC-SHA1")
    return signature.encode()


def verify_twilio(
    auth_token: str, url: str, params: Sequence[tuple[str, str]], signature: bytes
) -> None:
    """Returns if ``signature`` (checked by :func:`check_twilio_header`) is Twilio's over
    ``url`` and ``params``; raises :class:`SignatureError` otherwise."""
    # sorted by name; a repeated name keeps its values in the order they came
    payload = url + "".join(name + value for name, value in sorted(params, key=lambda p: p[0]))
    expected = base64.b64encode(
        hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    )
    if not hmac.compare_digest(expected, signature):
        raise SignatureError(403, "invalid_signature", "the signature does not match")
