"""What every relaybook HTTP service shares: ``/healthz``, ``/readyz``, ``/metrics``, JSON
errors (``{"error": "<code>", "detail": "..."}``, never a traceback), a request id bound
to the logs, and serving several apps in one process without uvicorn's signal handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request, cookie_parser
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relaybook.platform import faults
from relaybook.platform.faults import UnavailableError
from relaybook.platform.logs import get_logger, mask_text
from relaybook.platform.storable import has_unstorable

log = get_logger(__name__)

#: a readiness check: returns when the dependency is usable, raises otherwise
Check = Callable[[], Awaitable[None]]

REQUEST_SECONDS = Histogram(
    "relaybook_http_request_seconds",
    "HTTP request latency",
    ["service", "route", "status"],
)
READY = Gauge(
    "relaybook_ready",
    "1 when every readiness check passes (what /readyz would answer), 0 otherwise; "
    "checked when scraped",
    ["service"],
)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


def error(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The contract's error answer."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class PayloadTooLargeError(Exception):
    """The request body is over the route's limit."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or :class:`PayloadTooLargeError` as soon as it is over ``limit``
    bytes (declared or actually sent): an oversize body is never read whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class UnstorableInputError(ValueError):
    """The request's ``field`` holds a NUL (or a lone surrogate), which PostgreSQL cannot
    store: refused before any query (asyncpg's refusal would be a 500)."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field}: must not contain NUL characters")
        self.field = field


async def read_form(request: Request, max_fields: int) -> FormData:
    """The request's form (fields only, at most ``max_fields``), or
    :class:`UnstorableInputError` naming the first field holding a NUL (``(form)`` for a
    field's name)."""
    form = await request.form(max_fields=max_fields, max_files=0)
    for name, value in form.multi_items():
        if has_unstorable(name):
            raise UnstorableInputError("(form)")
        if isinstance(value, str) and has_unstorable(value):
            raise UnstorableInputError(name)
    return form


def _refusal(problem: UnstorableInputError) -> JSONResponse:
    """The API's answer to a field it cannot take (dispatcher.api's 422)."""
    return JSONResponse(
        {"error": "invalid_request", "detail": str(problem), "field": problem.field}, 422
    )


async def _unstorable(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UnstorableInputError)
    return _refusal(exc)


async def _http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(
        exc.status_code, _CODES.get(exc.status_code, "error"), str(exc.detail), exc.headers
    )


#: what a route raises when PostgreSQL or the broker is away (faults.is_transient sorts)
_OUTAGES = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    UnavailableError,
)
#: seconds a client is asked to wait while a server is away
RETRY_AFTER_S = 5


async def _outage(request: Request, exc: Exception) -> Response:
    """503 and ``Retry-After`` while a server is away; a 500 for anything else."""
    if not faults.is_transient(exc):
        return await _unexpected(request, exc)
    log.warning("server unavailable", error=f"{type(exc).__name__}: {str(exc)[:200]}")
    return error(
        503,
        "unavailable",
        "a server relaybook needs is unavailable; retry later",
        {"Retry-After": str(RETRY_AFTER_S)},
    )


async def _client_gone(_request: Request, _exc: Exception) -> Response:
    """The client hung up while its body was read: nobody reads the answer (nginx logs
    such a request as 499), and it is not an error of ours."""
    return Response(status_code=499)


async def _unexpected(_request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return error(500, "internal_error", "an unexpected error occurred; it has been logged")


#: whether a request may read why readiness checks fail (their errors, masked)
Details = Callable[[Request], Awaitable[bool]]


def service_routes(
    checks: Mapping[str, Check], service: str = "", details: Details | None = None
) -> list[BaseRoute]:
    """``/healthz`` (the process is alive), ``/readyz`` (every check passes) and ``/metrics``
    (with ``relaybook_ready{service}``, the readiness checks run at each scrape).

    ``/readyz`` names each failing check (``database``, ``broker``...) to anyone: the port
    may be public. Why one fails (its error, which names hosts and users, sometimes a URL
    with its password) goes to the logs, masked, and to the callers ``details`` trusts."""
    watch = _Watch()

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        failures = await _failures(checks, watch)
        report = {name: "failing" if name in failures else "ok" for name in checks}
        if not failures:
            return JSONResponse({"status": "ready", "checks": report})
        body: dict[str, Any] = {
            "error": "not_ready",
            "detail": f"not ready: {', '.join(failures)}",
            "checks": report,
        }
        if details is not None and await details(request):
            body["details"] = {name: mask_text(error) for name, error in failures.items()}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    async def metrics(_request: Request) -> Response:
        # Readiness as a series: an alert then sees a deployable that runs but cannot work
        # (its database or broker away, its consumer out of its group), which the scrape's
        # own `up` does not. The checks are a query and a metadata request, each bounded.
        failures = await _failures(checks, watch)
        # Several services of one process (`up`'s in-process System: the demo, the tests)
        # share one registry: this page shows this service's readiness alone, never the
        # others' last value. No await from here to the page: scrapes cannot interleave.
        READY.clear()
        READY.labels(service).set(0 if failures else 1)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


async def _failures(checks: Mapping[str, Check], watch: _Watch) -> dict[str, str]:
    """Each failing check's error, in the checks' order."""
    errors = await asyncio.gather(*(_run_check(check) for check in checks.values()))
    for name, error in zip(checks, errors, strict=True):
        watch.saw(name, error)
    return {name: error for name, error in zip(checks, errors, strict=True) if error is not None}


async def _run_check(check: Check) -> str | None:
    """The error ``check`` fails with (bounded), None when it passes."""
    try:
        await asyncio.wait_for(check(), timeout=5)
    except Exception as problem:  # noqa: BLE001 - any failure means "not ready", with its text
        text = str(problem)
        return f"{type(problem).__name__}: {text}"[:500] if text else type(problem).__name__
    return None


#: how often a check failing with the same error is logged again
SAY_AGAIN_S = 60.0


class _Watch:
    """Logs a check's failure (masked, as every log line) when it starts, when its error
    changes and once a minute while it lasts, and its end once: probes come every few
    seconds, and their answer no longer says why."""

    def __init__(self) -> None:
        self._said: dict[str, tuple[str, float]] = {}

    def saw(self, name: str, error: str | None) -> None:
        said = self._said.get(name)
        if error is None:
            if said is not None:
                del self._said[name]
                log.info("readiness check passes again", check=name)
            return
        now = time.monotonic()
        if said is None or said[0] != error or now - said[1] >= SAY_AGAIN_S:
            self._said[name] = (error, now)
            log.warning("readiness check failing", check=name, error=error)


def create_app(
    service: str,
    routes: Sequence[BaseRoute],
    checks: Mapping[str, Check],
    details: Details | None = None,
    **kwargs: Any,
) -> Starlette:
    """A Starlette app with the shared routes, JSON errors and request logging;
    ``details`` as :func:`service_routes` says."""
    return Starlette(
        routes=[*service_routes(checks, service, details), *routes],
        exception_handlers={
            HTTPException: _http_exception,
            UnstorableInputError: _unstorable,
            # what a server away raises: answered here, not by the last-resort handler
            **dict.fromkeys(_OUTAGES, _outage),
            ClientDisconnect: _client_gone,
            Exception: _unexpected,
        },
        middleware=[Middleware(_RequestContext, service=service), Middleware(_RefuseUnstorable)],
        **kwargs,
    )


# Probes and scrapes come every few seconds from every orchestrator and Prometheus: their
# lines would drown the others at INFO.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
#: the client went away before the whole answer was sent (nginx's convention)
CLIENT_CLOSED = 499
# Not cached on first use, unlike the module loggers: one bind a request (~1 us) keeps it
# on the configuration of the moment, including structlog.testing.capture_logs.
_access = structlog.wrap_logger(
    None, cache_logger_on_first_use=False, logger_factory_args=("relaybook.access",)
)


class _RequestContext:
    """Binds a request id to the logs, times every request and writes its access-log line
    (pure ASGI: no buffering).

    One line per request on the ``relaybook.access`` logger: method, route template (never
    the raw path, which holds ids and addresses; ``unmatched`` when no route matched),
    status, duration, request id and service; no query string, headers or body. INFO, 5xx
    at WARNING, probes and scrapes at DEBUG. A request whose app raised is logged as the
    500 Starlette answers; one the client left before the whole answer was sent, as 499.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        # what Starlette's ServerErrorMiddleware, outside this one, answers when the app raises
        status = 500
        answered = False
        gone = False
        started = time.perf_counter()

        async def receive_watching() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and not answered:
                gone = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                answered = True
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive_watching, send_with_id)
            except asyncio.CancelledError:
                gone = not answered
                raise
            finally:
                seconds = time.perf_counter() - started
                if gone:
                    status = CLIENT_CLOSED
                route = getattr(scope.get("route"), "path", "unmatched")
                REQUEST_SECONDS.labels(self.service, route, str(status)).observe(seconds)
                self._log(scope["method"], route, status, seconds, request_id)

    def _log(self, method: str, route: str, status: int, seconds: float, request_id: str) -> None:
        if route in _QUIET_ROUTES:
            level = logging.DEBUG
        elif status >= 500:
            level = logging.WARNING
        else:
            level = logging.INFO
        log = _access.bind()
        # checked here: structlog's stdlib logger runs every processor before the level test
        if log.is_enabled_for(level):
            log.log(
                level,
                "request",
                method=method,
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 2),
                request_id=request_id,
                service=self.service,
            )


class _RefuseUnstorable:
    """Answers 422 to a request whose path, query string, cookies or headers hold a NUL,
    before any route reads them (pure ASGI). Bodies are their decoders' to check: the API's
    JSON (relaybook.platform.decoding), the console's forms (:func:`read_form`); a provider's
    webhook is kept, made storable (relaybook.platform.storable)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            field = _unstorable_field(scope)
            if field is not None:
                await _refusal(UnstorableInputError(field))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _unstorable_field(scope: Scope) -> str | None:
    """Where the URL or the headers of a request hold a NUL, else None (for most requests,
    a few byte searches)."""
    if "\x00" in scope["path"]:  # decoded: "%00" is a NUL there
        return _path_field(scope)
    query: bytes = scope["query_string"]
    if b"%00" in query or b"\x00" in query:
        # decoded as Starlette decodes it for request.query_params
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if has_unstorable(name):
                return "(query)"
            if has_unstorable(value):
                return name
    for name, value in scope["headers"]:
        if b"\x00" in value:
            return str(name.decode("latin-1"))
        # a quoted cookie may write a NUL as an octal escape, "\000"
        if name == b"cookie" and b"\\" in value:
            cookies = cookie_parser(value.decode("latin-1"))
            if any(has_unstorable(key + text) for key, text in cookies.items()):
                return "cookie"
    return None


def _path_field(scope: Scope) -> str:
    """The path parameter holding the NUL, as the route matching the path names it."""
    for route in getattr(scope.get("app"), "routes", ()):
        match, child = route.matches(scope)
        if match is not Match.NONE:
            for name, value in child.get("path_params", {}).items():
                if isinstance(value, str) and has_unstorable(value):
                    return str(name)
    return "(path)"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")[:100]
            return text
    return None


class PortInUseError(OSError):
    """A configured port is taken; the message names the setting."""


def bind(port: int, setting: str, host: str = "127.0.0.1") -> socket.socket:
    """Binds ``host:port`` now, so a taken port is one clear error before anything starts."""
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only when
    # the listening socket says so, and without it every response waits ~40 ms for the
    # client's delayed ACK (Nagle), whatever the server's own speed.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as problem:
        sock.close()
        raise PortInUseError(
            f"{setting}={port}: cannot listen there ({problem.strerror})"
        ) from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def connectable(host: str) -> str:
    """The address a client on this host connects to, for one a server listens on: the
    loopback one for "every address" (0.0.0.0, ::), which is no place to connect to;
    IPv6 in brackets, as URLs write it."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - compared
    return f"[{host}]" if ":" in host else host


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process's supervisor owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """One ASGI app on an already bound socket, started and stopped by the supervisor."""

    def __init__(
        self,
        name: str,
        app: ASGIApp,
        sock: socket.socket,
        forwarded_allow_ips: Sequence[str] = ("127.0.0.1", "::1"),
    ) -> None:
        """``forwarded_allow_ips``: the proxies whose ``X-Forwarded-For`` and
        ``X-Forwarded-Proto`` are believed (``RELAYBOOK_FORWARDED_ALLOW_IPS``)."""
        self.name = name
        self.sock = sock
        # httptools, not the pure-Python h11: parsing was most of the provider sandbox's
        # time per text, and every webhook and API request goes through it too
        config = uvicorn.Config(
            app,
            http="httptools",
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            proxy_headers=True,
            forwarded_allow_ips=list(forwarded_allow_ips),
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where a client on this host reaches the server (what banners print and the
        sandbox's stand-in settings hold): loopback when it listens on every address."""
        host, port = self.sock.getsockname()[:2]
        return f"http://{connectable(host)}:{port}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self.sock]), name=self.name)
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"{self.name} stopped at start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self.sock.close()
