"""What every HTTP service shares: health, readiness that names what is missing, metrics,
and JSON errors without tracebacks."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from relaybook.http import PortInUseError, bind, create_app


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


async def test_readyz_is_503_naming_the_failing_dependency() -> None:
    async with client(database=_ok, broker=_down) as http:
        answer = await http.get("/readyz")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    body = answer.json()
    assert body["error"] == "not_ready"
    assert body["detail"] == "not ready: broker"
    assert body["checks"] == {
        "database": "ok",
        "broker": "broker at 127.0.0.1:9 refused the connection",
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
