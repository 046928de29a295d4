"""Signing in and out, the language switch and the agency picker."""

from __future__ import annotations

import datetime as dt
import math
import secrets
import zoneinfo

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from console import i18n
from console.i18n import N_
from console.web import (
    CANNOT_KEEP,
    HEADERS,
    LOGIN_PATH,
    SESSION_COOKIE,
    Console,
    PageError,
    View,
    request_language,
    safe_next,
)
from relaybook.access.people import People
from relaybook.access.throttle import Attempt, Throttle
from relaybook.platform.http import UnstorableInputError, read_form

LOGIN_COOKIE = "rb_login"
DEFAULT_TIME_ZONE = "Europe/Paris"
_ZONES = zoneinfo.available_timezones()


def routes(console: Console, people: People, throttle: Throttle) -> list[BaseRoute]:
    async def login_form(request: Request) -> Response:
        return _login_page(console, request, request.query_params.get("next"))

    async def login(request: Request) -> Response:
        try:
            form = await read_form(request, max_fields=10)
        except UnstorableInputError:
            return _login_page(console, request, None, CANNOT_KEEP, status=400)
        email = str(form.get("email", ""))[:300]
        password = str(form.get("password", ""))
        target = safe_next(str(form.get("next", "")))
        token = request.cookies.get(LOGIN_COOKIE, "")
        sent = str(form.get("csrf", "")).encode()
        if not token or not secrets.compare_digest(token.encode(), sent):
            return _login_page(
                console, request, target, N_("Your session has ended: sign in again.")
            )
        # counted before the password is checked: see relaybook.access.throttle
        attempt = Attempt.of(email, request.client.host if request.client else None)
        wait = await throttle.admit(attempt)
        if wait is not None:
            return _throttled(console, request, target, wait)
        person = await people.sign_in(email, password)
        if person is None or person.person is None:
            return _login_page(console, request, target, N_("Wrong email or password."), status=401)
        await throttle.succeeded(attempt)
        zone = str(form.get("time_zone", ""))
        cookie = await console.sessions.open(
            person.person, zone if zone in _ZONES else DEFAULT_TIME_ZONE
        )
        response = RedirectResponse(target, 303, headers=HEADERS)
        response.set_cookie(
            SESSION_COOKIE, cookie, path="/ui", httponly=True, samesite="lax",
            secure=console.secure(request),
        )  # fmt: skip
        response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH)
        return response

    async def logout(view: View) -> Response:
        await console.sessions.close(view.session)
        response = RedirectResponse(LOGIN_PATH, 303, headers=HEADERS)
        response.delete_cookie(SESSION_COOKIE, path="/ui")
        return response

    async def pick_agency(view: View) -> Response:
        agency = view.field("agency") or None
        if agency is not None and not view.session.person.sees(agency):
            raise PageError(403, N_("This agency is not one of yours."))
        await console.sessions.pick_agency(view.session, agency)
        return RedirectResponse(safe_next(view.field("back")), 303)

    async def switch_language(request: Request) -> Response:
        chosen = request.query_params.get("to", "")
        response = RedirectResponse(safe_next(request.query_params.get("back")), 303)
        if chosen in i18n.LANGUAGES:
            response.set_cookie(
                i18n.COOKIE, chosen, max_age=365 * 86400, path="/ui", samesite="lax"
            )
        return response

    async def home(_request: Request) -> Response:
        return RedirectResponse("/ui/notices", 303)

    return [
        Route("/ui", home, methods=["GET"]),
        Route("/ui/", home, methods=["GET"]),
        Route(LOGIN_PATH, login_form, methods=["GET"]),
        Route(LOGIN_PATH, login, methods=["POST"]),
        console.page("/ui/logout", logout, scopes=(), methods=("POST",)),
        console.page("/ui/agency", pick_agency, scopes=(), methods=("POST",)),
        Route("/ui/language", switch_language, methods=["GET"]),
    ]


def _throttled(console: Console, request: Request, target: str, wait: dt.timedelta) -> Response:
    seconds = math.ceil(wait.total_seconds())
    if seconds < 60:
        message, values = N_("Too many attempts: try again in {seconds} s."), {"seconds": seconds}
    else:
        message, values = (
            N_("Too many attempts: try again in {minutes} min."),
            {"minutes": math.ceil(seconds / 60)},
        )
    response = _login_page(console, request, target, message, status=429, **values)
    response.headers["Retry-After"] = str(seconds)
    return response


def _login_page(
    console: Console,
    request: Request,
    target: str | None,
    message: str | None = None,
    *,
    status: int = 200,
    **values: object,
) -> Response:
    """The sign-in form, with a fresh token in a cookie and the form (double submit: a
    page of another site cannot sign a browser in)."""
    token = secrets.token_urlsafe(24)
    response = console.render(
        request, "login.html", status, view=None, csrf=token, next=safe_next(target),
        message=message, values=values, language_now=request_language(request),
    )  # fmt: skip
    response.set_cookie(
        LOGIN_COOKIE, token, path=LOGIN_PATH, httponly=True, samesite="strict",
        secure=console.secure(request),
    )  # fmt: skip
    return response
