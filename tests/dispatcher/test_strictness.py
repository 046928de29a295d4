"""Strict parsing on every route: what PostgreSQL or Python cannot hold is a 422 naming
the field, never a 500. NULs and lone surrogates in bodies, query values, cursors and
path parameters; numbers not written in ASCII digits; date-times out of range once in
UTC; JSON nested too deep. Each table runs on one system, row by row."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from relaybook.platform.paging import encode_cursor
from tests.support import notice

NOTICE = "6f1c1c8e-0a39-4d8a-9a53-4b7f3c1d2e10"
#: a body each body-taking route would accept
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/notices"): notice(2, send=False),
    ("PUT", "/v1/recipients/owner-0/preferences"): {"email": "no", "reason": "asked"},
    ("PATCH", "/v1/recipients/owner-0"): {"name": "Ann"},
    ("POST", f"/v1/notices/{NOTICE}/resends"): {"scope": "failed"},
}


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {"only": {"dispatcher"}}


async def refusals(
    api: httpx.AsyncClient, rows: list[tuple[str, str, dict[str, Any], str]]
) -> list[str]:
    """Sends each ``(method, url, request options, field)``; the rows not answered with a
    422 naming ``field``."""
    wrong = []
    for method, url, options, field in rows:
        answer = await api.request(method, url, **options)
        got = (answer.status_code, answer.json().get("field"))
        if got != (422, field):
            wrong.append(f"{method} {url} {options}: {got} {answer.text[:200]}")
    return wrong


PATH_ROUTES = [
    ("GET", "/v1/notices/{}", "notice_id"),
    ("POST", "/v1/notices/{}/send", "notice_id"),
    ("GET", "/v1/notices/{}/recipients", "notice_id"),
    ("GET", "/v1/notices/{}/resend-options", "notice_id"),
    ("POST", "/v1/notices/{}/resends", "notice_id"),
    ("GET", "/v1/notices/{}/resends", "notice_id"),
    ("GET", "/v1/deliveries/{}", "delivery_id"),
    ("GET", "/v1/recipients/{}/preferences", "recipient_id"),
    ("PUT", "/v1/recipients/{}/preferences", "recipient_id"),
    ("PATCH", "/v1/recipients/{}", "recipient_id"),
]


async def test_a_nul_in_a_path_parameter_is_a_422_naming_it_on_every_route(
    api: httpx.AsyncClient,
) -> None:
    rows = [
        (method, path.format(value), {"json": {}}, field)
        for method, path, field in PATH_ROUTES
        for value in ("a%00b", "%00", f"{NOTICE}%00")
    ]
    assert await refusals(api, rows) == []


QUERIES = [
    ("/v1/journal", "recipient_id"),
    ("/v1/journal", "source_service"),
    ("/v1/journal", "source_kind"),
    ("/v1/journal", "source_reference"),
    ("/v1/journal", "channel"),
    ("/v1/journal", "cursor"),
    (f"/v1/notices/{NOTICE}/recipients", "status"),
    (f"/v1/notices/{NOTICE}/recipients", "cursor"),
    (f"/v1/notices/{NOTICE}/resend-options", "recipient_ids"),
    ("/v1/preferences", "reason"),
    ("/v1/preferences", "cursor"),
]


async def test_a_nul_in_a_query_value_or_a_cursor_is_a_422_naming_it(
    api: httpx.AsyncClient,
) -> None:
    rows = [
        ("GET", path, {"params": {name: value}}, name)
        for path, name in QUERIES
        for value in ("a\x00b", "\x00")
    ]
    # a cursor that decodes to text holding a NUL
    rows += [
        ("GET", "/v1/journal", {"params": {"cursor": encode_cursor("\x00", str(uuid.uuid4()))}},
         "cursor"),
        ("GET", "/v1/preferences", {"params": {"cursor": encode_cursor("owner\x00")}}, "cursor"),
        ("GET", f"/v1/notices/{NOTICE}/recipients",
         {"params": {"cursor": encode_cursor("a\x00")}}, "cursor"),
    ]  # fmt: skip
    assert await refusals(api, rows) == []


BODY_FIELDS = [
    ("POST", "/v1/notices", {"title": "a\x00"}, "title"),
    ("POST", "/v1/notices", {"source": {"service": "a", "kind": "\x00", "reference": "c"}},
     "source.kind"),
    ("POST", "/v1/notices", {"recipients": [{"id": "a"}, {"id": "b", "name": "B\x00"}]},
     "recipients[1].name"),
    ("POST", "/v1/notices", {"recipients": [{"id": "a\x00"}]}, "recipients[0].id"),
    ("POST", "/v1/notices", {"sms": {"text": "\x00"}}, "sms.text"),
    ("PUT", "/v1/recipients/owner-0/preferences", {"reason": "why\x00"}, "reason"),
    ("PATCH", "/v1/recipients/owner-0", {"name": "\x00"}, "name"),
    ("POST", f"/v1/notices/{NOTICE}/resends", {"scope": "selected", "recipient_ids": ["a\x00"]},
     "recipient_ids[0]"),
]  # fmt: skip


async def test_a_nul_anywhere_in_a_body_is_a_422_naming_the_field(
    api: httpx.AsyncClient,
) -> None:
    rows = [
        (method, path, {"json": BODIES[method, path] | change}, field)
        for method, path, change, field in BODY_FIELDS
    ]
    # a key holding a NUL is a field no body has
    rows += [
        (method, path, {"json": body | {"x\x00": 1}}, "x\x00")
        for (method, path), body in BODIES.items()
    ]
    assert await refusals(api, rows) == []


async def test_a_backslash_before_u0000_is_text_not_a_nul(
    api: httpx.AsyncClient,
) -> None:
    """The fast check on the raw body sees ``\\u0000`` there too: only the slow path tells
    it is a backslash and five characters, which are stored as written."""
    body = notice(1, send=False, title="C:\\u0000 drive")
    answer = await api.post("/v1/notices", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["title"] == "C:\\u0000 drive"


#: a text field of each body
TEXTS = {
    "/v1/notices": "title",
    "/v1/recipients/owner-0/preferences": "reason",
    f"/v1/notices/{NOTICE}/resends": "scope",
}


async def test_a_lone_surrogate_in_a_body_is_a_422(api: httpx.AsyncClient) -> None:
    """msgspec refuses them while decoding, before it knows which field: the body is at
    fault."""
    rows = [
        (method, path, {"content": raw, "headers": {"Content-Type": "application/json"}}, "(body)")
        for (method, path), body in BODIES.items()
        for surrogate in (b"\\ud800", b"a\\udfffb", b"\\udc00\\ud800")
        for raw in [
            httpx_json(body | {TEXTS.get(path, "name"): "HERE"}).replace(b"HERE", surrogate)
        ]
    ]
    assert await refusals(api, rows) == []


def httpx_json(body: Any) -> bytes:
    return httpx.Request("POST", "http://x", json=body).content


LIMITS = ["/v1/journal", f"/v1/notices/{NOTICE}/recipients", "/v1/preferences"]


async def test_a_limit_is_ascii_digits_or_a_422(api: httpx.AsyncClient) -> None:
    rows = [
        ("GET", path, {"params": {"limit": value}}, "limit")
        for path in LIMITS
        for value in ("²", "٣", "1e2", "5.0", "+5", " 5", "-1", "0x5", "5_0", "9" * 40, "")
    ]
    assert await refusals(api, rows) == []
    for path in ("/v1/journal", "/v1/preferences"):
        answer = await api.get(path, params={"limit": "007"})
        assert answer.status_code == 200, answer.text


async def test_a_date_time_out_of_range_once_in_utc_is_a_422(api: httpx.AsyncClient) -> None:
    late, early = "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"
    rows = [
        ("POST", "/v1/notices", {"json": notice(1, send=False, send_at=late)}, "send_at"),
        ("POST", "/v1/notices", {"json": notice(1, send=False, send_at="10000-01-01T00:00:00Z")},
         "send_at"),
        ("GET", "/v1/journal", {"params": {"since": early}}, "since"),
        ("GET", "/v1/journal", {"params": {"until": late}}, "until"),
        ("GET", "/v1/journal", {"params": {"until": "+10000-01-01T00:00:00Z"}}, "until"),
        ("GET", "/v1/journal", {"params": {"cursor": encode_cursor(late, str(uuid.uuid4()))}},
         "cursor"),
        ("GET", "/v1/journal", {"params": {"cursor": encode_cursor(early, str(uuid.uuid4()))}},
         "cursor"),
    ]  # fmt: skip
    assert await refusals(api, rows) == []
    # the last moments UTC holds are fine
    answer = await api.get("/v1/journal", params={"until": "9999-12-31T23:59:59Z"})
    assert answer.status_code == 200, answer.text
    ok = await api.post(
        "/v1/notices", json=notice(1, send=False, send_at="9999-12-31T23:59:59+00:00")
    )
    assert ok.status_code == 201, ok.text


async def test_json_nested_too_deep_is_a_422(api: httpx.AsyncClient) -> None:
    # deeper than any decoder recurses (about 1,000), within the smallest body limit
    deep = [b"[" * 5_000 + b"]" * 5_000, b'{"a":' * 2_000 + b"1" + b"}" * 2_000]
    rows = [
        (method, path, {"content": raw, "headers": {"Content-Type": "application/json"}}, field)
        for method, path in BODIES
        for raw, field in (
            (deep[0], "(body)"),
            (deep[1], "a"),
            (httpx_json(BODIES[method, path])[:-1] + b', "x": ' + deep[0] + b"}", "x"),
            # the fast NUL check sends a deep body down the slow path too
            (b'{"y": "\\u0000", "x": ' + deep[0] + b"}", "y"),
        )
    ]
    assert await refusals(api, rows) == []
