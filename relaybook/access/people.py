"""People of the console: each with one role, on some agencies (support and ops: every
agency), a password kept only as an argon2id hash, and a sign-in that answers a
:class:`~relaybook.access.auth.Caller` the way a token does.

Roles, as the contract names them, and what each may do (as scopes):

======================  ====================================================  ==========
role                    scopes                                                agencies
======================  ====================================================  ==========
viewer                  journal:read                                          its own
manager                 + notices:write, preferences:write                    its own
administrator           + people:write (the people of its agencies)           its own
support                 every scope, ``support`` included                     every one
ops                     journal:read                                          every one
======================  ====================================================  ==========
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import functools
import re
import uuid
from collections.abc import Callable
from typing import TypeVar

import argon2
import asyncpg

from relaybook.access.auth import PEOPLE, SCOPES, Caller, agency_ids
from relaybook.platform import logs, sql

Q = sql.load("relaybook.access")
log = logs.get_logger(__name__)

_VIEWER = frozenset({"journal:read"})
_MANAGER = _VIEWER | {"notices:write", "preferences:write"}
#: each role's scopes
ROLES: dict[str, frozenset[str]] = {
    "viewer": _VIEWER,
    "manager": _MANAGER,
    "administrator": _MANAGER | {PEOPLE},
    "support": frozenset(SCOPES),
    "ops": _VIEWER,
}
#: the roles of the platform's own staff: every agency, never bound to some
PLATFORM_ROLES = frozenset({"support", "ops"})

#: shorter passwords are refused (NIST SP 800-63B asks for at least 8; we ask for more)
PASSWORD_MIN = 12
#: a bound on the work one sign-in may ask for
PASSWORD_MAX = 1024
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

# Each argon2 hash takes ~64 MiB and ~0.1 s of a core: a few at a time, off the event loop,
# so a burst of sign-ins neither stalls the API nor eats the memory.
_hashing = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")


class PersonError(ValueError):
    """A person that cannot be created or changed as asked: the message says why."""


@dataclasses.dataclass(frozen=True)
class Person:
    """A person as ``relaybook user list`` shows them: never the password's hash."""

    email: str
    role: str
    agencies: tuple[str, ...] | None
    created_at: dt.datetime
    last_sign_in_at: dt.datetime | None
    disabled_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class Disabled:
    email: str
    since: dt.datetime
    #: disabled before this call (since ``since``)
    already: bool


def check_person(email: str, role: str, agencies: list[str] | None) -> tuple[str, list[str] | None]:
    """PersonError, saying why, for a malformed email, an unknown role, or agencies missing
    (viewer, manager, administrator) or given (support, ops). Returns the email and the
    agencies as stored (None: every agency)."""
    email = email.strip()
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise PersonError(f"{email!r} is no email address")
    if role not in ROLES:
        raise PersonError(f"the role must be one of {', '.join(ROLES)}; got {role!r}")
    try:
        bound = agency_ids(agencies)
    except ValueError as problem:
        raise PersonError(str(problem)) from None
    if role in PLATFORM_ROLES and bound is not None:
        raise PersonError(f"the {role} role works on every agency: give no --agency")
    if role not in PLATFORM_ROLES and bound is None:
        raise PersonError(f"the {role} role works on some agencies: give at least one --agency")
    return email, bound


def check_password(password: str) -> None:
    """PersonError unless ``password`` is long enough to be one (the message never
    repeats it)."""
    if not password:
        raise PersonError("no password: give it on stdin")
    if len(password) < PASSWORD_MIN:
        raise PersonError(f"the password is too short: at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise PersonError(f"the password is too long: at most {PASSWORD_MAX} characters")


class People:
    """The people table, and signing in. ``hasher``: argon2id with argon2-cffi's
    recommended parameters unless given (a hash made with other parameters is replaced
    at the person's next sign-in)."""

    def __init__(self, pool: asyncpg.Pool, hasher: argon2.PasswordHasher | None = None) -> None:
        self._pool = pool
        self._hasher = hasher or argon2.PasswordHasher()
        if self._hasher.type is not argon2.Type.ID:
            raise ValueError("passwords are hashed with argon2id")

    async def create(
        self, email: str, role: str, password: str, agencies: list[str] | None = None
    ) -> Person:
        """Adds a person; PersonError for a malformed email, an unknown role, agencies
        missing (viewer, manager, administrator) or given (support, ops), a password too
        short, or an email already taken (whatever its case)."""
        email, bound = check_person(email, role, agencies)
        check_password(password)
        hashed = await _off_loop(functools.partial(self._hasher.hash, password))
        try:
            created = await self._pool.fetchval(
                Q["insert_person"], uuid.uuid4(), email, role, bound, hashed
            )
        except asyncpg.UniqueViolationError:
            raise PersonError(f"{email} has an account already") from None
        log.info("person created", role=role, agencies=bound)
        return Person(email, role, None if bound is None else tuple(bound), created, None, None)

    async def list(self) -> list[Person]:
        """Everyone, disabled people included, by email."""
        return [
            Person(
                row["email"],
                row["role"],
                None if row["agencies"] is None else tuple(row["agencies"]),
                row["created_at"],
                row["last_sign_in_at"],
                row["disabled_at"],
            )
            for row in await self._pool.fetch(Q["list_people"])
        ]

    async def disable(self, email: str) -> Disabled:
        """Disables the person of that email (any case): they can no longer sign in.
        PersonError when there is nobody of that email."""
        row = await self._pool.fetchrow(Q["disable_person"], email.strip())
        if row is None:
            raise PersonError(f"nobody has the email {email.strip()!r}")
        if not row["already"]:
            log.info("person disabled")
        return Disabled(row["email"], row["disabled_at"], row["already"])

    async def sign_in(self, email: str, password: str) -> Caller | None:
        """The person of ``email`` as a caller, if ``password`` is theirs and they are not
        disabled; else None (the same answer whatever failed, in about the same time: an
        unknown email costs a hash too). Records the sign-in, and rehashes the password
        when the hasher's parameters changed since it was hashed."""
        email = email.strip()
        row = None
        if len(email) <= 254 and len(password) <= PASSWORD_MAX:
            row = await self._pool.fetchrow(Q["person_by_email"], email)
        stored = row["password_hash"] if row is not None else None
        matches = await _off_loop(functools.partial(self._matches, stored, password))
        if row is None or not matches or row["disabled_at"] is not None:
            reason = (
                "unknown email" if row is None else "wrong password" if not matches else "disabled"
            )
            # an email is personal data: never logged, the person's id when there is one
            log.info("sign-in refused", person=row["id"] if row else None, reason=reason)
            return None
        renewed = None
        if self._hasher.check_needs_rehash(row["password_hash"]):
            renewed = await _off_loop(functools.partial(self._hasher.hash, password))
        await self._pool.execute(Q["signed_in"], row["id"], renewed)
        log.info("signed in", person=row["id"], role=row["role"])
        agencies = row["agencies"]
        return Caller(
            row["email"],
            ROLES[row["role"]],
            None if agencies is None else frozenset(agencies),
            frozenset({row["role"]}),
            row["id"],
        )

    def _matches(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``; with no stored hash (an unknown email),
        checks it against a dummy one anyway and answers False."""
        hasher = self._hasher
        if stored is None:
            stored = _dummy_hash(hasher.time_cost, hasher.memory_cost, hasher.parallelism)
        try:
            return hasher.verify(stored, password)
        except argon2.exceptions.VerificationError:  # a mismatch
            return False
        except argon2.exceptions.InvalidHashError:  # not a hash we can read: never a match
            return False


T = TypeVar("T")


async def _off_loop(work: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(_hashing, work)


@functools.cache
def _dummy_hash(time_cost: int, memory_cost: int, parallelism: int) -> str:
    """A hash with the hasher's parameters, that no password matches in practice: checking
    an unknown email's password against it costs what checking a known one does."""
    hasher = argon2.PasswordHasher(time_cost, memory_cost, parallelism)
    return hasher.hash(uuid.uuid4().hex)
