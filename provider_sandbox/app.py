"""The sandbox's HTTP application (port ``RELAYBOOK_SANDBOX_PORT``): SendGrid's Mail Send
and Twilio's Messages APIs, plus ``/_sandbox/...`` routes to inspect what was sent, inject
faults and play an owner texting back."""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import json
import math
import time
from random import Random
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provider_sandbox import sendgrid, twilio
from provider_sandbox.credentials import Credentials
from provider_sandbox.scenarios import Rates
from provider_sandbox.settings import SandboxSettings
from provider_sandbox.signing import SendGridSigner
from provider_sandbox.webhooks import Disorder, Poster
from relaybook.platform.http import create_app, error

PROVIDERS = ("sendgrid", "twilio")


@dataclasses.dataclass
class Fault:
    """The answer to one upcoming request: a status (429, 5xx) and/or a delay first."""

    status: int | None
    delay_s: float


class Sandbox:
    """A local SendGrid and Twilio: state, scenarios and the webhooks they post."""

    def __init__(
        self, settings: SandboxSettings, credentials: Credentials, signer: SendGridSigner
    ) -> None:
        self.credentials = credentials
        self.signer = signer
        # seeded on purpose: the same seed tells the same story (ids and signatures
        # use the cryptography package, not this)
        self.draw = Random(settings.sandbox_seed)  # noqa: S311
        self.rates = Rates(
            open=settings.sandbox_open_rate,
            click=settings.sandbox_click_rate,
            machine_open=settings.sandbox_machine_open_rate,
        )
        self.async_bounce_rate = settings.sandbox_async_bounce_rate
        self.webhooks = settings.sandbox_webhooks
        self.rate_limit = settings.sandbox_rate_limit
        self.inbound_url = f"{settings.webhook_base_url}/webhooks/twilio/inbound"
        self.poster = Poster(
            signer=signer,
            auth_token=credentials.twilio_auth_token,
            sendgrid_url=f"{settings.webhook_base_url}/webhooks/sendgrid",
            disorder=Disorder(settings.sandbox_duplicate_rate, settings.sandbox_reorder_rate),
            draw=self.draw,
            batch_interval_s=settings.sandbox_batch_interval_s,
        )
        self.messages: list[dict[str, Any]] = []
        self.texts = twilio.Messages()  # the resources, for Twilio's list API
        self.faults: dict[str, collections.deque[Fault]] = {
            p: collections.deque() for p in PROVIDERS
        }
        self.opted_out: set[str] = set()
        self._window = (0, 0)  # (second, requests in it)

    async def start(self) -> None:
        await self.poster.start()

    async def stop(self) -> None:
        await self.poster.stop()

    async def _fault(self, provider: str) -> Fault | None:
        if not self.faults[provider]:
            return None
        fault = self.faults[provider].popleft()
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        return fault if fault.status else None

    def _rate_limited(self) -> int | None:
        """The reset time (epoch seconds) when this request is over the limit, else None."""
        if not self.rate_limit:
            return None
        second = math.floor(time.time())
        start, count = self._window
        count = count + 1 if start == second else 1
        self._window = (second, count)
        return second + 1 if count > self.rate_limit else None

    async def mail_send(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.credentials.sendgrid_api_key}":
            return _sendgrid_errors(
                401,
                [
                    sendgrid.error(
                        None, "The provided authorization grant is invalid, expired, or revoked"
                    )
                ],
            )
        raw = await request.body()  # read first: a slow answer still got the request
        fault = await self._fault("sendgrid")
        reset = self._rate_limited() if fault is None else None
        if (fault and fault.status == 429) or reset is not None:
            return _too_many(self.rate_limit or 600, reset or math.floor(time.time()) + 1)
        if fault:
            return _sendgrid_errors(fault.status or 500, [sendgrid.error(None, "internal error")])
        try:
            body = orjson.loads(raw)
        except ValueError:
            return _sendgrid_errors(400, [sendgrid.error(None, "Bad Request")])
        problems = sendgrid.validate(body)
        if problems:
            return _sendgrid_errors(400, problems)
        message_id = sendgrid.random_id(self.draw)
        records, events = sendgrid.accept(
            body,
            message_id,
            self.draw,
            self.rates,
            self.async_bounce_rate,
            with_events=self.webhooks,
        )
        self.messages.extend(records)
        if self.webhooks:
            self.poster.schedule_sendgrid(events)
        return Response(status_code=202, headers={"X-Message-Id": message_id})

    async def create_message(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        if not self._twilio_caller(request):
            return JSONResponse(twilio.TwilioError(401, 20003, "Authenticate").body(), 401)
        form = dict(
            parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True)
        )
        fault = await self._fault("twilio")
        if fault:
            code = 20429 if fault.status == 429 else 20500
            text = "Too Many Requests" if fault.status == 429 else "Internal Server Error"
            return JSONResponse(
                twilio.TwilioError(fault.status or 500, code, text).body(), fault.status or 500
            )
        try:
            resource, statuses, error_code = twilio.create(sid, form, self.draw, self.opted_out)
        except twilio.TwilioError as refusal:
            return JSONResponse(refusal.body(), refusal.status)
        callback = form.get("StatusCallback")
        created = time.time()
        self.texts.add(resource, statuses, created)
        self.messages.append(
            {
                "provider": "twilio",
                "sid": resource["sid"],
                "to": resource["to"],
                "from": resource["from"],
                "body": resource["body"],
                "status_callback": callback,
                "statuses": statuses,
                "error_code": error_code,
                "created_at": created,
            }
        )
        if callback and self.webhooks:
            for step, status in enumerate(statuses):
                params = twilio.callback_params(resource, status, error_code)
                self.poster.post_twilio(callback, params, delay=twilio.STEP_S * (step + 1))
        return JSONResponse(resource, 201)

    async def list_messages(self, request: Request) -> Response:
        """Twilio's Messages list: filtered, newest first, a page at a time (injected
        faults are for the sends only)."""
        if not self._twilio_caller(request):
            return JSONResponse(twilio.TwilioError(401, 20003, "Authenticate").body(), 401)
        try:
            page = self.texts.page(request.path_params["sid"], request.query_params, time.time())
        except twilio.TwilioError as refusal:
            return JSONResponse(refusal.body(), refusal.status)
        return JSONResponse(page)

    def _twilio_caller(self, request: Request) -> bool:
        """The account's own credentials, on the account's own path."""
        return (
            _basic_auth_ok(request, self.credentials)
            and request.path_params["sid"] == self.credentials.twilio_account_sid
        )

    async def inspect_messages(self, request: Request) -> Response:
        wanted = {
            key: request.query_params[key]
            for key in ("provider", "to")
            if key in request.query_params
        }
        found = [m for m in self.messages if all(m.get(k) == v for k, v in wanted.items())]
        return JSONResponse({"messages": found})

    async def inspect_webhooks(self, request: Request) -> Response:
        provider = request.query_params.get("provider")
        posts = [p for p in self.poster.posts if provider in (None, p["provider"])]
        return JSONResponse({"posts": posts, "pending": self.poster.pending})

    async def set_faults(self, request: Request) -> Response:
        try:
            provider, fault, count = _parse_fault(await request.body())
        except (ValueError, KeyError, TypeError):
            return error(
                422,
                "invalid_request",
                "expected {provider: sendgrid|twilio, status?: 429|500|502|503|504, "
                "delay_s?: seconds, count?: n >= 1}",
            )
        self.faults[provider].extend(dataclasses.replace(fault) for _ in range(count))
        return JSONResponse({"provider": provider, "queued": len(self.faults[provider])})

    async def clear_faults(self, _request: Request) -> Response:
        for queue in self.faults.values():
            queue.clear()
        return Response(status_code=204)

    async def inbound(self, request: Request) -> Response:
        """Plays an owner texting the sender number; STOP-like words block further SMS to
        that number (error 21610) until START, as Twilio does."""
        try:
            body = json.loads(await request.body())
            sender, text = str(body["from"]), str(body["body"])
        except (ValueError, KeyError, TypeError):
            return error(422, "invalid_request", "expected {from: +E164, body: text}")
        params = twilio.inbound_params(
            self.credentials.twilio_account_sid,
            sender,
            str(body.get("to", "+15005550006")),
            text,
            self.draw,
        )
        if params.get("OptOutType") == "STOP":
            self.opted_out.add(sender)
        elif params.get("OptOutType") == "START":
            self.opted_out.discard(sender)
        self.poster.post_twilio(self.inbound_url, params, delay=0)
        return JSONResponse({"posted_to": self.inbound_url, "params": params}, 202)

    async def drain(self, request: Request) -> Response:
        timeout = float(request.query_params.get("timeout", "30"))
        drained = await self.poster.drain(timeout)
        return JSONResponse(
            {"drained": drained, "pending": self.poster.pending}, 200 if drained else 504
        )

    async def describe(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "sendgrid_webhook_url": self.poster.sendgrid_url,
                "sendgrid_webhook_public_key": self.signer.public_key,
                "twilio_inbound_url": self.inbound_url,
                "twilio_account_sid": self.credentials.twilio_account_sid,
            }
        )


def _parse_fault(raw: bytes) -> tuple[str, Fault, int]:
    body = json.loads(raw)
    provider, count, status = body["provider"], int(body.get("count", 1)), body.get("status")
    fault = Fault(status, float(body.get("delay_s", 0)))
    if provider not in PROVIDERS or count < 1 or fault.delay_s < 0:
        raise ValueError(provider)
    if status is not None and status not in {429, 500, 502, 503, 504}:
        raise ValueError(status)
    return provider, fault, count


def _basic_auth_ok(request: Request, credentials: Credentials) -> bool:
    header = request.headers.get("authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return False
    return (user, password) == (credentials.twilio_account_sid, credentials.twilio_auth_token)


def _sendgrid_errors(status: int, errors: list[dict[str, Any]]) -> Response:
    return JSONResponse({"errors": errors}, status)


def _too_many(limit: int, reset: int) -> Response:
    return JSONResponse(
        {"errors": [sendgrid.error(None, "too many requests")]},
        429,
        headers={
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
        },
    )


def build(sandbox: Sandbox) -> Starlette:
    """The sandbox's routes, with relaybook's health and metrics."""
    return create_app(
        "sandbox",
        routes=[
            Route("/v3/mail/send", sandbox.mail_send, methods=["POST"]),
            Route(
                "/2010-04-01/Accounts/{sid}/Messages.json", sandbox.create_message, methods=["POST"]
            ),
            Route(
                "/2010-04-01/Accounts/{sid}/Messages.json", sandbox.list_messages, methods=["GET"]
            ),
            Route("/_sandbox", sandbox.describe, methods=["GET"]),
            Route("/_sandbox/messages", sandbox.inspect_messages, methods=["GET"]),
            Route("/_sandbox/webhooks", sandbox.inspect_webhooks, methods=["GET"]),
            Route("/_sandbox/faults", sandbox.set_faults, methods=["POST"]),
            Route("/_sandbox/faults", sandbox.clear_faults, methods=["DELETE"]),
            Route("/_sandbox/twilio/inbound", sandbox.inbound, methods=["POST"]),
            Route("/_sandbox/drain", sandbox.drain, methods=["POST"]),
        ],
        checks={},
    )
