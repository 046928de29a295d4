"""The ``relaybook`` command: ``up``, ``demo``, ``migrate`` and one command per deployable.

Settings come from ``RELAYBOOK_*`` variables (``relaybook settings`` lists them). Any
start-up problem is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import getpass
import shlex
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relaybook.platform import database, faults, logs
from relaybook.platform.deadletters import DeadLetters, Letter
from relaybook.platform.http import HttpServer, PortInUseError, bind, create_app
from relaybook.platform.kafka import BrokerError, Producer, check_reachable
from relaybook.platform.runtime import settle_garbage_collector
from relaybook.platform.settings import SettingsError, env_name
from relaybook.tooling import ownership
from relaybook.tooling.embedded import EmbeddedError, EmbeddedPostgres
from relaybook.tooling.infrastructure import require_configured
from relaybook.tooling.settings import Settings, documented, load
from schemas import CONTRACTS

if TYPE_CHECKING:
    from relaybook.access.auth import Token
    from relaybook.access.people import Person

EXIT_BAD_SETTING = 2
EXIT_FAILED = 1
#: whom `demo --stay` suggests adding beside it, to try the support role
DEMO_SUPPORT = "support@relaybook.example.org"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaybook",
        description="Notification delivery: notices out by email and SMS, "
        "signed provider webhooks in, a log book of every message.",
        epilog="Settings are RELAYBOOK_* environment variables: `relaybook settings` lists them.",
    )
    # How `relaybook up` starts each of its deployables (relaybook/tooling/processes.py), not for
    # people: the providers' settings are then not required, its sandbox standing in for
    # the providers not configured (infrastructure.require_configured).
    parser.add_argument("--under-up", action="store_true", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "up", help="the whole system in the foreground, on the embedded defaults where unset"
    )
    demo = commands.add_parser("demo", help="a self-checking tour on the embedded defaults")
    demo.add_argument("--data-dir", help="keep the demo's data here (default: a temporary dir)")
    demo.add_argument("--json", action="store_true", help="print a machine-readable report")
    demo.add_argument(
        "--stay",
        action="store_true",
        help="keep the system up after the tour, until Ctrl-C, to click through it in the "
        "console (the sign-in is printed)",
    )
    migrate = commands.add_parser("migrate", help="apply database migrations (idempotent)")
    migrate.add_argument(
        "--allow-newer",
        action="store_true",
        help="a database a newer release migrated is left as it is (exit 0), not refused: "
        "what a rollback's migration step runs",
    )
    commands.add_parser(
        "settings",
        help="list every setting: its value now (secrets masked), default, meaning, and the "
        "package declaring it",
    )
    commands.add_parser("dispatcher", help="the dispatcher API alone (configured servers)")
    commands.add_parser("ingest", help="webhook ingest alone (configured servers)")
    commands.add_parser("sandbox", help="the provider sandbox alone (a local SendGrid and Twilio)")
    commands.add_parser("worker", help="a send worker alone (configured servers)")
    commands.add_parser("tracker", help="the journal tracker alone (configured servers)")
    commands.add_parser("bounce-policy", help="the bounce policy alone (configured servers)")
    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="create a token and print it (once)")
    create.add_argument("--name", required=True, help="who uses it, e.g. accounting")
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: notices:write, journal:read, preferences:write, support, "
        "people:write, ops",
    )
    create.add_argument(
        "--agency",
        action="append",
        dest="agencies",
        metavar="AGENCY",
        help="the agency it works for (repeat for several); none: platform-wide",
    )
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", metavar="DAYS", help="valid this many days")
    expiry.add_argument(
        "--expires-at", metavar="ISO", help="valid until then, e.g. 2027-01-31 (UTC unless given)"
    )
    token_commands.add_parser("list", help="every token: never the token itself")
    revoke = token_commands.add_parser("revoke", help="revoke a token: 401 from now on")
    revoke.add_argument("name_or_id", metavar="NAME_OR_ID", help="as `token list` shows it")
    user = commands.add_parser("user", help="manage the people who sign in to the console")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    person = user_commands.add_parser("create", help="add a person; the password from stdin")
    person.add_argument("--email", required=True, help="what they sign in with")
    person.add_argument(
        "--role", required=True, help="viewer, manager, administrator, support or ops"
    )
    person.add_argument(
        "--agency",
        action="append",
        dest="agencies",
        metavar="AGENCY",
        help="an agency they work for (repeat for several); none for support and ops",
    )
    person.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the password from stdin (never from the command line)",
    )
    user_commands.add_parser("list", help="everyone, disabled people included")
    disable = user_commands.add_parser("disable", help="they can no longer sign in")
    disable.add_argument("email", metavar="EMAIL")
    letters = commands.add_parser(
        "dead-letters", help="messages consumers set aside: list them, publish them again"
    )
    letter_commands = letters.add_subparsers(
        dest="letters_command", required=True, metavar="ACTION"
    )
    listing = letter_commands.add_parser("list", help="the dead letters not replayed yet")
    listing.add_argument("--all", action="store_true", help="the replayed ones too")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    replay = letter_commands.add_parser(
        "replay", help="publish dead letters again to their topic, once the cause is fixed"
    )
    replay.add_argument(
        "--id", type=int, action="append", dest="ids", help="this one (repeat); default: all"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load()
    except SettingsError as problem:
        print(f"relaybook: {problem}", file=sys.stderr)
        return EXIT_BAD_SETTING
    logs.configure(settings.log_level, settings.log_format)
    command = _COMMANDS[args.command]
    try:
        return asyncio.run(command(settings, args))
    except SettingsError as problem:
        print(f"relaybook: {problem}", file=sys.stderr)
        return EXIT_BAD_SETTING
    except (
        database.DatabaseError,
        BrokerError,
        EmbeddedError,
        PortInUseError,
        ownership.DataDirInUseError,
    ) as problem:
        print(f"relaybook: {problem}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM: the process then stops cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _up(settings: Settings, _args: argparse.Namespace) -> int:
    from relaybook.tooling.processes import Processes  # noqa: PLC0415 - imports every deployable

    stop = stop_on_signals()
    # The data dir first: a second `up` on it is refused before it binds or starts anything.
    with await asyncio.to_thread(
        ownership.claim, settings.data_dir, "relaybook up", shares_database=True
    ) as claim:
        async with Processes(settings) as system:
            claim.publish(
                urls=system.urls,
                kafka_bootstrap_servers=system.settings.kafka_bootstrap_servers,
                ready=True,
            )
            settle_garbage_collector()
            # The generated admin token on a terminal only: redirected, the banner goes to
            # logs that others read, so it says where the token is kept instead.
            print(system.banner(reveal_admin_token=sys.stdout.isatty()), flush=True)
            await stop.wait()
            print("relaybook: stopping", flush=True)
    return 0


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from demo import run_demo  # noqa: PLC0415

    # The tour's own lines are its output; only warnings and errors join them.
    if settings.log_level == "INFO":
        logs.configure("WARNING", settings.log_format)

    with contextlib.ExitStack() as scratch:
        data_dir = args.data_dir
        if args.stay:
            # Named here, before the tour, to be said: brief commands beside it need it.
            data_dir = data_dir or scratch.enter_context(
                tempfile.TemporaryDirectory(prefix="relaybook-demo-")
            )
            beside = _beside_demo(data_dir, kept=args.data_dir is not None)
            # with --json, stdout holds only the report
            print(beside, file=sys.stderr if args.json else sys.stdout, flush=True)
        return await run_demo(settings, data_dir=data_dir, as_json=args.json, stay=args.stay)


def _beside_demo(data_dir: str, *, kept: bool) -> str:
    """Where `demo --stay` keeps its data, and the command that adds a support person there
    while it runs: brief commands on its data dir use its database, as beside `up`."""
    where = shlex.quote(str(Path(data_dir).resolve()))
    until = "kept" if kept else "removed when it stops"
    return "\n".join(
        [
            f"relaybook demo --stay: its data is in {where} ({until}). Brief commands",
            "(user, token, migrate...) run beside it with RELAYBOOK_DATA_DIR set to that. To try",
            "the support role, add a support person (it asks for a password of 12 or more",
            "characters):",
            f"  RELAYBOOK_DATA_DIR={where} relaybook user create --email {DEMO_SUPPORT} "
            "--role support --password-stdin",
            "",
        ]
    )


@contextlib.asynccontextmanager
async def _database(settings: Settings, command: str) -> AsyncIterator[str]:
    """The database of a brief command (``migrate``, ``token ...``): the configured one;
    else the running `up`'s (or demo's) on this data dir, used and never stopped; else the embedded
    one, started for the command's duration with the data dir held meanwhile."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    found = await asyncio.to_thread(ownership.claim_or_share, settings.data_dir, command)
    if isinstance(found, ownership.Owner):
        assert found.database_url is not None
        yield found.database_url
        return
    with found:
        postgres = EmbeddedPostgres(settings.data_dir)
        url = await asyncio.to_thread(postgres.start)
        found.publish(database_url=url)
        try:
            yield url
        finally:
            await asyncio.to_thread(postgres.stop)


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    async with _database(settings, "relaybook migrate") as url:
        applied = await database.migrate(
            url, default_agency=settings.default_agency, newer_ok=args.allow_newer
        )
        connection = await database.connect(url)
        try:
            version = await connection.fetchval("SELECT max(version) FROM schema_migrations")
        finally:
            await connection.close()
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    if version > database.newest_version():
        print(
            f"the database is at migration {version}, newer than this code "
            f"({database.newest_version()}): left as it is"
        )
    elif not applied:
        print(f"the database is current (migration {version})")
    return 0


@contextlib.asynccontextmanager
async def _pool(settings: Settings, command: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the brief command's database, migrated (or newer: migrations only
    add, so a command of the release before works on it)."""
    async with _database(settings, command) as url:
        await database.migrate(url, default_agency=settings.default_agency, newer_ok=True)
        pool = await database.create_pool(url, max_size=1)
        try:
            yield pool
        finally:
            await pool.close()


async def _token(settings: Settings, args: argparse.Namespace) -> int:
    """``token create``, ``token list`` and ``token revoke``."""
    from relaybook.access import auth  # noqa: PLC0415

    action = args.token_command
    command = f"relaybook token {action}"
    try:
        if action == "create":
            scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
            expires_at = _expiry(args.expires_in, args.expires_at)
            agencies = auth.check_token(args.name, scopes, args.agencies, expires_at)
            async with _pool(settings, command) as pool:
                token = await auth.create_token(
                    pool, args.name, scopes, agencies=agencies, expires_at=expires_at
                )
            print(token)
            print(
                f"token {args.name!r} created with {', '.join(sorted(set(scopes)))} for "
                f"{_agencies(agencies, 'every agency (platform-wide)')}, {_until(expires_at)}; "
                "it is shown only once",
                file=sys.stderr,
            )
        elif action == "list":
            async with _pool(settings, command) as pool:
                print(_tokens_table(await auth.list_tokens(pool)))
        else:
            async with _pool(settings, command) as pool:
                revoked = await auth.revoke_token(pool, args.name_or_id)
            when = revoked.revoked_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            print(
                f"token {revoked.name!r} ({revoked.id}) was revoked already, at {when}"
                if revoked.already
                else f"token {revoked.name!r} ({revoked.id}) revoked: it answers 401 from now on"
            )
    except ValueError as problem:
        print(f"{command}: {problem}", file=sys.stderr)
        return EXIT_BAD_SETTING
    return 0


def _expiry(days: str | None, at: str | None) -> dt.datetime | None:
    """``--expires-in DAYS`` or ``--expires-at ISO`` as a UTC time; ValueError if neither
    makes sense."""
    if days is not None:
        if not days.isdigit() or not 1 <= int(days) <= 36_500:
            raise ValueError(f"--expires-in takes a number of days, 1 to 36500; got {days!r}")
        return dt.datetime.now(dt.UTC) + dt.timedelta(days=int(days))
    if at is not None:
        try:
            moment = dt.datetime.fromisoformat(at)
        except ValueError:
            raise ValueError(
                f"--expires-at takes an ISO date or time, e.g. 2027-01-31; got {at!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC)
    return None


def _agencies(agencies: Sequence[str] | None, everyone: str = "every agency") -> str:
    return everyone if agencies is None else ", ".join(agencies)


def _until(expires_at: dt.datetime | None) -> str:
    if expires_at is None:
        return "until revoked"
    return f"until {expires_at.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}"


def _when(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")


def _tokens_table(tokens: list[Token]) -> str:
    """One line a token: never the token nor its hash (neither is kept or known)."""
    if not tokens:
        return "no tokens"
    now = dt.datetime.now(dt.UTC)
    rows = [("name", "id", "scopes", "agencies", "created", "expires", "revoked")]
    rows += [
        (
            token.name,
            str(token.id),
            ",".join(token.scopes),
            _agencies(token.agencies, "platform-wide"),
            _when(token.created_at),
            _when(token.expires_at)
            + (" (expired)" if token.expires_at is not None and token.expires_at <= now else ""),
            _when(token.revoked_at),
        )
        for token in tokens
    ]
    return _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _user(settings: Settings, args: argparse.Namespace) -> int:
    """``user create``, ``user list`` and ``user disable``."""
    from relaybook.access.people import People, PersonError, check_password, check_person  # noqa: PLC0415

    command = f"relaybook user {args.user_command}"
    try:
        if args.user_command == "create":
            email, agencies = check_person(args.email, args.role, args.agencies)
            password = _read_password()
            check_password(password)
            async with _pool(settings, command) as pool:
                person = await People(pool).create(email, args.role, password, agencies)
            print(f"{person.email} created: {person.role} of {_agencies(person.agencies)}")
        elif args.user_command == "list":
            async with _pool(settings, command) as pool:
                print(_people_table(await People(pool).list()))
        else:
            async with _pool(settings, command) as pool:
                disabled = await People(pool).disable(args.email)
            print(
                f"{disabled.email} was disabled already, since {_when(disabled.since)} UTC"
                if disabled.already
                else f"{disabled.email} disabled: they can no longer sign in"
            )
    except PersonError as problem:
        print(f"{command}: {problem}", file=sys.stderr)
        return EXIT_BAD_SETTING
    return 0


def _read_password() -> str:
    """The password from stdin (asked for without echo on a terminal), without its line
    end: never from the command line, where other users' `ps` would see it."""
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    text = sys.stdin.read()
    return text.removesuffix("\n").removesuffix("\r")


def _people_table(people: list[Person]) -> str:
    if not people:
        return "no people"
    rows = [("email", "role", "agencies", "created", "last sign-in", "disabled")]
    rows += [
        (
            person.email,
            person.role,
            _agencies(person.agencies),
            _when(person.created_at),
            _when(person.last_sign_in_at),
            _when(person.disabled_at),
        )
        for person in people
    ]
    return _table(rows)


async def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    """``dead-letters list`` and ``dead-letters replay``: on the configured servers, or
    the running `up`'s of this data dir."""
    command = f"relaybook dead-letters {args.letters_command}"
    async with _pool(settings, command) as pool:
        if args.letters_command == "list":
            found = await DeadLetters(pool, None, "").list(
                include_replayed=args.all, limit=args.limit
            )
            print(_letters_table(found))
            return 0
        producer = Producer(
            dataclasses.replace(settings, kafka_bootstrap_servers=_broker(settings)), CONTRACTS
        )
        await producer.start()
        try:
            letters = DeadLetters(pool, producer, settings.topic("dead-letters"))
            chosen = await letters.list(ids=args.ids or (), limit=10_000)
            missing = sorted(set(args.ids or ()) - {letter.id for letter in chosen})
            if missing:
                print(
                    f"relaybook: no dead letter waiting with id {', '.join(map(str, missing))}",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            replayed = await letters.replay(chosen, by=_who())
        finally:
            await producer.stop()
    print(f"{replayed} dead letter(s) published again to their topics")
    return 0


def _who() -> str:
    """Who runs this command, for the record."""
    try:
        return getpass.getuser()
    except OSError:  # no login name, no password entry (a container's user)
        return "relaybook-cli"


def _broker(settings: Settings) -> str:
    """The configured broker, or the running `up`'s of this data dir."""
    if settings.kafka_bootstrap_servers is not None:
        return settings.kafka_bootstrap_servers
    owner = ownership.read_owner(settings.data_dir)
    if owner is not None and owner.kafka_bootstrap_servers is not None:
        return owner.kafka_bootstrap_servers
    raise SettingsError(
        "replaying needs RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS, or a running `relaybook up` "
        "on this data dir"
    )


def _letters_table(letters: list[Letter]) -> str:
    """One line a dead letter: never its content (it may hold addresses)."""
    if not letters:
        return "no dead letters"
    rows = [("id", "set aside", "group", "from", "reason", "bytes", "replayed", "error")]
    rows += [
        (
            str(letter.id),
            letter.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            letter.consumer_group,
            f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}",
            letter.reason,
            str(len(letter.value)),
            letter.replayed_at.strftime("%Y-%m-%d %H:%M") if letter.replayed_at else "-",
            logs.mask_text(letter.error.splitlines()[0][:120]) if letter.error else "",
        )
        for letter in letters
    ]
    return _table(rows)


async def _settings(settings: Settings, _args: argparse.Namespace) -> int:
    """Every setting: its variable, its value now (secrets only said to be set), its
    default, the package whose settings.py declares it, and what it is for."""
    current = settings.describe()
    rows = [("VARIABLE", "VALUE", "DEFAULT", "PACKAGE", "MEANING")]
    rows += [
        (row.variable, current[row.variable], row.default or "-", row.owner, row.meaning)
        for row in documented()
    ]
    print(_table(rows))
    return 0


async def _single(settings: Settings, args: argparse.Namespace) -> int:
    from relaybook.tooling.system import DEPLOYABLES, System  # noqa: PLC0415

    stop = stop_on_signals()
    # every line says which deployable wrote it (under `up`, they share one output)
    structlog.contextvars.bind_contextvars(deployable=args.command)
    if args.command != "sandbox":  # the sandbox needs neither database nor broker
        require_configured(settings, args.command, providers=not args.under_up)
        port_setting = DEPLOYABLES[args.command][0]
        assert port_setting is not None
        # a database or broker refusing us: one line, a failing /readyz, and asked again
        if not await until_servers_take_us(settings, args.command, port_setting, stop):
            return 0
    async with System(settings, only={args.command}) as system:
        settle_garbage_collector()
        print(system.banner(), flush=True)
        await stop.wait()
    return 0


#: how often a deployable its database or broker turned away at start-up asks again
SERVERS_RETRY_S = 5.0


#: the servers a deployable asks at start, in order: it asks the next once one takes it
_ASKED = ("database", "broker")


async def _refusal(settings: Settings) -> tuple[str, str] | None:
    """Which of the database and the broker cannot be used now, and why; None when both
    take relaybook's connection."""
    assert settings.database_url is not None  # required of a single deployable
    try:
        connection = await database.connect(settings.database_url)
    except database.DatabaseError as problem:
        return "database", str(problem)
    await connection.close()
    try:
        await check_reachable(settings)
    except BrokerError as problem:
        return "broker", str(problem)
    return None


class _StopSetError(Exception):
    """``stop`` was set while the servers were asked."""


async def _ask(settings: Settings, stop: asyncio.Event) -> tuple[str, str] | None:
    """:func:`_refusal`, unless ``stop`` is set first (or meanwhile: asking may take a
    while, silent servers, and a stop does not wait for it): then :class:`_StopSetError`."""
    if stop.is_set():
        raise _StopSetError
    asked = asyncio.ensure_future(_refusal(settings))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({asked, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if stop.is_set():
        asked.cancel()
        await asyncio.gather(asked, return_exceptions=True)
        raise _StopSetError
    return asked.result()


async def until_servers_take_us(
    settings: Settings, service: str, port_setting: str, stop: asyncio.Event
) -> bool:
    """Returns True at once when PostgreSQL and Kafka take relaybook's connections.

    When one does not (a server away, a refused password, an untrusted certificate), says
    why in one line on stderr, then serves ``/healthz`` and a ``/readyz`` failing with
    that reason under ``checks.database`` or ``checks.broker`` (and ``relaybook_ready``
    0) on the deployable's port, and asks again every :data:`SERVERS_RETRY_S`: a secret
    corrected or a server come back is taken without a restart (an orchestrator starts
    everything at once). Returns True then, having closed the port for the deployable's
    own server, or False if ``stop`` was set first."""
    try:
        refusal = await _ask(settings, stop)
    except _StopSetError:
        return False
    if refusal is None:
        return True
    print(f"relaybook: {refusal[1]}", file=sys.stderr, flush=True)

    def check(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def refused() -> None:
            assert refusal is not None
            if refusal[0] == name:
                raise faults.UnavailableError(refusal[1])
            if _ASKED.index(name) > _ASKED.index(refusal[0]):
                raise faults.UnavailableError(f"not asked yet: the {refusal[0]} first")

        return refused

    async def meanwhile(_request: Request) -> Response:
        # a caller routed here (ingest and the API are in their Service while alive) is
        # told to come back, as during any outage
        assert refusal is not None
        raise faults.UnavailableError(refusal[1])

    port = getattr(settings, port_setting)
    everything = Route(
        "/{path:path}", meanwhile, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    )
    server = HttpServer(
        service,
        create_app(
            service,
            routes=[everything],
            checks={name: check(name) for name in _ASKED},
        ),
        bind(port, env_name(port_setting), settings.listen_address),
    )
    try:
        await server.start()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SERVERS_RETRY_S)
            try:
                now = await _ask(settings, stop)
            except _StopSetError:
                return False
            if now is None:
                logs.get_logger(__name__).info("PostgreSQL and Kafka take relaybook now")
                return True
            if now != refusal:  # a new reason is worth a line; the same is not
                print(f"relaybook: {now[1]}", file=sys.stderr, flush=True)
            refusal = now
    finally:
        await server.stop()


_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "up": _up,
    "demo": _demo,
    "migrate": _migrate,
    "settings": _settings,
    "dispatcher": _single,
    "ingest": _single,
    "sandbox": _single,
    "worker": _single,
    "tracker": _single,
    "bounce-policy": _single,
    "token": _token,
    "user": _user,
    "dead-letters": _dead_letters,
}


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
