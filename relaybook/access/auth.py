"""Bearer tokens: the admin token (every scope, every agency) and per-service API tokens,
stored as SHA-256 hashes, each with scopes, bound to agencies or platform-wide, and
optionally expiring. A revoked or expired token answers 401 from the next request on:
each request reads the token's row (one index lookup), nothing is cached."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
import uuid

import asyncpg
from starlette.requests import Request

from relaybook.platform import faults, sql

SUPPORT = "support"
#: what a person of the administrator role may do beyond a manager (the console's people)
PEOPLE = "people:write"
#: monitoring: why a readiness check fails (``/readyz`` says only which, to anyone)
OPS = "ops"
SCOPES = ("notices:write", "journal:read", "preferences:write", SUPPORT, PEOPLE, OPS)
ADMIN = "admin"
Q = sql.load("relaybook.access")

#: the longest agency id (the platform's own ids, like recipient ids)
AGENCY_MAX = 200


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is calling: a token or a person of the console.

    ``name`` is recorded as the author of what it does (a token's name, a person's email);
    ``agencies`` are those it may see, ``None`` for every agency (platform-wide);
    ``roles`` are a person's (empty for a token), ``person`` their id (None for a
    token)."""

    name: str
    scopes: frozenset[str]
    agencies: frozenset[str] | None
    roles: frozenset[str] = frozenset()
    person: uuid.UUID | None = None

    def sees(self, agency: str) -> bool:
        """Whether this caller may see ``agency``'s data."""
        return self.agencies is None or agency in self.agencies

    @property
    def sole_agency(self) -> str | None:
        """The agency of a caller bound to exactly one (a notice without ``agency`` goes
        there), else None."""
        if self.agencies is not None and len(self.agencies) == 1:
            return next(iter(self.agencies))
        return None


class UnauthorizedError(Exception):
    """No token, or one that is not ours, revoked or expired: 401."""


class ForbiddenError(Exception):
    """A valid token without the scope the call needs: 403."""


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, admin_token: str) -> None:
        self._pool = pool
        self._admin = digest(admin_token)

    async def caller(self, request: Request, scope: str, *also: str) -> Caller:
        """The caller of ``request``, who must hold ``scope`` (or one of ``also``)."""
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise UnauthorizedError("send Authorization: Bearer <token>")
        hashed = digest(token.strip())
        if hmac.compare_digest(hashed, self._admin):
            return Caller(ADMIN, frozenset(SCOPES), None)
        row = await self._pool.fetchrow(Q["token_by_hash"], hashed)
        if row is None or row["revoked"]:
            raise UnauthorizedError("unknown or revoked token")
        if row["expired"]:
            raise UnauthorizedError("this token has expired")
        agencies = row["agencies"]
        caller = Caller(
            row["name"],
            frozenset(row["scopes"]),
            None if agencies is None else frozenset(agencies),
        )
        if not caller.scopes & {scope, *also}:
            raise ForbiddenError(f"this token lacks the {scope} scope")
        return caller

    async def holds(self, request: Request, scope: str) -> bool:
        """Whether ``request`` carries a valid token with ``scope``; False for any other
        (none, unknown, lacking it), and while the tokens cannot be read (PostgreSQL away:
        what ``/readyz`` may be about), after at most a second."""
        if "authorization" not in request.headers:
            return False
        try:
            await asyncio.wait_for(self.caller(request, scope), timeout=1)
        except (UnauthorizedError, ForbiddenError):
            return False
        except Exception as problem:
            if not faults.is_transient(problem):
                raise
            return False
        return True


@dataclasses.dataclass(frozen=True)
class Token:
    """A token as ``relaybook token list`` shows it: never the token nor its hash."""

    id: uuid.UUID
    name: str
    scopes: tuple[str, ...]
    agencies: tuple[str, ...] | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


def agency_ids(given: list[str] | None) -> list[str] | None:
    """The agency ids given (deduplicated, sorted), None for none; ValueError for an id
    that cannot be one (empty, too long, on several lines)."""
    if not given:
        return None
    for agency in given:
        if (
            not 1 <= len(agency) <= AGENCY_MAX
            or agency != agency.strip()
            or any(ord(c) < 32 for c in agency)
        ):
            raise ValueError(
                f"{agency!r} is no agency id: 1 to {AGENCY_MAX} characters, one line, "
                "no surrounding spaces"
            )
    return sorted(set(given))


def check_token(
    name: str,
    scopes: list[str],
    agencies: list[str] | None = None,
    expires_at: dt.datetime | None = None,
) -> list[str] | None:
    """ValueError, saying why, for a token that cannot be made: unknown scopes, a reserved
    or malformed name, a bad agency id, an expiry in the past. Returns the agencies as
    stored (None: platform-wide)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(
            f"scopes must be among {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}"
        )
    if name == ADMIN:
        raise ValueError("the name 'admin' is reserved for the admin token")
    if "@" in name:
        # an author is a token's name or a person's email: never one mistaken for the other
        raise ValueError("a token's name has no '@' (email addresses name people)")
    if not 1 <= len(name) <= 100:
        raise ValueError("a token's name is 1 to 100 characters")
    if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC):
        raise ValueError(f"the expiry {expires_at.isoformat()} is in the past")
    return agency_ids(agencies)


async def create_token(
    pool: asyncpg.Pool,
    name: str,
    scopes: list[str],
    *,
    agencies: list[str] | None = None,
    expires_at: dt.datetime | None = None,
) -> str:
    """Creates a token bound to ``agencies`` (None: platform-wide), valid until
    ``expires_at`` (None: until revoked); returns it (the only time it is ever shown).
    ValueError as :func:`check_token` says, or for a name taken already."""
    bound = check_token(name, scopes, agencies, expires_at)
    token = "rb_" + secrets.token_urlsafe(32)
    try:
        await pool.execute(
            Q["insert_token"],
            uuid.uuid4(),
            name,
            digest(token),
            sorted(set(scopes)),
            bound,
            expires_at,
        )
    except asyncpg.UniqueViolationError:
        raise ValueError(f"a token named {name!r} exists already") from None
    return token


async def list_tokens(pool: asyncpg.Pool) -> list[Token]:
    """Every token, revoked and expired ones included, oldest first."""
    return [
        Token(
            row["id"],
            row["name"],
            tuple(row["scopes"]),
            None if row["agencies"] is None else tuple(row["agencies"]),
            row["created_at"],
            row["expires_at"],
            row["revoked_at"],
        )
        for row in await pool.fetch(Q["list_tokens"])
    ]


@dataclasses.dataclass(frozen=True)
class Revoked:
    id: uuid.UUID
    name: str
    revoked_at: dt.datetime
    #: it was revoked before this call (at ``revoked_at``)
    already: bool


async def revoke_token(pool: asyncpg.Pool, name_or_id: str) -> Revoked:
    """Revokes the token of that id, or else of that name: it answers 401 from now on.
    Revoking a revoked token keeps its first revocation time. ValueError when there is no
    such token (or for the admin token, which is configured, not stored)."""
    if name_or_id == ADMIN:
        raise ValueError(
            "the admin token is not stored: change RELAYBOOK_ADMIN_TOKEN (or delete the data "
            "dir's admin-token file) and restart"
        )
    try:
        by_id, by_name = uuid.UUID(name_or_id), None
    except ValueError:
        by_id, by_name = None, name_or_id
    row = await pool.fetchrow(Q["revoke_token"], by_id, by_name)
    if row is None:
        raise ValueError(f"no token named or numbered {name_or_id!r}")
    return Revoked(row["id"], row["name"], row["revoked_at"], row["already"])
