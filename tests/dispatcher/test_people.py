"""People of the console: each role's scopes and agencies (a table), passwords kept as
argon2id hashes only and never logged, and signing in: the right password, a wrong one,
a disabled person and an unknown email all answer as they should."""

from __future__ import annotations

from typing import Literal

import argon2
import asyncpg
import pytest
from structlog.testing import capture_logs

from relaybook.access.auth import SCOPES, Caller
from relaybook.access.people import ROLES, People, PersonError, check_person

PASSWORD = "correct horse battery staple"
#: cheap parameters, so tests run fast; the production ones are argon2-cffi's defaults
CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


class CountingHasher(argon2.PasswordHasher):
    """Counts the verifications: an unknown email must cost one too."""

    verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        CountingHasher.verified += 1
        return super().verify(hash, password)


@pytest.fixture
def people(pool: asyncpg.Pool) -> People:
    return People(pool, CHEAP)


@pytest.mark.parametrize(
    ("role", "agencies", "scopes", "sees"),
    [
        ("viewer", ["a"], {"journal:read"}, frozenset({"a"})),
        (
            "manager",
            ["a"],
            {"journal:read", "notices:write", "preferences:write"},
            frozenset({"a"}),
        ),
        (
            "administrator",
            ["a", "b"],
            {"journal:read", "notices:write", "preferences:write", "people:write"},
            frozenset({"a", "b"}),
        ),
        ("support", None, set(SCOPES), None),
        ("ops", None, {"journal:read"}, None),
    ],
)
async def test_each_role_signs_in_with_its_scopes_on_its_agencies(
    pool: asyncpg.Pool,
    people: People,
    role: str,
    agencies: list[str] | None,
    scopes: set[str],
    sees: frozenset[str] | None,
) -> None:
    await people.create(f"{role}@example.org", role, PASSWORD, agencies)
    caller = await people.sign_in(f"{role}@example.org", PASSWORD)
    assert caller is not None
    person = await pool.fetchval("SELECT id FROM people")
    assert caller == Caller(
        f"{role}@example.org", frozenset(scopes), sees, frozenset({role}), person
    )
    assert ROLES[role] == frozenset(scopes)


def test_only_support_holds_the_support_scope() -> None:
    assert [role for role, scopes in ROLES.items() if "support" in scopes] == ["support"]


async def test_a_password_is_stored_as_an_argon2id_hash_only(
    pool: asyncpg.Pool, people: People
) -> None:
    await People(pool).create("jane@example.org", "manager", PASSWORD, ["a"])  # production costs
    stored = await pool.fetchval("SELECT password_hash FROM people")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in stored
    assert await people.sign_in("jane@example.org", PASSWORD) is not None


async def test_the_right_password_signs_in_whatever_the_email_s_case_and_is_recorded(
    pool: asyncpg.Pool, people: People
) -> None:
    await people.create("Jane.Doe@Example.org", "viewer", PASSWORD, ["a"])
    caller = await people.sign_in("  jane.doe@EXAMPLE.org ", PASSWORD)
    assert caller is not None
    assert caller.name == "Jane.Doe@Example.org", "the author is the email as created"
    assert await pool.fetchval("SELECT last_sign_in_at IS NOT NULL FROM people")


async def test_a_wrong_password_a_disabled_person_and_an_unknown_email_are_refused(
    pool: asyncpg.Pool,
) -> None:
    hasher = CountingHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    people = People(pool, hasher)
    await people.create("jane@example.org", "manager", PASSWORD, ["a"])
    await people.create("gone@example.org", "manager", PASSWORD, ["a"])
    await people.disable("GONE@example.org")
    CountingHasher.verified = 0

    assert await people.sign_in("jane@example.org", PASSWORD + "!") is None
    assert await people.sign_in("gone@example.org", PASSWORD) is None, "even the right one"
    assert await people.sign_in("nobody@example.org", PASSWORD) is None
    assert CountingHasher.verified == 3, "an unknown email costs a hash like a known one"
    assert await pool.fetchval("SELECT count(last_sign_in_at) FROM people") == 0


async def test_a_hash_made_with_older_parameters_is_renewed_at_the_next_sign_in(
    pool: asyncpg.Pool, people: People
) -> None:
    await people.create("jane@example.org", "viewer", PASSWORD, ["a"])
    old = await pool.fetchval("SELECT password_hash FROM people")
    assert old.startswith("$argon2id$v=19$m=8192,t=1,p=1$")

    stronger = People(pool)  # argon2-cffi's current defaults
    assert await stronger.sign_in("jane@example.org", PASSWORD) is not None
    renewed = await pool.fetchval("SELECT password_hash FROM people")
    assert renewed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert await stronger.sign_in("jane@example.org", PASSWORD) is not None
    assert await pool.fetchval("SELECT password_hash FROM people") == renewed, "once"


async def test_a_password_never_reaches_the_logs(people: People) -> None:
    with capture_logs() as logged:
        await people.create("jane@example.org", "manager", PASSWORD, ["a"])
        await people.sign_in("jane@example.org", PASSWORD)
        await people.sign_in("jane@example.org", PASSWORD + "-wrong")
        await people.sign_in("nobody@example.org", PASSWORD)
        await people.disable("jane@example.org")
        await people.sign_in("jane@example.org", PASSWORD)
        with pytest.raises(PersonError) as refused:
            await people.create("jane@example.org", "manager", PASSWORD, ["a"])
    assert PASSWORD not in repr(logged)
    assert PASSWORD not in str(refused.value)
    assert [entry.get("reason") for entry in logged if entry["event"] == "sign-in refused"] == [
        "wrong password",
        "unknown email",
        "disabled",
    ]


async def test_disabling_twice_keeps_the_first_time_and_nobody_is_refused(
    people: People,
) -> None:
    await people.create("jane@example.org", "viewer", PASSWORD, ["a"])
    first = await people.disable("jane@example.org")
    again = await people.disable("Jane@Example.org")
    assert (first.already, again.already, again.since) == (False, True, first.since)
    with pytest.raises(PersonError, match="nobody has the email"):
        await people.disable("nobody@example.org")


@pytest.mark.parametrize(
    ("email", "role", "agencies", "why"),
    [
        ("jane", "viewer", ["a"], "no email address"),
        ("jane@example", "viewer", ["a"], "no email address"),
        ("jane doe@example.org", "viewer", ["a"], "no email address"),
        ("jane@example.org", "owner", ["a"], "the role must be one of"),
        ("jane@example.org", "viewer", None, "give at least one --agency"),
        ("jane@example.org", "administrator", [], "give at least one --agency"),
        ("jane@example.org", "support", ["a"], "give no --agency"),
        ("jane@example.org", "ops", ["a"], "give no --agency"),
        ("jane@example.org", "manager", [""], "no agency id"),
    ],
)
def test_a_person_that_cannot_be_made_is_refused_saying_why(
    email: str, role: str, agencies: list[str] | None, why: str
) -> None:
    with pytest.raises(PersonError, match=why):
        check_person(email, role, agencies)


@pytest.mark.parametrize(
    ("password", "why"), [("", "no password"), ("eleven char", "too short"), ("x" * 1025, "long")]
)
async def test_a_password_too_short_or_too_long_is_refused(
    pool: asyncpg.Pool, people: People, password: str, why: str
) -> None:
    with pytest.raises(PersonError, match=why):
        await people.create("jane@example.org", "viewer", password, ["a"])
    assert await pool.fetchval("SELECT count(*) FROM people") == 0


async def test_an_email_is_taken_whatever_its_case(people: People) -> None:
    await people.create("jane@example.org", "viewer", PASSWORD, ["a"])
    with pytest.raises(PersonError, match="has an account already"):
        await people.create("JANE@example.org", "manager", PASSWORD, ["b"])


def test_passwords_are_hashed_with_argon2id_only(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="argon2id"):
        People(pool, argon2.PasswordHasher(type=argon2.Type.I))
