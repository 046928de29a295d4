"""`relaybook token create|list|revoke` and `relaybook user create|list|disable` as an
operator runs them: tokens bound to agencies and expiring, listed without their secret,
revoked at once against a running dispatcher; people with an argon2id-hashed password
read from stdin; one clear line and exit 2 for anything wrong."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from relaybook.access.people import People
from relaybook.tooling.embedded import running_postgres_pid
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import System
from tests.relaybook.test_cli import Up, data_dir, environment  # noqa: F401 - a fixture

RELAYBOOK = [sys.executable, "-m", "relaybook.tooling.cli"]
PASSWORD = "correct horse battery staple"


def run(
    args: list[str], settings: Settings, scratch: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The command on the test's own database (no embedded server to start)."""
    env = environment(scratch, RELAYBOOK_DATABASE_URL=settings.database_url or "")
    return subprocess.run(
        [*RELAYBOOK, *args],
        env=env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def arun(
    args: list[str], settings: Settings, scratch: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """:func:`run` off the event loop, so an in-process dispatcher keeps answering."""
    return await asyncio.to_thread(run, args, settings, scratch, stdin)


def test_a_token_is_created_for_agencies_with_an_expiry_and_listed_without_its_secret(
    settings: Settings, tmp_path: Path
) -> None:
    created = run(
        ["token", "create", "--name", "syndic-a", "--scopes", "journal:read,support",
         "--agency", "agency-b", "--agency", "agency-a", "--expires-in", "7"],
        settings, tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("rb_")
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).strftime("%Y-%m-%d")
    assert f"for agency-a, agency-b, until {expires}" in created.stderr
    wide = run(
        ["token", "create", "--name", "portal", "--scopes", "journal:read",
         "--expires-at", "2099-01-31"],
        settings, tmp_path,
    )  # fmt: skip
    assert wide.returncode == 0, wide.stderr

    listed = run(["token", "list"], settings, tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["name", "id", "scopes", "agencies", "created", "expires", "revoked"]
    [syndic] = [row for row in rows if row.startswith("syndic-a ")]
    assert "journal:read,support" in syndic
    assert "agency-a, agency-b" in syndic
    assert expires in syndic
    [portal] = [row for row in rows if row.startswith("portal ")]
    assert "platform-wide" in portal
    assert "2099-01-31 00:00" in portal
    assert token not in listed.stdout + listed.stderr
    assert token[3:20] not in listed.stdout, "nor any part of it"


async def test_a_revoked_token_answers_401_at_once_from_a_running_dispatcher(
    system: System, settings: Settings, tmp_path: Path
) -> None:
    created = await arun(
        ["token", "create", "--name", "accounting", "--scopes", "journal:read"], settings, tmp_path
    )
    assert created.returncode == 0, created.stderr
    async with httpx.AsyncClient(
        base_url=system.servers["dispatcher"].url,
        headers={"Authorization": f"Bearer {created.stdout.strip()}"},
    ) as client:
        assert (await client.get("/v1/journal")).status_code == 200

        revoked = await arun(["token", "revoke", "accounting"], settings, tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked: it answers 401 from now on" in revoked.stdout
        answer = await client.get("/v1/journal")  # at once: no waiting, no retry
        assert (answer.status_code, answer.json()["error"]) == (401, "unauthorized")

    again = await arun(["token", "revoke", "accounting"], settings, tmp_path)
    assert (again.returncode, "was revoked already" in again.stdout) == (0, True)
    listed = await arun(["token", "list"], settings, tmp_path)
    [row] = listed.stdout.splitlines()[1:]
    assert row.split()[-1] != "-", "the list shows when it was revoked"


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--scopes", "everything"], "scopes must be among"),
        (["--scopes", "journal:read", "--expires-in", "0"], "--expires-in takes a number"),
        (["--scopes", "journal:read", "--expires-in", "soon"], "--expires-in takes a number"),
        (["--scopes", "journal:read", "--expires-at", "2020-01-01"], "in the past"),
        (["--scopes", "journal:read", "--expires-at", "tomorrow"], "--expires-at takes an ISO"),
        (["--scopes", "journal:read", "--agency", ""], "no agency id"),
    ],
)
def test_token_create_refuses_bad_input_in_one_line_with_exit_2(
    settings: Settings, tmp_path: Path, args: list[str], why: str
) -> None:
    refused = run(["token", "create", "--name", "x", *args], settings, tmp_path)
    assert refused.returncode == 2
    [line] = refused.stderr.splitlines()
    assert line.startswith("relaybook token create: ")
    assert why in line
    assert refused.stdout == ""


def test_revoking_an_unknown_token_is_one_line_and_exit_2(
    settings: Settings, tmp_path: Path
) -> None:
    refused = run(["token", "revoke", "nobody"], settings, tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "relaybook token revoke: no token named or numbered 'nobody'"


async def test_a_person_is_created_from_stdin_listed_and_disabled(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    created = await arun(
        ["user", "create", "--email", "Jane@Example.org", "--role", "manager",
         "--agency", "agency-a", "--password-stdin"],
        settings, tmp_path, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "Jane@Example.org created: manager of agency-a"
    support = await arun(
        ["user", "create", "--email", "help@platform.example", "--role", "support",
         "--password-stdin"],
        settings, tmp_path, stdin=PASSWORD,
    )  # fmt: skip
    assert support.returncode == 0, support.stderr
    assert PASSWORD not in created.stdout + created.stderr + support.stdout + support.stderr
    stored = await pool.fetchval(
        "SELECT password_hash FROM people WHERE email = 'Jane@Example.org'"
    )
    assert stored.startswith("$argon2id$")

    caller = await People(pool).sign_in("jane@example.org", PASSWORD)
    assert caller is not None, "the line end read from stdin is not part of the password"
    assert (caller.roles, caller.agencies) == (frozenset({"manager"}), frozenset({"agency-a"}))

    listed = await arun(["user", "list"], settings, tmp_path)
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["email", "role", "agencies", "created", "last", "sign-in", "disabled"]
    assert [row.split()[:3] for row in rows] == [
        ["help@platform.example", "support", "every"],
        ["Jane@Example.org", "manager", "agency-a"],
    ]
    assert "$argon2" not in listed.stdout

    disabled = await arun(["user", "disable", "jane@example.org"], settings, tmp_path)
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.strip() == "Jane@Example.org disabled: they can no longer sign in"
    assert await People(pool).sign_in("jane@example.org", PASSWORD) is None


@pytest.mark.parametrize(
    ("args", "password", "why"),
    [
        (["--role", "manager", "--agency", "a"], "tiny-secret\n", "the password is too short"),
        (["--role", "manager", "--agency", "a"], "", "no password"),
        (["--role", "manager"], PASSWORD, "give at least one --agency"),
        (["--role", "support", "--agency", "a"], PASSWORD, "give no --agency"),
        (["--role", "owner", "--agency", "a"], PASSWORD, "the role must be one of"),
    ],
)
def test_user_create_refuses_bad_input_in_one_line_with_exit_2(
    settings: Settings, tmp_path: Path, args: list[str], password: str, why: str
) -> None:
    refused = run(
        ["user", "create", "--email", "jane@example.org", *args, "--password-stdin"],
        settings,
        tmp_path,
        stdin=password,
    )
    assert refused.returncode == 2
    [line] = refused.stderr.splitlines()
    assert line.startswith("relaybook user create: ")
    assert why in line
    assert not password.strip() or password.strip() not in line, "never repeated"


def test_a_taken_email_or_an_unknown_one_is_one_line_and_exit_2(
    settings: Settings, tmp_path: Path
) -> None:
    args = ["user", "create", "--email", "jane@example.org", "--role", "ops", "--password-stdin"]
    assert run(args, settings, tmp_path, stdin=PASSWORD).returncode == 0
    taken = run([*args[:3], "JANE@example.org", *args[4:]], settings, tmp_path, stdin=PASSWORD)
    assert taken.returncode == 2
    assert taken.stderr.strip() == (
        "relaybook user create: JANE@example.org has an account already"
    )
    unknown = run(["user", "disable", "nobody@example.org"], settings, tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "relaybook user disable: nobody has the email 'nobody@example.org'"
    )


def test_token_and_user_commands_use_a_running_up_and_revocation_is_immediate_there(
    data_dir: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """Against the embedded database of `up` (on its data dir), without stopping it."""
    up = Up(environment(data_dir), tmp_path / "up")
    up.wait_ready()
    postgres = running_postgres_pid(data_dir)
    env = environment(data_dir)

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*RELAYBOOK, *args], env=env, input=stdin, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    created = cli("token", "create", "--name", "syndic", "--scopes", "journal:read",
                  "--agency", "agency-a")  # fmt: skip
    assert created.returncode == 0, created.stderr
    headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
    assert httpx.get(f"{up.api}/v1/journal", headers=headers).status_code == 200
    person = cli("user", "create", "--email", "ops@example.org", "--role", "ops",
                 "--password-stdin", stdin=PASSWORD)  # fmt: skip
    assert person.returncode == 0, person.stderr
    assert "ops@example.org" in cli("user", "list").stdout
    assert "syndic" in cli("token", "list").stdout

    assert cli("token", "revoke", "syndic").returncode == 0
    assert httpx.get(f"{up.api}/v1/journal", headers=headers).status_code == 401

    assert up.process.poll() is None, up.stderr()
    assert running_postgres_pid(data_dir) == postgres, "the very same server, never stopped"
    assert PASSWORD not in up.stderr()
    assert up.terminate() == 0
