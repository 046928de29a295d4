"""What every page of the console shares: the signed-in session, the caller it stands
for (the same scoped queries as the API serve it), the language and time zone, the
templates, CSRF on every change, the security headers, and the error pages.

A page is an ``async`` function of a :class:`View`, mounted by :meth:`Console.page`. It
runs inside ``scope.serving(caller)``: the stores it calls see only the agencies of the
person signed in (narrowed to the agency they picked), as an API token of theirs would.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from console import i18n
from console.i18n import N_
from relaybook.access import scope
from relaybook.access.auth import Caller
from relaybook.access.sessions import Session, Sessions
from relaybook.platform.faults import UnavailableError, is_transient
from relaybook.platform.http import UnstorableInputError, read_form
from relaybook.platform.logs import get_logger

log = get_logger(__name__)

SESSION_COOKIE = "rb_session"
LOGIN_PATH = "/ui/login"
#: a form or fetch carries the session's CSRF token in this field or header
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
#: no inline script or style anywhere: every script is a file of ours under /ui/static/
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: a form's body is small: a preference change, a resend's selection of a page of rows
MAX_FORM_FIELDS = 2000

_AGENCIES = "SELECT id FROM agencies ORDER BY id LIMIT 1000"

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
#: marks a text a template passes on to be translated where it is shown (Babel finds it)
_templates.globals["N_"] = i18n.N_


class PageError(Exception):
    """A page refused: ``status`` (404, 403, 400, 409...) and what to tell the person
    (English, translated when shown)."""

    def __init__(self, status: int, message: str, **values: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.values = values


def not_found() -> PageError:
    # another agency's notice answers exactly what a notice that never existed does
    return PageError(404, N_("This page does not exist, or is not yours to see."))


@dataclasses.dataclass
class View:
    """A page's request, as its handler gets it."""

    request: Request
    session: Session
    language: str
    console: Console
    #: the form's fields, read (and CSRF-checked) before the handler runs on a POST
    form: FormData | None = None
    #: the agencies the person may pick from (the header's picker)
    agencies: list[str] = dataclasses.field(default_factory=list)

    @property
    def caller(self) -> Caller:
        return self.session.caller

    def t(self, text: str, **values: object) -> str:
        return i18n.translate(self.language, text, **values)

    def reason(self, code: str) -> str:
        """Why a message is not sent (a code of relaybook.reachability.reasons), labelled."""
        return i18n.reason(self.language, code)

    def when(self, value: dt.datetime | None, *, short: bool = False) -> str:
        return i18n.when(value, self.language, self.session.time_zone, short=short)

    def may(self, scope_name: str) -> bool:
        return scope_name in self.caller.scopes

    def render(self, template: str, *, http_status: int = 200, **context: Any) -> HTMLResponse:
        """The page of ``template`` (``http_status`` is the answer's; a template variable
        may be called ``status``)."""
        return self.console.render(self.request, template, http_status, view=self, **context)

    def field(self, name: str) -> str:
        """A field of the form posted (empty when missing)."""
        assert self.form is not None, "only a POST page has a form"
        value = self.form.get(name, "")
        return value if isinstance(value, str) else ""


Handler = Callable[[View], Awaitable[Response]]


class Console:
    def __init__(self, sessions: Sessions, pool: asyncpg.Pool, *, https: bool = False) -> None:
        """``https``: browsers reach the console over https whatever a request says (its
        public URL is https): its cookies are always ``Secure``."""
        self.sessions = sessions
        self._pool = pool
        self._https = https

    def secure(self, request: Request) -> bool:
        """Whether the cookies set for ``request`` are ``Secure``: always behind an https
        public URL, else when the request came over https (a trusted proxy says so)."""
        return self._https or request.url.scheme == "https"

    async def agencies(self, person: Caller) -> list[str]:
        """The agencies ``person`` may pick from: theirs, or every one for the platform's
        staff."""
        if person.agencies is not None:
            return sorted(person.agencies)
        return [row["id"] for row in await self._pool.fetch(_AGENCIES)]

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        view: View | None = context.get("view")
        language = view.language if view else request_language(request)
        body = _templates.get_template(template).render(
            t=lambda text, **values: i18n.translate(language, text, **values),
            reason_label=lambda code: i18n.reason(language, code),
            language=language,
            path=request.url.path,
            # where this page is, as it was asked for (raw path and query): to come back to
            page_url=_here(request),
            quote=quote,
            **context,
        )
        response = HTMLResponse(body, status)
        response.headers.update(HEADERS)
        return response

    def error_page(
        self, request: Request, view: View | None, status: int, message: str, **values: object
    ) -> HTMLResponse:
        return self.render(
            request, "error.html", status, view=view, code=status, message=message,
            values=values,
        )  # fmt: skip

    def page(
        self,
        path: str,
        handler: Handler,
        *,
        scopes: Iterable[str] = ("journal:read",),
        methods: tuple[str, ...] = ("GET",),
    ) -> Route:
        """Mounts ``handler`` at ``path``: signed-in people only (others go to the sign-in
        page), holding one of ``scopes``; a POST must carry the session's CSRF token."""
        needed = frozenset(scopes)

        async def serve(request: Request) -> Response:
            view: View | None = None
            try:
                session = await self.sessions.find(request.cookies.get(SESSION_COOKIE, ""))
                if session is None:
                    return _to_sign_in(request)
                view = View(request, session, request_language(request), self)
                view.agencies = await self.agencies(session.person)
                await _admit(view, needed)
                with scope.serving(session.caller):
                    response = await handler(view)
            except PageError as problem:
                return self.error_page(
                    request, view, problem.status, problem.message, **problem.values
                )
            except Exception as problem:
                if not (isinstance(problem, UnavailableError) or is_transient(problem)):
                    raise
                log.warning("console page unavailable", error=type(problem).__name__)
                busy = self.error_page(request, view, 503, _BUSY)
                busy.headers["Retry-After"] = "5"
                return busy
            response.headers.update(HEADERS)
            return response

        return Route(path, serve, methods=list(methods), name=f"console {path}")


_BUSY = N_("The service is busy or restarting: try again in a moment.")
#: a form holding a NUL, which PostgreSQL cannot store (what a browser never sends)
CANNOT_KEEP = N_(
    "This form holds a character that cannot be kept (a NUL): remove it and try again."
)


async def _admit(view: View, needed: frozenset[str]) -> None:
    """PageError unless the person holds one of the scopes ``needed``, and a POST carries
    the session's CSRF token (its form is read into ``view.form``)."""
    session = view.session
    if needed and not needed & session.caller.scopes:
        raise PageError(403, N_("Your role does not allow this."))
    if view.request.method != "POST":
        return
    try:
        view.form = await read_form(view.request, MAX_FORM_FIELDS)
    except UnstorableInputError:
        raise PageError(400, CANNOT_KEEP) from None
    sent = view.form.get(CSRF_FIELD) or view.request.headers.get(CSRF_HEADER, "")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise PageError(403, N_("This form has expired: reload the page and try again."))


def _here(request: Request) -> str:
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1").split("?", 1)[0] if raw else request.url.path
    query = request.url.query
    return path + (f"?{query}" if query else "")


def request_language(request: Request) -> str:
    return i18n.language(
        request.cookies.get(i18n.COOKIE), request.headers.get("accept-language", "")
    )


def _to_sign_in(request: Request) -> Response:
    if request.method != "GET" or request.headers.get("accept") == "text/event-stream":
        # a form posted after the session ended, or a live update: nothing to come back to
        response: Response = Response("sign in again", 401, headers=HEADERS)
        return response
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", 303, headers=HEADERS)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a page of the console only (never another site)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/notices"
