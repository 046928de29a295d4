"""The sandbox's credentials and signing key: those configured, else generated on first
start and kept in ``<data dir>/sandbox`` so every later start (and every service that
talks to the sandbox) agrees on them."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from pathlib import Path
from typing import TypeVar

from provider_sandbox.settings import SandboxSettings
from provider_sandbox.signing import SendGridSigner
from relaybook.sending.settings import SendingSettings

#: the sender number the sandbox hands out; Twilio's magic "valid From" test number
SANDBOX_FROM = "+15005550006"


@dataclasses.dataclass(frozen=True)
class Credentials:
    sendgrid_api_key: str
    twilio_account_sid: str
    twilio_auth_token: str


def resolve(settings: SandboxSettings, data_dir: Path) -> tuple[Credentials, SendGridSigner]:
    """The credentials the sandbox accepts and the key it signs SendGrid webhooks with,
    kept in ``data_dir``'s ``sandbox`` folder (``RELAYBOOK_DATA_DIR``)."""
    folder = data_dir / "sandbox"
    folder.mkdir(parents=True, exist_ok=True)
    stored_path = folder / "credentials.json"
    if stored_path.exists():
        stored = json.loads(stored_path.read_text())
    else:
        stored = {
            "sendgrid_api_key": f"SG.sandbox.{secrets.token_urlsafe(24)}",
            "twilio_account_sid": "AC" + secrets.token_hex(16),
            "twilio_auth_token": secrets.token_hex(16),
        }
        descriptor = os.open(stored_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(stored, handle)
    credentials = Credentials(
        sendgrid_api_key=settings.sendgrid_api_key or stored["sendgrid_api_key"],
        twilio_account_sid=settings.twilio_account_sid or stored["twilio_account_sid"],
        twilio_auth_token=settings.twilio_auth_token or stored["twilio_auth_token"],
    )
    signer = (
        SendGridSigner.from_base64_der(settings.sandbox_signing_key)
        if settings.sandbox_signing_key
        else SendGridSigner.load_or_create(folder / "sendgrid-webhook-key")
    )
    return credentials, signer


Sending = TypeVar("Sending", bound=SendingSettings)


def stand_in(
    settings: Sending, credentials: Credentials, signer: SendGridSigner, url: str
) -> Sending:
    """``settings`` with the sandbox standing in for each provider that is not configured:
    its URL and credentials, and its public key added to those the ingest accepts."""
    changes: dict[str, object] = {}
    if settings.sendgrid_api_key is None:
        changes |= {
            "sendgrid_api_key": credentials.sendgrid_api_key,
            "sendgrid_base_url": url,
            "sendgrid_webhook_public_keys": (
                *settings.sendgrid_webhook_public_keys,
                signer.public_key,
            ),
        }
    if settings.twilio_account_sid is None:
        changes |= {
            "twilio_account_sid": credentials.twilio_account_sid,
            "twilio_auth_token": credentials.twilio_auth_token,
            "twilio_base_url": url,
            "twilio_from": settings.twilio_from or SANDBOX_FROM,
        }
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
