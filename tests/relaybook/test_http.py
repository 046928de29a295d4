"""What every HTTP service shares: health, readiness that names what is missing, metrics,
JSON errors without tracebacks, and one access-log line per request."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message

from relaybook.platform import logs
from relaybook.platform.http import (
    HttpServer,
    PortInUseError,
    UnstorableInputError,
    bind,
    connectable,
    create_app,
    read_form,
)
from relaybook.tooling.system import System


async def _ok() -> None:
    return None


async def _down() -> None:
    raise ConnectionError("broker at 127.0.0.1:9 refused the connection")


async def _boom(_request: Request) -> JSONResponse:
    raise RuntimeError("secret internals: password=hunter2")


def client(**checks: object) -> httpx.AsyncClient:
    app = create_app("test", [Route("/boom", _boom)], checks)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_healthz_answers_while_dependencies_are_down() -> None:
    async with client(broker=_down) as http:
        answer = await http.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


async def test_readyz_is_200_when_every_check_passes() -> None:
    async with client(database=_ok, broker=_ok) as http:
        answer = await http.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


async def test_readyz_is_503_naming_the_failing_dependency_without_its_error() -> None:
    """The public port says which dependency fails, never why: a dependency's error names
    hosts, ports, users, sometimes a URL with its password."""
    async with client(database=_ok, broker=_down) as http:
        answer = await http.get("/readyz")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert answer.json() == {
        "error": "not_ready",
        "detail": "not ready: broker",
        "checks": {"database": "ok", "broker": "failing"},
    }


async def _database_refuses() -> None:
    raise ConnectionError("cannot connect to postgresql://relaybook:s3cret@db.internal:5432/rb")


async def test_a_failing_check_is_logged_masked_when_it_starts_and_when_it_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The error a check fails with goes to the logs (masked) once, not at every probe;
    that it passes again, once."""
    state = {"down": True}

    async def database() -> None:
        if state["down"]:
            await _database_refuses()

    logs.configure("INFO", "json")
    try:
        async with client(database=database, broker=_ok) as http:
            for _ in range(3):
                assert (await http.get("/readyz")).status_code == 503
            assert (await http.get("/metrics")).status_code == 200
            state["down"] = False
            for _ in range(2):
                assert (await http.get("/readyz")).status_code == 200
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    said = [line for line in lines if line["logger"] == "relaybook.platform.http"]
    assert [(line["event"], line["level"], line["check"]) for line in said] == [
        ("readiness check failing", "warning", "database"),
        ("readiness check passes again", "info", "database"),
    ]
    assert said[0]["error"] == (
        "ConnectionError: cannot connect to postgresql://relaybook:***@db.internal:5432/rb"
    )
    assert "s3cret" not in json.dumps(lines)


async def test_readyz_shows_the_errors_to_a_caller_its_service_trusts() -> None:
    """``details``: a service that authenticates its callers (the dispatcher: a token with
    the ``ops`` scope) shows them each failing check's error, masked."""

    async def trusted(request: Request) -> bool:
        return request.headers.get("authorization") == "Bearer ops"

    app = create_app("test", [], {"database": _database_refuses, "broker": _ok}, details=trusted)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        stranger = await http.get("/readyz", headers={"Authorization": "Bearer guess"})
        ops = await http.get("/readyz", headers={"Authorization": "Bearer ops"})
    assert (
        stranger.json()["checks"]
        == ops.json()["checks"]
        == {
            "database": "failing",
            "broker": "ok",
        }
    )
    assert "details" not in stranger.json()
    assert "db.internal" not in stranger.text
    assert ops.json()["details"] == {
        "database": "ConnectionError: cannot connect to "
        "postgresql://relaybook:***@db.internal:5432/rb"
    }


async def test_metrics_are_prometheus_text_with_request_latencies() -> None:
    async with client() as http:
        await http.get("/healthz")
        answer = await http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert (
        'relaybook_http_request_seconds_count{route="/healthz",service="test",status="200"}'
        in answer.text
    )


async def test_metrics_show_the_readiness_of_their_own_service_only() -> None:
    """Two services of one process share its registry: each page has its own
    ``relaybook_ready`` series, not the other's last value."""
    apps = {
        name: create_app(name, [], {"broker": check})
        for name, check in (("ready-one", _ok), ("down-one", _down))
    }
    pages = {}
    for _ in range(2):  # each scraped after the other has been
        for name, app in apps.items():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                pages[name] = (await http.get("/metrics")).text
    ready = {
        name: [line for line in page.splitlines() if line.startswith("relaybook_ready{")]
        for name, page in pages.items()
    }
    assert ready == {
        "ready-one": ['relaybook_ready{service="ready-one"} 1.0'],
        "down-one": ['relaybook_ready{service="down-one"} 0.0'],
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/nowhere", 404, "not_found"), ("POST", "/healthz", 405, "method_not_allowed")],
)
async def test_errors_are_the_contracts_json(
    method: str, path: str, status: int, code: str
) -> None:
    async with client() as http:
        answer = await http.request(method, path)
    assert answer.status_code == status
    assert answer.json()["error"] == code
    assert "detail" in answer.json()


async def test_an_unexpected_error_is_a_json_500_without_internals() -> None:
    app = create_app("test", [Route("/boom", _boom)], {})
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        answer = await http.get("/boom")
    assert answer.status_code == 500
    assert answer.json() == {
        "error": "internal_error",
        "detail": "an unexpected error occurred; it has been logged",
    }
    assert "hunter2" not in answer.text


async def test_every_answer_carries_a_request_id_and_keeps_the_callers() -> None:
    async with client() as http:
        generated = await http.get("/healthz")
        given = await http.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert len(generated.headers["x-request-id"]) == 32
    assert given.headers["x-request-id"] == "abc-123"


def test_a_server_listening_everywhere_shows_a_url_one_can_connect_to() -> None:
    everywhere = "0.0.0.0"  # noqa: S104 - what a container listens on
    sock = bind(0, "RELAYBOOK_API_PORT", everywhere)
    try:
        port = sock.getsockname()[1]
        assert HttpServer("api", create_app("api", [], {}), sock).url == f"http://127.0.0.1:{port}"
    finally:
        sock.close()
    assert [connectable(host) for host in (everywhere, "::", "::1", "10.0.0.7")] == [
        "127.0.0.1", "[::1]", "[::1]", "10.0.0.7"
    ]  # fmt: skip


def test_a_taken_port_is_one_error_naming_the_setting() -> None:
    first = bind(0, "RELAYBOOK_API_PORT")
    port = first.getsockname()[1]
    try:
        with pytest.raises(PortInUseError, match=f"RELAYBOOK_API_PORT={port}: cannot listen there"):
            bind(port, "RELAYBOOK_API_PORT")
    finally:
        first.close()


async def test_connections_accepted_on_a_bound_port_send_without_delay() -> None:
    """Without TCP_NODELAY a response written in two parts waits ~40 ms for the client's
    delayed ACK: every request of every service would take that long."""
    accepted: asyncio.Future[asyncio.BaseTransport] = asyncio.get_running_loop().create_future()

    class Capture(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport)

    sock = bind(0, "RELAYBOOK_API_PORT")
    server = await asyncio.get_running_loop().create_server(Capture, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        transport = await asyncio.wait_for(accepted, 5)
        option = transport.get_extra_info("socket").getsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY
        )
        assert option != 0
        writer.close()
        transport.close()
    finally:
        server.close()
        await server.wait_closed()


async def _notice(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"id": request.path_params["notice_id"]})


def _notices_app() -> Any:
    return create_app(
        "dispatcher",
        [
            Route("/v1/notices/{notice_id}", _notice, methods=["GET", "POST"]),
            Route("/boom", _boom),
        ],
        {},
    )


def _requests(entries: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in entries if entry["event"] == "request"]


async def test_each_request_writes_one_access_line_with_the_route_template_only() -> None:
    """The raw path holds ids, the query string and the body addresses: none of them is
    logged, only the route they matched."""
    transport = httpx.ASGITransport(app=_notices_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with structlog.testing.capture_logs() as entries:
            await http.get(
                "/v1/notices/n-4242?email=jane@example.org&To=%2B33612345678",
                headers={"X-Request-Id": "req-1", "Authorization": "Bearer hunter2"},
            )
            await http.post("/v1/notices/n-4343", content=b"body: owner@example.org")
    first, second = _requests(entries)
    assert first == {
        "event": "request",
        "log_level": "info",
        "method": "GET",
        "route": "/v1/notices/{notice_id}",
        "status": 200,
        "duration_ms": first["duration_ms"],
        "request_id": "req-1",
        "service": "dispatcher",
    }
    assert isinstance(first["duration_ms"], float)
    assert first["duration_ms"] >= 0
    assert second["method"] == "POST"
    assert second["route"] == "/v1/notices/{notice_id}"
    assert len(second["request_id"]) == 32
    text = json.dumps(entries)
    for private in ("n-4242", "n-4343", "jane", "33612345678", "hunter2", "owner", "body"):
        assert private not in text


@pytest.mark.parametrize(
    ("method", "path", "route", "status", "level"),
    [
        ("GET", "/nowhere/jane@example.org", "unmatched", 404, "info"),
        ("DELETE", "/v1/notices/n-1", "/v1/notices/{notice_id}", 405, "info"),
        ("GET", "/boom", "/boom", 500, "warning"),
        ("GET", "/healthz", "/healthz", 200, "debug"),
        ("GET", "/readyz", "/readyz", 200, "debug"),
        ("GET", "/metrics", "/metrics", 200, "debug"),
    ],
)
async def test_the_access_line_level_follows_the_status_and_probes_are_debug(
    method: str, path: str, route: str, status: int, level: str
) -> None:
    """Errors the app raised are logged once, as the 500 the client gets; probes and
    scrapes stay at DEBUG so they do not flood the log."""
    transport = httpx.ASGITransport(app=_notices_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with structlog.testing.capture_logs() as entries:
            answer = await http.request(method, path)
    assert answer.status_code == status
    (line,) = _requests(entries)
    assert (line["route"], line["status"], line["log_level"]) == (route, status, level)
    assert "jane" not in json.dumps(line)


async def test_a_client_gone_before_the_answer_is_one_line_with_status_499() -> None:
    """The client hung up while sending its body: the request is still logged, once."""
    messages: list[Message] = [
        {"type": "http.request", "body": b"part of a body", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = _scope("POST", [(b"host", b"test"), (b"content-length", b"1000")])
    with structlog.testing.capture_logs() as entries:
        await _notices_app()(scope, receive, send)
    assert not [e for e in entries if e["log_level"] == "error"], "not an error of ours"
    (line,) = _requests(entries)
    assert (line["route"], line["status"], line["log_level"]) == (
        "/v1/notices/{notice_id}",
        499,
        "info",
    )


async def test_a_running_service_writes_one_json_access_line_per_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through uvicorn and the process's logging set-up: JSON lines, probes left out at
    INFO, and a client that hangs up mid-body logged as 499."""
    logs.configure("INFO", "json")
    server = HttpServer("dispatcher", _notices_app(), bind(0, "RELAYBOOK_API_PORT"))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            await http.get("/v1/notices/n-4242?email=jane@example.org")
            await http.get("/healthz")
            await http.post("/v1/notices/n-4343", content=b"owner@example.org")
        host, port = server.sock.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /v1/notices/n-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        writer.write(b"part of a body")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        err = ""
        deadline = time.monotonic() + 10
        while '"status": 499' not in err and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            err += capsys.readouterr().err
    finally:
        await server.stop()
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    # the test's own client (httpx) logs the URLs it calls; the service's lines are checked
    lines = [json.loads(line) for line in err.splitlines()]
    served = [line for line in lines if line["logger"] != "httpx"]
    requests = [line for line in served if line["logger"] == "relaybook.access"]
    assert [(line["method"], line["status"]) for line in requests] == [
        ("GET", 200),
        ("POST", 200),
        ("POST", 499),
    ]
    assert {line["route"] for line in requests} == {"/v1/notices/{notice_id}"}
    assert {line["level"] for line in requests} == {"info"}
    assert all(line["service"] == "dispatcher" for line in requests)
    assert all(line["request_id"] for line in requests)
    text = json.dumps(served)
    for private in ("n-4242", "jane", "owner", "part of a body"):
        assert private not in text


@pytest.mark.parametrize(
    ("url", "headers", "field"),
    [
        ("/v1/notices/a%00b", {}, "notice_id"),
        ("/v1/notices/%00", {}, "notice_id"),
        ("/v1/notices/n-1?status=sent%00", {}, "status"),
        ("/v1/notices/n-1?status=sent&%00=1", {}, "(query)"),
        ("/nowhere/%00", {}, "(path)"),
        # a cookie's value may be quoted, with octal escapes: "\000" is a NUL
        ("/v1/notices/n-1", {"Cookie": 'rb_session="a\\000b"'}, "cookie"),
    ],
)
async def test_a_nul_in_the_path_the_query_or_a_cookie_is_a_422_before_any_route_runs(
    url: str, headers: dict[str, str], field: str
) -> None:
    """PostgreSQL stores no NUL (asyncpg refuses it with an error, a 500): every service
    refuses one in what a route reads from the URL or the cookies, naming where it is, as
    the API names a field."""
    transport = httpx.ASGITransport(app=_notices_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with structlog.testing.capture_logs() as entries:
            answer = await http.get(url, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json() == {
        "error": "invalid_request",
        "detail": f"{field}: must not contain NUL characters",
        "field": field,
    }
    (line,) = _requests(entries)
    assert line["status"] == 422


async def test_a_nul_in_a_header_value_is_a_422_naming_the_header() -> None:
    """uvicorn's parser refuses a raw NUL in a header already; an app served otherwise
    refuses it too."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = _scope("GET", [(b"host", b"test"), (b"idempotency-key", b"a\x00b")])
    await _notices_app()(scope, receive, send)
    assert sent[0]["status"] == 422
    assert json.loads(sent[1]["body"])["field"] == "idempotency-key"


async def test_a_form_field_holding_a_nul_is_refused_naming_it() -> None:
    """read_form: what the console's forms are read with."""

    async def form(request: Request) -> JSONResponse:
        try:
            fields = await read_form(request, max_fields=10)
        except UnstorableInputError as problem:
            return JSONResponse({"refused": problem.field}, 400)
        return JSONResponse(dict(fields))

    app = create_app("test", [Route("/form", form, methods=["POST"])], {})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        kept = await http.post("/form", data={"email": "a@x.org", "password": "pw"})
        refused = await http.post("/form", data={"email": "a\x00b@x.org", "password": "pw"})
        unnamed = await http.post("/form", content=b"a%00=1", headers=FORM)
    assert kept.json() == {"email": "a@x.org", "password": "pw"}
    assert (refused.status_code, refused.json()) == (400, {"refused": "email"})
    assert unnamed.json() == {"refused": "(form)"}


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_every_service_of_a_running_system_refuses_a_nul_in_its_address(
    system: System,
) -> None:
    """The API and the console, ingest, the sandbox and the consumers: each answers a NUL
    in its path or query string with the same 422."""
    assert {"dispatcher", "ingest", "sandbox"} <= set(system.servers)
    async with httpx.AsyncClient(timeout=10) as http:
        for name, server in system.servers.items():
            for url in ("/healthz?probe=%00", "/webhooks/twilio%00", "/ui/login?next=%00"):
                answer = await http.get(server.url + url)
                assert (name, url, answer.status_code) == (name, url, 422), answer.text
                assert answer.json()["error"] == "invalid_request"


def _scope(method: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An ASGI request to the notices app's /v1/notices/n-1, as uvicorn gives it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/v1/notices/n-1",
        "raw_path": b"/v1/notices/n-1",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
