"""Logs: JSON lines with the bound context, and no email address, phone number or secret."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from relaybook.platform import decoding, logs


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the local part may end (or start) in any character RFC 5322 allows
        ("jane~@example.org", "j***@e***.org"),
        (
            "bounce for jane!#$%&'*+/=?^_`{|}~-@example.org: 5.1.1",
            "bounce for j***@e***.org: 5.1.1",
        ),
        ("to ~@example.org now", "to ~***@e***.org now"),
        ("x{|}@example.org", "x***@e***.org"),
        # a domain whose last label is not a top-level domain of letters
        ("a@b.c and owner@mail.xn--p1ai", "a***@b***.c and o***@m***.xn--p1ai"),
    ],
)
def test_addresses_with_any_character_the_api_accepts_are_masked(text: str, expected: str) -> None:
    assert logs.mask_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # database and broker URLs: the password, whatever the scheme
        (
            "cannot connect to postgresql://relaybook:s3cret@db.example.org:5432/relaybook",
            "cannot connect to postgresql://relaybook:***@db.example.org:5432/relaybook",
        ),
        ("postgres://u:p%40ss@localhost/db", "postgres://u:***@localhost/db"),
        (
            "dsn=postgresql+asyncpg://admin:pa%2Fss@10.0.0.7/x",
            "dsn=postgresql+asyncpg://admin:***@10.0.0.7/x",
        ),
        # a Twilio auth token as the password of a URL's userinfo
        (
            "GET https://AC0123456789abcdef0123456789abcdef:0123456789abcdef0123456789abcdef"
            "@api.twilio.com/2010-04-01/Accounts",
            "GET https://AC0123456789abcdef0123456789abcdef:***@api.twilio.com/2010-04-01/Accounts",
        ),
        # tokens in headers written as text
        ("Authorization: Bearer rb_abc.DEF-123_xyz", "Authorization: Bearer ***"),
        (
            "sent with bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl, refused",
            "sent with bearer ***, refused",
        ),
        ("Authorization: Basic QUMxMjM6c2VjcmV0", "Authorization: Basic ***"),
        # SendGrid API keys and relaybook's own API tokens, wherever they are
        (
            "key SG.aBcDeFgHiJkLmNoPqRsTuV.0123456789abcdefghijklmnopqrstuvwxyzABCDEFG rejected",
            "key SG.*** rejected",
        ),
        (
            "token rb_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg was revoked",
            "token rb_*** was revoked",
        ),
        # secrets given as key=value pairs (a libpq DSN, a form, a message)
        ("host=db password=s3cret dbname=x", "host=db password=*** dbname=x"),
        ("secret internals: password=hunter2", "secret internals: password=***"),
        ("AuthToken=abc123&To=x", "AuthToken=***&To=x"),
    ],
)
def test_secrets_in_free_text_are_masked(text: str, expected: str) -> None:
    assert logs.mask_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "http://localhost:8080/v1/notices?limit=100",
        "postgresql://relaybook@localhost/relaybook",
        "kafka at 127.0.0.1:9092 refused",
        "the rb_session cookie, the rb_login cookie",
        "a bearer of bad news",
        "token expired",
        "SG.x",
    ],
)
def test_text_without_secrets_is_left_alone(text: str) -> None:
    assert logs.mask_text(text) == text


# What the API accepts as an address (relaybook.platform.decoding, the Email type of every body)
def _accepted_email(address: str) -> bool:
    try:
        decoding.convert(address, decoding.Email)
    except decoding.InvalidRequestError:
        return False
    return True


def _accepted_phone(number: str) -> bool:
    try:
        decoding.convert(number, decoding.Phone)
    except decoding.InvalidRequestError:
        return False
    return True


#: what separates an address from the words around it in a message
_SEPARATORS = st.sampled_from([" ", "\n", ", ", ": ", "=", "(", ")", "<", ">", "'", '"', "[", "]"])
_AROUND = st.text(max_size=30)


@given(
    address=st.one_of(st.emails(), st.from_regex(decoding.EMAIL, fullmatch=True)).filter(
        _accepted_email
    ),
    before=_AROUND,
    after=_AROUND,
    left=_SEPARATORS,
    right=_SEPARATORS,
)
@settings(max_examples=500, deadline=None)
def test_no_address_the_api_accepts_survives_the_masker(
    address: str, before: str, after: str, left: str, right: str
) -> None:
    masked = logs.mask_text(f"{before}{left}{address}{right}{after}")
    assert address not in masked
    assert address not in logs.mask_text(address)


@given(
    number=st.from_regex(decoding.E164, fullmatch=True).filter(_accepted_phone),
    before=_AROUND,
    after=_AROUND,
    left=_SEPARATORS,
    right=_SEPARATORS,
)
@settings(max_examples=500, deadline=None)
def test_no_phone_number_the_api_accepts_survives_the_masker(
    number: str, before: str, after: str, left: str, right: str
) -> None:
    masked = logs.mask_text(f"{before}{left}{number}{right}{after}")
    assert number not in masked
    assert number not in logs.mask_text(number)


def _sign_in(email: str, password: str) -> None:
    # what a driver says of a row it refused, quoting the input
    raise ValueError(f"invalid byte sequence for encoding UTF8: {email!r}")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_log_format_prints_a_frames_locals_and_each_masks_the_exception(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """A traceback is the code's lines and the exception's masked message: never the
    values of the frames' variables (a password among them), in JSON as on a terminal,
    for structlog's loggers and the standard library's (uvicorn's) alike."""
    logs.configure("INFO", fmt)
    try:
        # built here, so that no line of the traceback's code quotes them
        email, password = "@".join(["owner", "example.org"]), "-".join(["hunter2", "password"])
        for logger in (logs.get_logger("test"), logging.getLogger("uvicorn.error")):
            try:
                _sign_in(email, password)
            except ValueError:
                logger.exception("sign-in failed")
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert err.count("Traceback") == 2, err
    assert err.count("invalid byte sequence for encoding UTF8: 'o***@e***.org'") == 2, err
    for private in ("hunter2-password", "owner@example.org"):
        assert private not in err
