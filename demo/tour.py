"""The tour: start everything on the embedded defaults, send notices to a sample
co-ownership through the provider sandbox, and check at every step that the journal, the
statistics, the bounce policy, resends and preferences say what they should; stop
everything, and exit non-zero naming the first step that misbehaved."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from demo import owners as sample
from demo.output import DemoStepError, Tour
from relaybook.access.auth import create_token
from relaybook.access.people import People
from relaybook.platform.runtime import admin_token
from relaybook.tooling.embedded import free_port_settings, running_postgres_pid
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System

#: how long any one step may wait for messages to move before it fails
WITHIN_S = 40.0
DEPOSIT_CALL = "DC-2026-Q4"
#: the agency (syndic) managing the sample co-ownership, and a second one beside it
AGENCY, PROPERTY = "syndic-tilleuls", "residence-les-tilleuls"
OTHER_AGENCY, OTHER_PROPERTY = "syndic-bellevue", "residence-bellevue"
MANAGER_SCOPES = ["notices:write", "journal:read", "preferences:write"]
#: the person the tour leaves signed up for the console (the password is made per run)
CONSOLE_MANAGER = "manager@tilleuls.example.org"


async def run_demo(
    settings: Settings, *, data_dir: str | None, as_json: bool, stay: bool = False
) -> int:
    """Runs the tour on embedded servers and the sandbox (of ``settings`` only the logging
    is kept); returns the process exit code (0 only if every step behaved). With
    ``stay``, the system stays up after the tour until SIGINT or SIGTERM, for a newcomer
    to sign in to the console and click through what the tour did."""
    tour = Tour(as_json)
    started = time.monotonic()
    error: str | None = None
    # never the default ports, which a running `up` may hold
    ports: dict[str, Any] = free_port_settings()
    with tempfile.TemporaryDirectory(prefix="relaybook-demo-") as scratch:
        # Always the embedded defaults, whatever is configured: the tour's made-up owners
        # must never reach a real database, broker or provider.
        demo_settings = Settings(
            data_dir=Path(data_dir) if data_dir else Path(scratch),
            **ports,
            sandbox_batch_interval_s=0.1,
            log_level=settings.log_level,
            log_format=settings.log_format,
        )
        try:
            await _tour(tour, demo_settings, stay=stay)
        except DemoStepError as failure:
            error = str(failure)
    total = time.monotonic() - started
    if as_json:
        print(json.dumps(tour.report(error is None, error, total), indent=2, default=str))
    elif error is None:
        print(f"\nrelaybook demo: every step behaved ({total:.1f} s)")
    else:
        print(f"\nrelaybook demo: {error}", file=sys.stderr)
    return 0 if error is None else 1


class Api:
    """The dispatcher API as the admin."""

    def __init__(self, client: httpx.AsyncClient, base: str, token: str) -> None:
        self._client = client
        self._base = base
        self._headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        answer = await self._client.request(
            method, f"{self._base}{path}", headers=self._headers, **kwargs
        )
        return answer.status_code, answer.json()

    async def get(self, path: str, **params: str) -> Any:
        return (await self.call("GET", path, params=params))[1]


async def _tour(tour: Tour, settings: Settings, *, stay: bool) -> None:
    started = time.monotonic()
    system = System(settings)
    try:
        await system.__aenter__()
    except Exception as problem:  # noqa: BLE001 - reported as the failing step
        tour.record("start the system", False, str(problem), started)
    failure: DemoStepError | None = None
    try:
        assert system.infra is not None
        embedded = ", ".join(system.infra.embedded) or "nothing"
        tour.record("start the system", True, f"embedded: {embedded}", started)
        async with httpx.AsyncClient(timeout=30) as client:
            for name, server in system.servers.items():
                step_started = time.monotonic()
                answer = await _ready(client, f"{server.url}/readyz")
                tour.record(
                    f"{name} is ready",
                    answer["status"] == "ready",
                    ", ".join(f"{k}: {v}" for k, v in answer["checks"].items())
                    or "no dependencies",
                    step_started,
                )
            tour.record("start-up to ready", True, f"{len(system.running)} services", started)
            url = system.servers["dispatcher"].url
            api = Api(client, url, admin_token(system.settings))
            pool = system.infra.pool
            manager = Api(
                client,
                url,
                await create_token(pool, "manager-tilleuls", MANAGER_SCOPES, agencies=[AGENCY]),
            )
            support = Api(
                client, url, await create_token(pool, "support-desk", [*MANAGER_SCOPES, "support"])
            )
            other = Api(
                client,
                url,
                await create_token(
                    pool, "manager-bellevue", MANAGER_SCOPES, agencies=[OTHER_AGENCY]
                ),
            )
            deposit_call = await _deposit_call(tour, api, system.servers["sandbox"].url)
            await _journal(tour, api)
            await _bounce_policy(tour, api)
            await _resend(tour, api, deposit_call)
            await _support(tour, api, manager, support, deposit_call)
            await _owners_word(tour, client, system, manager, support)
            await _agencies(tour, manager, other, deposit_call)
            await _summary(tour, api)
            password = await _console(tour, client, url, pool)
            if stay:
                await _stay(tour, url, password)
            else:
                tour.say("       (it stops with the tour: `relaybook demo --stay` keeps it up)")
    except DemoStepError as problem:  # stop everything all the same, then report it
        failure = problem
    finally:
        stop_started = time.monotonic()
        await system.__aexit__(None, None, None)
    leftover = running_postgres_pid(settings.data_dir)
    tour.record(
        "stop cleanly",
        leftover is None,
        "servers, broker and database stopped"
        if leftover is None
        else f"PostgreSQL still running (pid {leftover})",
        stop_started,
    )
    if failure is not None:
        raise failure


def _notice(title: str, kind: str, reference: str, subject: str, text: str) -> dict[str, Any]:
    return {
        "source": {
            "service": "accounting" if kind == "deposit_call" else "syndic",
            "kind": kind,
            "reference": reference,
        },
        "title": title,
        "agency": AGENCY,
        "property": PROPERTY,
        "email": {"subject": subject, "text": f"{text} https://portal.tilleuls.example.org/"},
        "sms": {"text": f"Résidence Les Tilleuls: {subject}. Details on the owners' portal."},
        "recipients": [owner | {"properties": [PROPERTY]} for owner in sample.owners()],
        "send": True,
    }


async def _send(tour: Tour, api: Api, body: dict[str, Any], step: str) -> dict[str, Any]:
    started = time.monotonic()
    status, notice = await api.call("POST", "/v1/notices", json=body)
    tour.record(
        step,
        status == 201,
        f"HTTP {status}: {body['title']!r} to {len(body['recipients'])} owners, email and SMS",
        started,
    )
    return await _settle(tour, api, notice["id"], "messages reach their final state")


async def _settle(tour: Tour, api: Api, notice_id: str, step: str) -> dict[str, Any]:
    """Waits until every message of the notice is delivered, failed or skipped and the
    statistics stop moving (late opens and clicks); draws the progress meanwhile."""
    started = time.monotonic()
    notice: dict[str, Any] = {}
    steady = 0
    previous = None
    while time.monotonic() - started < WITHIN_S:
        notice = await api.get(f"/v1/notices/{notice_id}")
        stats = notice["stats"]
        total = notice["recipients"] * len(stats)
        final = sum(s["delivered"] + s["failed"] + s["skipped"] for s in stats.values())
        sent = sum(s["sent"] for s in stats.values())
        tour.progress("sending", final, total, f"handed to the providers {sent}, final {final}")
        done = final == total and notice["status"] != "sending"
        steady = steady + 1 if done and stats == previous else 0
        previous = stats
        if steady >= 3:
            break
        await asyncio.sleep(0.25)
    else:
        stats = notice.get("stats", {})
        waiting = ", ".join(
            f"{channel} {s['queued'] + s['sent'] - s['delivered'] - s['failed']}"
            for channel, s in stats.items()
        )
        tour.record(
            step,
            False,
            f"timed out after {WITHIN_S:g} s; not yet delivered or failed: {waiting} "
            f"(status {notice.get('status')})",
            started,
        )
    tour.record(step, True, f"status {notice['status']}", started, data=notice["stats"])
    _funnel(tour, notice)
    return notice


def _funnel(tour: Tour, notice: dict[str, Any]) -> None:
    fields = ("sent", "delivered", "opened", "clicked", "failed", "skipped")
    tour.table(
        ("channel", *fields),
        [(channel, *(stats[f] for f in fields)) for channel, stats in notice["stats"].items()],
    )


async def _check(
    tour: Tour, step: str, condition: Callable[[], Awaitable[tuple[bool, str]]], data: Any = None
) -> None:
    """Polls ``condition`` (``(ok, what it saw)``) until it holds, for up to WITHIN_S."""
    started = time.monotonic()
    ok, seen = await condition()
    while not ok and time.monotonic() - started < WITHIN_S:
        await asyncio.sleep(0.25)
        ok, seen = await condition()
    tour.record(step, ok, seen, started, data)


# --- 1. the deposit call ----------------------------------------------------------------


def _personal(body: dict[str, Any]) -> dict[str, Any]:
    """The deposit call as each owner gets it: their lots, share, amount, due date and
    reference, in French or, for those who read it, Dutch."""
    portal = "https://portal.tilleuls.example.org/"
    return body | {
        "default_language": "fr",
        "email": {
            "subject": "Appel de fonds T4 2026 : {{ data.amount | money }}",
            "text": "Bonjour {{ recipient.name }},\n\nLots {{ data.lots | join: ', ' }}"
            " ({{ data.share }} millièmes) : {{ data.amount | money }} à régler avant le"
            " {{ data.due | date }}, référence {{ data.reference }}.\n" + portal,
        },
        "sms": {
            "text": "Les Tilleuls : appel de fonds {{ data.amount | money }} avant le"
            " {{ data.due | date }}, réf. {{ data.reference }}."
        },
        "content": {
            "nl": {
                "email": {
                    "subject": "Provisie-oproep K4 2026: {{ data.amount | money }}",
                    "text": "Beste {{ recipient.name }},\n\nKavels {{ data.lots | join: ', ' }}"
                    " ({{ data.share }} duizendsten): {{ data.amount | money }} te betalen"
                    " voor {{ data.due | date }}, referentie {{ data.reference }}.\n" + portal,
                },
                "sms": {
                    "text": "Les Tilleuls: provisie {{ data.amount | money }} voor"
                    " {{ data.due | date }}, ref. {{ data.reference }}."
                },
            }
        },
        "recipients": [
            person | {"data": sample.data(int(person["id"].removeprefix("owner-")))}
            for person in body["recipients"]
        ],
    }


async def _deposit_call(tour: Tour, api: Api, sandbox: str) -> dict[str, Any]:
    tour.heading("1. A deposit call to the 120 owners of Résidence Les Tilleuls, each their own")
    body = _personal(
        _notice(
            "Deposit call Q4 2026",
            "deposit_call",
            DEPOSIT_CALL,
            "Deposit call Q4 2026",
            "Your deposit call for Q4 2026 is available.",
        )
    )
    notice = await _send(tour, api, body, "publish the deposit call")
    await _own_figures(tour, sandbox)
    email, sms = notice["stats"]["email"], notice["stats"]["sms"]
    failing_mail = len(sample.BOUNCING) + len(sample.FULL) + len(sample.BLOCKED)
    expected = {
        "email failed": (email["failed"], failing_mail),
        "email skipped (no address)": (email["skipped"], len(sample.NO_EMAIL)),
        "SMS failed": (sms["failed"], len(sample.FAILING_PHONES)),
        "SMS skipped (no number)": (sms["skipped"], len(sample.NO_PHONE)),
        "status": (notice["status"], "partially_failed"),
    }
    wrong = {k: f"{got} (expected {want})" for k, (got, want) in expected.items() if got != want}
    clicks = email["clicked"] >= len(sample.CLICKERS) and email["opened"] >= email["clicked"]
    tour.record(
        "the funnel adds up",
        not wrong and clicks,
        (
            "; ".join(f"{k}: {v}" for k, v in wrong.items())
            or f"{email['delivered']} emails and {sms['delivered']} texts delivered, "
            f"{email['opened']} opened, {email['clicked']} clicked; partially_failed"
        )
        + ("" if clicks else f"; only {email['clicked']} clicks"),
        time.monotonic(),
    )
    return notice


async def _own_figures(tour: Tour, sandbox: str) -> None:
    """What two owners' phones received: each their own amount, one in Dutch."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(f"{sandbox}/_sandbox/messages", params={"provider": "twilio"})
    texts = {m["to"]: m["body"] for m in answer.json()["messages"]}
    french, dutch = 30, sample.DUTCH[0]
    wanted = {
        french: f"appel de fonds {_euros(sample.amount(french), 'fr')} avant le 15 janvier 2027",
        dutch: f"provisie {_euros(sample.amount(dutch), 'nl')} voor 15 januari 2027",
    }
    got = {number: texts.get(sample.phone(number), "") for number in wanted}
    ok = all(wanted[n] in got[n] for n in wanted) and got[french] != got[dutch]
    tour.record(
        "each owner got their own amount, in their language",
        ok,
        f"{sample.owner_id(french)}: {got[french]!r}; {sample.owner_id(dutch)}: {got[dutch]!r}",
        started,
    )


def _euros(amount: Any, language: str) -> str:
    """An amount under 1,000 as a text writes it in the owner's language (the check's own
    formatting; texts have plain spaces)."""
    whole, cents = f"{amount:.2f}".split(".")
    return f"{whole},{cents} €" if language == "fr" else f"€ {whole},{cents}"


# --- 2. the journal --------------------------------------------------------------------


async def _journal(tour: Tour, api: Api) -> None:
    tour.heading(f"2. The journal of {DEPOSIT_CALL}: what happened to each message")
    started = time.monotonic()
    failed = await api.get("/v1/journal", source_reference=DEPOSIT_CALL, status="failed")
    clicked = await api.get(
        "/v1/journal", source_reference=DEPOSIT_CALL, status="clicked", limit="3"
    )
    rows = [*failed["items"], *clicked["items"]]
    tour.table(
        ("recipient", "channel", "status", "sent", "delivered", "clicked", "why"),
        [
            (
                r["recipient_id"],
                r["channel"],
                r["status"],
                _clock(r["sent_at"]),
                _clock(r["delivered_at"]),
                _clock(r["clicked_at"]),
                f"{r['provider_code'] or ''} {(r['reason'] or '')[:48]}".strip(),
            )
            for r in rows
        ],
    )
    expected = (
        len(sample.BOUNCING) + len(sample.FULL) + len(sample.BLOCKED) + len(sample.FAILING_PHONES)
    )
    explained = all(r["reason"] for r in failed["items"])
    tour.record(
        "every failure says why",
        len(failed["items"]) == expected and explained,
        f"{len(failed['items'])} failed messages (expected {expected}), "
        f"{'each with' if explained else 'NOT all with'} the provider's reason and code",
        started,
        data=rows,
    )


def _clock(stamp: str | None) -> str:
    return stamp[11:19] if stamp else ""


# --- 3. the bounce policy ---------------------------------------------------------------


async def _bounce_policy(tour: Tour, api: Api) -> None:
    tour.heading("3. Two more notices: the bounce policy unsubscribes whoever keeps failing")
    complainer = sample.owner_id(next(iter(sample.COMPLAINER)))
    await _check(
        tour,
        "a spam complaint unsubscribes at once, as the owner's own word",
        _wants(api, complainer, "email", "no", by="owner"),
    )
    await _send(
        tour,
        api,
        _notice(
            "General assembly 2027",
            "convocation",
            "AGM-2027",
            "General assembly convocation",
            "You are invited to the general assembly on 15 January 2027.",
        ),
        "publish the general assembly convocation",
    )
    unknown_phone = sample.owner_id(next(iter(sample.FAILING_PHONES)))
    await _check(
        tour, "a number unknown twice loses its texts", _wants(api, unknown_phone, "sms", "no")
    )
    await _send(
        tour,
        api,
        _notice(
            "Lift replacement",
            "works",
            "WORKS-LIFT-2027",
            "Lift replacement works",
            "The lift of building B will be replaced from 3 to 14 February.",
        ),
        "publish the works notice",
    )
    bouncers = [sample.owner_id(n) for n in sample.BOUNCING]

    async def bouncers_out() -> tuple[bool, str]:
        states = [await _preference(api, owner, "email") for owner in bouncers]
        out = sum(state["wants"] == "no" for state in states)
        return out == len(bouncers), f"{out} of {len(bouncers)} bouncing owners unsubscribed"

    await _check(tour, "three hard bounces unsubscribe", bouncers_out)

    started = time.monotonic()
    automatic = await api.get("/v1/preferences", reason="automatic")
    rows = [
        (item["recipient_id"], channel, item[channel]["reason"][:70])
        for item in automatic["items"]
        for channel in ("email", "sms")
        if item[channel]["changed_by"] == "automatic"
    ]
    tour.table(("owner", "channel", "why (automatic)"), rows)
    expected = {(o, "email") for o in bouncers} | {(unknown_phone, "sms")}
    found = {(owner, channel) for owner, channel, _ in rows}
    tour.record(
        "the overview shows who and why",
        found == expected,
        f"{len(found)} automatic unsubscribes"
        + ("" if found == expected else f" (expected {sorted(expected)}, found {sorted(found)})"),
        started,
        data=rows,
    )

    started = time.monotonic()
    no_email = await api.get("/v1/preferences", wants_email="not_applicable")
    kept = {
        sample.owner_id(n): (await _preference(api, sample.owner_id(n), "email"))["wants"]
        for n in (*sample.BLOCKED, *sample.FULL)
    }
    fair = all(wants == "yes" for wants in kept.values())
    tour.record(
        "blocks by reputation are not the owner's fault",
        fair and len(no_email["items"]) == len(sample.NO_EMAIL),
        f"blocked and full mailboxes still subscribed: {fair}; "
        f"{len(no_email['items'])} owners without email: not_applicable",
        started,
        data=kept,
    )


def _wants(
    api: Api, owner: str, channel: str, value: str, by: str | None = None
) -> Callable[[], Awaitable[tuple[bool, str]]]:
    async def check() -> tuple[bool, str]:
        state = await _preference(api, owner, channel)
        done = state["wants"] == value and by in {None, state["changed_by"]}
        return done, (
            f"{owner} {channel}: {state['wants']} ({state['changed_by']}), {state['reason']}"
        )

    return check


async def _preference(api: Api, owner: str, channel: str) -> dict[str, Any]:
    answer: dict[str, Any] = (await api.get(f"/v1/recipients/{owner}/preferences"))[channel]
    return answer


# --- 4. resend failures -----------------------------------------------------------------


async def _resend(tour: Tour, api: Api, notice: dict[str, Any]) -> None:
    tour.heading(f"4. Resend the failures of {DEPOSIT_CALL}")
    moved = sample.owner_id(next(iter(sample.FULL)))
    started = time.monotonic()
    status, _ = await api.call(
        "PATCH", f"/v1/recipients/{moved}", json={"email": f"{moved}+click@tilleuls.example.org"}
    )
    tour.record(
        "a manager fixes one address",
        status == 200,
        f"{moved}'s mailbox was full: new address",
        started,
    )
    started = time.monotonic()
    path = f"/v1/notices/{notice['id']}"
    options = await api.get(f"{path}/resend-options", recipient_ids=f"{moved},owner-100")
    tour.table(
        ("scope", "recipients", "emails", "texts", "left out (unsubscribed since)"),
        [
            (scope, o["recipients"], o["email"], o["sms"], o["excluded"]["recipients"])
            for scope, o in options.items()
        ],
    )
    failed = options["failed"]
    want = {"recipients": 6, "email": 4, "sms": 2}
    got = {k: failed[k] for k in want}
    tour.record(
        "resend options count each scope",
        got == want,
        f"failed only: {got}; {failed['excluded']['recipients']} left out",
        started,
        data=options,
    )
    started = time.monotonic()
    status, answer = await api.call("POST", f"{path}/resends", json={"scope": "failed"})
    tour.record(
        "resend the failures",
        status == 202 and {k: answer.get(k) for k in want} == got,
        f"HTTP {status}: {answer.get('email')} emails and {answer.get('sms')} texts again",
        started,
    )
    after = await _settle(tour, api, notice["id"], "the resent messages reach their final state")
    started = time.monotonic()
    row = await _row(api, notice["id"], moved)
    before_failed = notice["stats"]["email"]["failed"]
    tour.record(
        "the fixed address gets through",
        row["email"]["status"] in {"delivered", "opened", "clicked"}
        and after["stats"]["email"]["failed"] == before_failed - 1,
        f"{moved}: {row['email']['status']}; email failures {before_failed} -> "
        f"{after['stats']['email']['failed']} (blocked and full mailboxes fail again)",
        started,
    )
    history = (await api.get(f"{path}/resends"))["items"]
    tour.table(
        ("when", "by", "scope", "recipients", "emails", "texts", "full"),
        [
            (
                _clock(h["created_at"]),
                h["requested_by"],
                h["scope"],
                h["recipients"],
                h["email"],
                h["sms"],
                h["full"],
            )
            for h in history
        ],
    )


async def _row(api: Api, notice_id: str, owner: str) -> dict[str, Any]:
    cursor = None
    while True:
        params: dict[str, str] = {"cursor": cursor} if cursor else {}
        page = await api.get(f"/v1/notices/{notice_id}/recipients", **params)
        for item in page["items"]:
            if item["id"] == owner:
                return item  # type: ignore[no-any-return]
        cursor = page["next_cursor"]
        if cursor is None:
            raise DemoStepError(f"{owner} is not a recipient of {notice_id}")


# --- 5. support ---------------------------------------------------------------------------


async def _support(
    tour: Tour, api: Api, manager: Api, support: Api, notice: dict[str, Any]
) -> None:
    tour.heading("5. Only support brings an automatically unsubscribed address back")
    owner = sample.owner_id(next(iter(sample.BOUNCING)))
    started = time.monotonic()
    back = {"email": "yes", "reason": "Owner called: their mail server is fixed (ticket 4411)"}
    status, answer = await manager.call("PUT", f"/v1/recipients/{owner}/preferences", json=back)
    tour.record(
        "the agency's manager cannot reverse it",
        status == 403 and answer.get("error") == "support_only",
        f"HTTP {status} {answer.get('error')}: contact support",
        started,
    )
    started = time.monotonic()
    status, answer = await support.call(
        "PUT", f"/v1/recipients/{owner}/preferences", params={"agency": AGENCY}, json=back
    )
    email = answer.get("email", {}) if isinstance(answer, dict) else {}
    tour.table(
        ("owner", "channel", "wants", "changed by", "who", "why"),
        [
            (
                owner,
                "email",
                email.get("wants"),
                email.get("changed_by"),
                email.get("changed_by_name"),
                email.get("reason"),
            )
        ],
    )
    tour.record(
        "support overrides the automatic unsubscribe",
        status == 200 and email.get("changed_by") == "support" and email.get("wants") == "yes",
        f"HTTP {status}: recorded as {email.get('changed_by')}, the suppression lifted",
        started,
    )
    started = time.monotonic()
    status, answer = await api.call(
        "POST",
        f"/v1/notices/{notice['id']}/resends",
        json={"scope": "selected", "recipient_ids": [owner]},
    )
    tour.record(
        "resend the deposit call to that owner",
        status == 202 and answer.get("email") == 1,
        f"HTTP {status}: {answer.get('email')} email",
        started,
    )

    async def handed_over() -> tuple[bool, str]:
        row = await _row(api, notice["id"], owner)
        return row["email"]["status"] not in {"queued", "skipped"}, (
            f"{owner}: {row['email']['status']} (the sandbox's mailbox of this owner still "
            "bounces: its failures count again from zero)"
        )

    await _check(tour, "the provider is given it again", handed_over)


async def _owners_word(
    tour: Tour, client: httpx.AsyncClient, system: System, manager: Api, support: Api
) -> None:
    tour.heading("6. The owner's STOP is theirs: nobody else brings the texts back")
    number = next(iter(sample.CLICKERS))
    owner, phone = sample.owner_id(number), sample.phone(number)
    sandbox = f"{system.servers['sandbox'].url}/_sandbox/twilio/inbound"
    started = time.monotonic()
    answer = await client.post(sandbox, json={"from": phone, "body": "STOP"})
    tour.record(
        "the owner texts STOP", answer.status_code == 202, f"HTTP {answer.status_code}", started
    )
    await _check(tour, "their texts stop", _wants(manager, owner, "sms", "no", by="owner"))
    again = {"sms": "yes", "reason": "The agency thinks the owner still wants texts"}
    path = f"/v1/recipients/{owner}/preferences"
    refused = []
    for who, caller in (("manager", manager), ("support", support)):
        started = time.monotonic()
        status, body = await caller.call("PUT", path, params={"agency": AGENCY}, json=again)
        refused.append((who, status, body.get("error")))
        tour.record(
            f"the {who}'s yes is refused",
            (status, body.get("error")) == (409, "owner_opted_out"),
            f"HTTP {status} {body.get('error')}: only the owner lifts their own opt-out",
            started,
        )
    tour.table(("who", "HTTP", "error"), refused)
    started = time.monotonic()
    answer = await client.post(sandbox, json={"from": phone, "body": "START"})
    tour.record(
        "the owner texts START", answer.status_code == 202, f"HTTP {answer.status_code}", started
    )
    await _check(tour, "their texts come back", _wants(manager, owner, "sms", "yes"))


async def _agencies(tour: Tour, tilleuls: Api, bellevue: Api, notice: dict[str, Any]) -> None:
    tour.heading("7. Two agencies side by side, each sees only its own")
    started = time.monotonic()
    owners = [owner | {"properties": [OTHER_PROPERTY]} for owner in sample.owners()[:3]]
    status, theirs = await bellevue.call(
        "POST",
        "/v1/notices",
        json={
            "source": {"service": "syndic", "kind": "announcement", "reference": "BV-LIFT"},
            "title": "Lift maintenance, Résidence Bellevue",
            "property": OTHER_PROPERTY,
            "email": {"subject": "Lift maintenance", "text": "The lift stops on Monday."},
            "recipients": owners,
        },
    )
    tour.record(
        "another agency drafts to owners of the same ids",
        status == 201 and theirs.get("agency") == OTHER_AGENCY,
        f"HTTP {status}: {len(owners)} owners of {OTHER_AGENCY}, ids {owners[0]['id']}...",
        started,
    )
    started = time.monotonic()
    seen = [
        (await tilleuls.call("GET", f"/v1/notices/{theirs.get('id')}"))[0],
        (await bellevue.call("GET", f"/v1/notices/{notice['id']}"))[0],
    ]
    own = await tilleuls.get("/v1/preferences", property=OTHER_PROPERTY)
    same_id = await bellevue.get(f"/v1/recipients/{owners[0]['id']}/preferences")
    journal = await bellevue.get("/v1/journal", limit="500")
    tour.table(
        ("asked by", "about", "answer"),
        [
            (AGENCY, f"{OTHER_AGENCY}'s notice", seen[0]),
            (OTHER_AGENCY, f"{AGENCY}'s deposit call", seen[1]),
            (AGENCY, f"owners of {OTHER_PROPERTY}", f"{len(own['items'])} listed"),
            (OTHER_AGENCY, f"{owners[0]['id']}'s email", same_id["email"]["wants"]),
            (OTHER_AGENCY, "its journal", f"{len(journal['items'])} messages"),
        ],
    )
    tour.record(
        "neither agency sees the other's data",
        seen == [404, 404]
        and own["items"] == []
        and same_id.get("agency") == OTHER_AGENCY
        and {item["notice_id"] for item in journal["items"]} == {theirs.get("id")},
        "404 both ways; the same owner id is two recipients, one per agency",
        started,
    )


async def _summary(tour: Tour, api: Api) -> None:
    tour.heading("Summary")
    rows = []
    for reference in (DEPOSIT_CALL, "AGM-2027", "WORKS-LIFT-2027"):
        journal = await api.get("/v1/journal", source_reference=reference, limit="1")
        notice = await api.get(f"/v1/notices/{journal['items'][0]['notice_id']}")
        email, sms = notice["stats"]["email"], notice["stats"]["sms"]
        rows.append(
            (
                reference,
                notice["status"],
                f"{email['delivered']}/{email['failed']}/{email['skipped']}",
                f"{sms['delivered']}/{sms['failed']}/{sms['skipped']}",
            )
        )
    tour.table(
        ("notice", "status", "email delivered/failed/skipped", "SMS delivered/failed/skipped"), rows
    )


async def _ready(client: httpx.AsyncClient, url: str, within: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + within
    answer: dict[str, Any] = {"status": "no answer", "checks": {}}
    while time.monotonic() < deadline:
        try:
            response = await client.get(url)
            answer = response.json()
            if response.status_code == 200:
                return answer
        except httpx.HTTPError as problem:
            answer = {"status": "no answer", "checks": {"http": str(problem)}}
        await asyncio.sleep(0.1)
    return answer


# --- 7. the console -----------------------------------------------------------------------


async def _console(tour: Tour, client: httpx.AsyncClient, url: str, pool: Any) -> str:
    """A manager of the agency, with a password made now, signs in to the console and
    finds the tour's notices there; returns the password."""
    tour.heading("8. The console: what the tour did, in a browser")
    started = time.monotonic()
    password = secrets.token_urlsafe(12)
    await People(pool).create(CONSOLE_MANAGER, "manager", password, [AGENCY])
    browser = httpx.AsyncClient(timeout=30, headers={"Accept-Language": "en"})
    async with browser:
        form = await browser.get(f"{url}/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        signed = await browser.post(
            f"{url}/ui/login",
            data={
                "csrf": csrf.group(1) if csrf else "",
                "email": CONSOLE_MANAGER,
                "password": password,
                "next": "/ui/notices",
            },
        )
        tour.record(
            "a manager signs in to the console",
            signed.status_code == 303 and signed.headers.get("location") == "/ui/notices",
            f"HTTP {form.status_code} then {signed.status_code} -> "
            f"{signed.headers.get('location')}: {CONSOLE_MANAGER}, manager of {AGENCY}",
            started,
        )
        started = time.monotonic()
        listing = await browser.get(f"{url}/ui/notices")
    titles = ("Deposit call Q4 2026", "General assembly 2027", "Lift replacement")
    shown = [title for title in titles if title in listing.text]
    hidden = "Lift maintenance, Résidence Bellevue" not in listing.text
    tour.record(
        "the console lists the tour's notices",
        listing.status_code == 200 and shown == list(titles) and hidden,
        f"HTTP {listing.status_code}: {len(shown)} of {len(titles)} notices shown"
        + ("" if hidden else "; the other agency's notice shown too"),
        started,
        data={"console": f"{url}/ui/", "email": CONSOLE_MANAGER},
    )
    tour.say(f"       console   {url}/ui/")
    tour.say(f"       sign in   {CONSOLE_MANAGER}  password {password}")
    return password


async def _stay(tour: Tour, url: str, password: str) -> None:
    """Keeps everything up until Ctrl-C (or SIGTERM), the sign-in in plain sight."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    lines = [
        "",
        f"relaybook demo --stay: the system stays up until Ctrl-C. Open {url}/ui/ and sign",
        f"in as {CONSOLE_MANAGER} with the password {password} to click through the tour.",
    ]
    # with --json, stdout holds only the report (printed at the end): the sign-in goes
    # to stderr
    print("\n".join(lines), file=sys.stderr if tour.as_json else sys.stdout, flush=True)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)
    tour.say("relaybook demo: stopping")
