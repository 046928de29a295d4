"""Calling the providers. Email: SendGrid's payload built with the official SDK's mail
helpers, up to 1000 personalizations per request (one per delivery, its ``delivery_id``
in ``custom_args``), posted with an async HTTP client. SMS: the official Twilio SDK's
async client, with a status-callback URL carrying the ``delivery_id``; its list call finds
the texts sent to a number (a send a crash left without an answer). Every call has a
timeout; every answer becomes an :class:`Outcome`."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from typing import Any, NamedTuple
from urllib.parse import urlencode

import aiohttp
import httpx
import orjson
from prometheus_client import Counter, Histogram
from sendgrid.helpers.mail import Category, Content, From, Mail
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from send_worker.retry import Outcome, http_outcome
from send_worker.settings import WorkerSettings

MAX_PERSONALIZATIONS = 1000
_JSON = {"Content-Type": "application/json"}

CALL_SECONDS = Histogram(
    "relaybook_provider_call_seconds",
    "Time of one call to a provider, from the request to its answer (waiting for a slot apart)",
    ["provider", "call"],
)
CALLS = Counter(
    "relaybook_provider_calls_total",
    "Calls to providers by answer: the HTTP status, or timeout or connection_error",
    ["provider", "call", "code"],
)


def _called(provider: str, call: str, started: float, code: int | str) -> None:
    CALL_SECONDS.labels(provider, call).observe(time.perf_counter() - started)
    CALLS.labels(provider, call, str(code)).inc()


class Listed(NamedTuple):
    """A text as Twilio's Messages list gives it."""

    sid: str
    body: str | None
    created: dt.datetime


class Email(NamedTuple):  # a thousand a request: 0.24 us each, a frozen dataclass 0.55
    delivery_id: str
    notice_id: str
    address: str
    name: str | None


@dataclasses.dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str
    html: str | None
    category: str


class Throttle:
    """At most ``rate`` calls per second (0: no limit), spaced evenly."""

    def __init__(self, rate: float) -> None:
        self._interval = 1 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self._interval


class SendGrid:
    def __init__(self, settings: WorkerSettings) -> None:
        self._client = httpx.AsyncClient(
            base_url=settings.sendgrid_base_url or "https://api.sendgrid.com",
            headers={"Authorization": f"Bearer {settings.sendgrid_api_key}"},
            timeout=settings.provider_timeout_s,
        )
        self._from = From(settings.email_from, settings.email_from_name)
        self._slots = asyncio.Semaphore(settings.sendgrid_concurrency)
        self._throttle = Throttle(settings.sendgrid_rate_limit)

    async def close(self) -> None:
        await self._client.aclose()

    def payload(self, content: EmailContent, emails: list[Email]) -> dict[str, Any]:
        mail = Mail(from_email=self._from, subject=content.subject)
        mail.add_content(Content("text/plain", content.text))
        if content.html:
            mail.add_content(Content("text/html", content.html))
        mail.category = Category(content.category)
        # The message-level fields come from the SDK's helpers; the up-to-1000
        # personalizations are written as the same JSON directly: building a helper object
        # for each one cost about 25 ms a request.
        payload: dict[str, Any] = mail.get()
        payload["personalizations"] = [
            {
                "to": [
                    {"email": email.address, "name": email.name}
                    if email.name
                    else {"email": email.address}
                ],
                "custom_args": {"delivery_id": email.delivery_id, "notice_id": email.notice_id},
            }
            for email in emails
        ]
        return payload

    async def send(self, content: EmailContent, emails: list[Email]) -> Outcome:
        """One request for up to 1000 emails of one notice: one outcome for all of them."""
        assert len(emails) <= MAX_PERSONALIZATIONS
        payload = self.payload(content, emails)
        async with self._slots:
            await self._throttle.wait()
            started = time.perf_counter()
            try:
                response = await self._client.post(
                    "/v3/mail/send", content=orjson.dumps(payload), headers=_JSON
                )
            except httpx.TimeoutException:
                _called("sendgrid", "mail_send", started, "timeout")
                return Outcome.transient("timeout: SendGrid did not answer in time")
            except httpx.TransportError as problem:
                _called("sendgrid", "mail_send", started, "connection_error")
                return Outcome.transient(f"connection error: {type(problem).__name__}")
        _called("sendgrid", "mail_send", started, response.status_code)
        if response.status_code == 202:
            return Outcome.accepted(response.headers.get("X-Message-Id", ""))
        return http_outcome(
            response.status_code,
            _sendgrid_reason(response),
            response.headers.get("X-RateLimit-Reset"),
        )


def _sendgrid_reason(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors", [])
        text = "; ".join(
            f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
            for e in errors
        )
    except (ValueError, AttributeError):
        text = ""
    return text or response.reason_phrase


class _TwilioHttp(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's client, without formatting each request and response (their headers
    included) for its INFO log when nothing logs at INFO (3 % of the worker's samples
    while texts were sent), and with the form encoded before aiohttp sees it: given a
    dict, aiohttp builds a FormData and a multipart writer for each request before it
    encodes the same bytes (18 % of the worker's time in a text)."""

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> Any:
        body = form(data) if isinstance(data, dict) else data
        return await super().request(method, url, params, body, headers, **options)

    def log_request(self, kwargs: dict[str, Any]) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            super().log_request(kwargs)

    def log_response(self, status_code: int, response: Any) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            super().log_response(status_code, response)


def form(data: dict[str, object]) -> bytes:
    """``application/x-www-form-urlencoded``, byte for byte as aiohttp encodes a dict."""
    return urlencode(data, doseq=True).encode()


class Twilio:
    def __init__(self, settings: WorkerSettings) -> None:
        self._http = _TwilioHttp(timeout=settings.provider_timeout_s)
        self._client = Client(
            settings.twilio_account_sid, settings.twilio_auth_token, http_client=self._http
        )
        if settings.twilio_base_url:
            self._client.api.base_url = settings.twilio_base_url
        self._from = settings.twilio_from or ""
        self._callback = f"{settings.webhook_base_url}/webhooks/twilio"
        self._slots = asyncio.Semaphore(settings.twilio_concurrency)
        self._throttle = Throttle(settings.twilio_rate_limit)

    async def close(self) -> None:
        await self._http.close()

    async def send(self, delivery_id: str, to: str, body: str) -> Outcome:
        sender = (
            {"messaging_service_sid": self._from}
            if self._from.startswith("MG")
            else {"from_": self._from}
        )
        async with self._slots:
            await self._throttle.wait()
            started = time.perf_counter()
            try:
                message = await self._client.messages.create_async(
                    to=to,
                    body=body,
                    status_callback=f"{self._callback}?{urlencode({'delivery_id': delivery_id})}",
                    **sender,
                )
            except TwilioRestException as refused:
                _called("twilio", "messages_create", started, refused.status)
                if refused.status == 429 or refused.status >= 500:
                    return Outcome.transient(f"{refused.status} Twilio error {refused.code}")
                return Outcome.permanent(str(refused.code), str(refused.msg))
            except TimeoutError:
                _called("twilio", "messages_create", started, "timeout")
                return Outcome.transient("timeout: Twilio did not answer in time")
            except aiohttp.ClientError as problem:
                _called("twilio", "messages_create", started, "connection_error")
                return Outcome.transient(f"connection error: {type(problem).__name__}")
        _called("twilio", "messages_create", started, 201)
        return Outcome.accepted(message.sid)

    async def sent_to(self, to: str, since: dt.datetime) -> list[Listed] | None:
        """The texts Twilio lists as sent to ``to`` since the day of ``since`` (its
        ``DateSent`` filter is documented with a date; the caller compares the times),
        newest first; one not sent yet (``date_sent`` null) is not among them. None when
        the list could not be read."""
        async with self._slots:
            await self._throttle.wait()
            started = time.perf_counter()
            try:
                messages = await self._client.messages.list_async(
                    to=to, date_sent_after=since.astimezone(dt.UTC).strftime("%Y-%m-%d")
                )
            except TwilioRestException as refused:
                _called("twilio", "messages_list", started, refused.status)
                return None
            except TimeoutError:
                _called("twilio", "messages_list", started, "timeout")
                return None
            except aiohttp.ClientError:
                _called("twilio", "messages_list", started, "connection_error")
                return None
            _called("twilio", "messages_list", started, 200)
        return [Listed(m.sid, m.body, m.date_created) for m in messages if m.date_created]
