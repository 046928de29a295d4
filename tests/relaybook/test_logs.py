"""Logs: JSON lines with the bound context, and no email address, phone number or secret."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from relaybook import logs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jane.doe@example.com", "j***@e***.com"),
        ("bounce for owner42@bounce.sandbox.test: 5.1.1", "bounce for o***@b***.test: 5.1.1"),
        ("+33612345678", "+***78"),
        ("to +15005550006 and x@y.fr", "to +***06 and x***@y***.fr"),
        ("delivery 6f1d2b3c-4a5e 5.2.2", "delivery 6f1d2b3c-4a5e 5.2.2"),
    ],
)
def test_addresses_are_masked(text: str, expected: str) -> None:
    assert logs.mask_text(text) == expected


def test_json_log_lines_mask_personal_data_and_secrets_and_keep_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("INFO", "json")
    try:
        log = logs.get_logger("test")
        with structlog.contextvars.bound_contextvars(request_id="req-1"):
            log.info(
                "sent",
                to="owner@example.org",
                phone="+33612345678",
                nested={"address": "a@b.co", "auth_token": "tw-secret"},
                admin_token="s3cret",
            )
        logging.getLogger("aiokafka").warning("broker said %s", "owner@example.org")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    first, second = lines
    assert first["event"] == "sent"
    assert first["request_id"] == "req-1"
    assert first["level"] == "info"
    assert first["to"] == "o***@e***.org"
    assert first["phone"] == "+***78"
    assert first["nested"] == {"address": "a***@b***.co", "auth_token": "***"}
    assert first["admin_token"] == "***"
    assert second["event"] == "broker said o***@e***.org", "stdlib loggers go through it too"
    text = json.dumps(lines)
    for secret in ("owner@example.org", "+33612345678", "tw-secret", "s3cret"):
        assert secret not in text


def test_the_twilio_sdk_does_not_log_every_request_at_info() -> None:
    """The SDK logs each request's URL and headers, and each response's, at INFO: several
    lines a text. Its warnings still get through."""
    logs.configure("INFO", "json")
    try:
        sdk = logging.getLogger("twilio.async_http_client")
        assert not sdk.isEnabledFor(logging.INFO)
        assert sdk.isEnabledFor(logging.WARNING)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
