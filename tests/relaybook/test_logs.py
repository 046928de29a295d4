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
        # URL-encoded, as in a webhook's form body or a logged URL
        ("From=%2B33612345678&To=%2b15005550006", "From=+***78&To=+***06"),
        ("jane%40example.org", "j***@e***.org"),
        ("to=jane.doe%2Bx%40example.org&n=1", "to=j***@e***.org&n=1"),
        ("redirect=tel%3A%2B33612345678", "redirect=tel%3A+***78"),
        ("Body=call%200612345678%20now", "Body=call%20***78%20now"),
        # addresses inside URLs
        ("mailto:jane@example.org?subject=hi", "mailto:j***@e***.org?subject=hi"),
        (
            "/v1/x?email=jane@example.org&To=%2B33612345678&limit=20",
            "/v1/x?email=j***@e***.org&To=+***78&limit=20",
        ),
        ("tel:+33-6-12-34-56-78", "tel:+***78"),
        ("/v1/recipients/0612345678/preferences", "/v1/recipients/***78/preferences"),
        # international formats, written with groups
        ("+33 6 12 34 56 78", "+***78"),
        ("+33 (0)6 12 34 56 78", "+***78"),
        ("+1 (415) 555-0100", "+***00"),
        ("+44 20 7946 0958", "+***58"),
        ("+49 30 12345678", "+***78"),
        ("0033 6 12 34 56 78", "***78"),
        # national formats
        ("06 12 34 56 78", "***78"),
        ("06.12.34.56.78", "***78"),
        ("06-12-34-56-78", "***78"),
        ("0612345678", "***78"),
        ("020 7946 0958", "***58"),
        ("07700 900123", "***23"),
        ("(415) 555-0100", "***00"),
        ("415-555-0100", "***00"),
        ("415.555.0100", "***00"),
        # two numbers stay two masked numbers, each still telling itself apart
        ("0612345678, 0698765432", "***78, ***32"),
        ("0612345678 0698765432", "***78 ***32"),
        ("0612345678,0698765432", "***78,***32"),
        ("call 06 12 34 56 78.", "call ***78."),
    ],
)
def test_addresses_are_masked(text: str, expected: str) -> None:
    assert logs.mask_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "delivery 6f1d2b3c-4a5e 5.2.2",
        "550 5.1.1 user unknown",
        # ids and counts
        "notice 123456789012 has 1234567 recipients",
        "id=4815162342 offset=000000012345 partition 0",
        "SM0123456789abcdef0123456789abcdef",
        "request 0612345678abcdef0123456789abcdef",
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "user_0612345678",
        # UUIDs, even with all-digit groups
        "550e8400-e29b-41d4-a716-446655440000",
        "06123456-0612-3456-7890-061234567890",
        "12345678-1234-1234-1234-004665544000",
        # timestamps and dates
        "2026-06-12T10:11:12.123456Z",
        "2026-06-12T10:11:12+02:00",
        "Wed, 12 Jun 2026 10:11:12 +0200",
        "1781258400 1781258400123",
        "20260612101112",
        "12/06/2026 10:11",
        "06.12.2026 10:11",
        "06-12-2026 10",
        # durations and decimals
        "took 0.0612345678 s",
        "took 12.0612345678 ms",
        "ratio 0.5 0.25 0.125 0.0625",
        # addresses and ports
        "127.0.0.1:54321",
        "192.168.100.200:9092",
        "10.0.0.1 -> 10.0.0.255",
        "http://localhost:8080/v1/notices?limit=100",
        # versions, codes, money, short numbers
        "starlette 1.10.0, python 3.11.7",
        "+1234 and +12 ms",
        "+0200",
        "total 1 234 567 texts",
        "batch sizes 256 512 1024",
        "123-456-7890",
        "EUR 1,234,567.89",
        "100%",
    ],
)
def test_ordinary_numbers_are_not_masked(text: str) -> None:
    assert logs.mask_text(text) == text


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


def _refuse_the_row() -> None:
    raise ValueError("Key (email)=(owner@example.org) already exists, to +33612345678")


def test_an_exceptions_message_is_masked_in_its_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A driver error can quote the row it refused; the traceback is masked too."""
    logs.configure("INFO", "json")
    try:
        try:
            _refuse_the_row()
        except ValueError:
            logs.get_logger("test").exception("insert failed")
        (line,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert "Key (email)=(o***@e***.org) already exists, to +***78" in line["exception"]
    assert "owner@example.org" not in line["exception"]


@pytest.mark.parametrize("name", ["twilio.async_http_client", "httpx"])
def test_http_clients_do_not_log_every_request_at_info(name: str) -> None:
    """The Twilio SDK logs each request's URL and headers, and each response's, at INFO:
    several lines a text; httpx a line for each email sent. Their warnings get through."""
    logs.configure("INFO", "json")
    try:
        sdk = logging.getLogger(name)
        assert not sdk.isEnabledFor(logging.INFO)
        assert sdk.isEnabledFor(logging.WARNING)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
