"""Bearer tokens: the admin token (every scope) and per-service API tokens, stored as
SHA-256 hashes, each with scopes."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import uuid

import asyncpg
from starlette.requests import Request

from relaybook import sql

SCOPES = ("notices:write", "journal:read", "preferences:write")
ADMIN = "admin"
Q = sql.load("dispatcher")


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is calling: the token's name (recorded as the author of what it does)."""

    name: str
    scopes: frozenset[str]


class UnauthorizedError(Exception):
    """No token, or one that is not ours: 401."""


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
            return Caller(ADMIN, frozenset(SCOPES))
        row = await self._pool.fetchrow(Q["token_by_hash"], hashed)
        if row is None:
            raise UnauthorizedError("unknown or revoked token")
        caller = Caller(row["name"], frozenset(row["scopes"]))
        if not caller.scopes & {scope, *also}:
            raise ForbiddenError(f"this token lacks the {scope} scope")
        return caller


async def create_token(pool: asyncpg.Pool, name: str, scopes: list[str]) -> str:
    """Creates a token; returns it (the only time it is ever shown)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(
            f"scopes must be among {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}"
        )
    if name == ADMIN:
        raise ValueError("the name 'admin' is reserved for the admin token")
    token = "rb_" + secrets.token_urlsafe(32)
    try:
        await pool.execute(
            Q["insert_token"], uuid.uuid4(), name, digest(token), sorted(set(scopes))
        )
    except asyncpg.UniqueViolationError:
        raise ValueError(f"a token named {name!r} exists already") from None
    return token
