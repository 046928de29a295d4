"""The real `relaybook` command as a subprocess: `up` becomes ready on the embedded
defaults, stops cleanly on SIGTERM leaving no process behind, and finds its data again;
`migrate` is idempotent; `demo` checks itself."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from relaybook.platform.database import migrations
from relaybook.platform.settings import env_name
from relaybook.tooling.embedded import EmbeddedBroker, free_port_settings, running_postgres_pid

RELAYBOOK = [sys.executable, "-m", "relaybook.tooling.cli"]


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOOK_")}
    if "RELAYBOOK_DATABASE_URL" in os.environ:  # the suite's second PostgreSQL
        env["RELAYBOOK_DATABASE_URL"] = os.environ["RELAYBOOK_DATABASE_URL"]
    env.update({env_name(name): str(port) for name, port in free_port_settings().items()})
    env.update(RELAYBOOK_DATA_DIR=str(data_dir), RELAYBOOK_LOG_FORMAT="json")
    env.update(extra)
    return env


class Up:
    """`relaybook up` in the background, with its output kept for the assertions; its
    stdout a file, or a terminal (a pseudo-terminal) with ``terminal``."""

    def __init__(self, env: dict[str, str], log_path: Path, *, terminal: bool = False) -> None:
        self.env = env
        self.api = f"http://127.0.0.1:{env['RELAYBOOK_API_PORT']}"
        self.ingest = f"http://127.0.0.1:{env['RELAYBOOK_INGEST_PORT']}"
        self.deployables = {
            name: f"http://127.0.0.1:{env[f'RELAYBOOK_{name.upper()}_PORT']}"
            for name in ("api", "ingest", "worker", "tracker", "bounce_policy")
        }
        self._stdout = log_path.with_suffix(".out")
        self._stderr = log_path.with_suffix(".err")
        self._terminal: int | None = None
        _started.append(self)
        with self._stdout.open("w") as out, self._stderr.open("w") as err:
            if terminal:
                self._terminal, tty = pty.openpty()
                self.process = subprocess.Popen([*RELAYBOOK, "up"], env=env, stdout=tty, stderr=err)
                os.close(tty)
            else:
                self.process = subprocess.Popen([*RELAYBOOK, "up"], env=env, stdout=out, stderr=err)

    def wait_ready(self, timeout: float = 90) -> float:
        """Seconds until `up` is ready. A wait, not a measure (the start-up's time is
        the `timing` test's): beside the suite's other processes on 2 cores, starting
        PostgreSQL alone took 12 s."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"up exited early:\n{self.stderr()}"
            try:
                # ready: every deployable says so, and `up` has printed its banner
                if "relaybook is up" in self.stdout() and all(
                    httpx.get(f"{url}/readyz", timeout=1).status_code == 200
                    for url in self.deployables.values()
                ):
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout}s:\n{self.stderr()}")

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stdout(self) -> str:
        if self._terminal is not None:  # what the terminal showed so far, kept in the file
            with self._stdout.open("ab") as kept:
                while select.select([self._terminal], [], [], 0)[0]:
                    try:
                        chunk = os.read(self._terminal, 65536)
                    except OSError:  # EIO: the process is gone and everything was read
                        chunk = b""
                    if not chunk:
                        os.close(self._terminal)
                        self._terminal = None
                        break
                    kept.write(chunk)
        return self._stdout.read_text().replace("\r\n", "\n")

    def stderr(self) -> str:
        return self._stderr.read_text()


#: every `up` a test started, for its data dir fixture to stop if the test did not
_started: list[Up] = []


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Not under pytest's tmp_path: another pytest session starting meanwhile makes that
    tree owner-only, and the embedded server runs as another user."""
    scratch = Path(tempfile.mkdtemp(prefix="relaybook-cli-"))
    path = scratch / "data"
    yield path
    while _started:  # a test that failed half-way leaves no `up` behind either
        process = _started.pop().process
        if process.poll() is None:
            process.kill()
            process.wait(30)
    pid = running_postgres_pid(path)
    if pid is not None:  # never leave a server behind, even when a test failed
        psutil.Process(pid).terminate()
        psutil.Process(pid).wait(30)
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.timing
def test_up_is_ready_serves_health_and_stops_on_sigterm_leaving_nothing_behind(
    data_dir: Path, tmp_path: Path
) -> None:
    up = Up(environment(data_dir), tmp_path / "first")
    seconds = up.wait_ready()
    assert seconds < 15, f"start-up to ready took {seconds:.1f}s"
    banner = up.stdout()
    assert "relaybook is up" in banner
    assert f"dispatcher API   {up.api}" in banner
    assert f"webhook ingest   {up.ingest}" in banner
    sandbox = f"http://127.0.0.1:{up.env['RELAYBOOK_SANDBOX_PORT']}"
    assert f"provider sandbox {sandbox}" in banner
    assert "the sandbox stands in for SendGrid and Twilio" in banner
    described = httpx.get(f"{sandbox}/_sandbox").json()
    assert described["sendgrid_webhook_url"] == f"{up.ingest}/webhooks/sendgrid"
    key = (data_dir / "sandbox" / "sendgrid-webhook-key").read_text().strip()
    assert key not in banner, "the private key stays in the data dir"
    token = (data_dir / "admin-token").read_text().strip()
    assert f"admin token      in {data_dir}/admin-token" in banner
    assert token not in banner, "not on a terminal: the banner may end up in a log"
    assert oct((data_dir / "admin-token").stat().st_mode & 0o777) == "0o600"
    assert httpx.get(f"{up.api}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{up.ingest}/healthz").json() == {"status": "ok"}
    assert "relaybook_http_request_seconds" in httpx.get(f"{up.api}/metrics").text
    started = up.children()
    assert any("tansu" in child.name() for child in started), "the embedded broker runs"

    assert up.terminate() == 0
    psutil.wait_procs(started, timeout=10)
    assert not [child for child in started if child.is_running()]
    assert running_postgres_pid(data_dir) is None
    logged = [json.loads(line) for line in up.stderr().splitlines() if line.startswith("{")]
    assert any(entry["event"] == "relaybook stopped" for entry in logged)
    assert "Traceback" not in up.stderr()


def test_a_second_up_on_the_same_data_dir_finds_its_data_again(
    data_dir: Path, tmp_path: Path
) -> None:
    """...and on a terminal, the banner shows the admin token itself."""
    first = Up(environment(data_dir), tmp_path / "first")
    first.wait_ready()
    assert first.terminate() == 0
    second = Up(environment(data_dir), tmp_path / "second", terminal=True)
    second.wait_ready()
    token = (data_dir / "admin-token").read_text().strip()
    deadline = time.monotonic() + 10
    while "Press Ctrl-C" not in second.stdout():
        assert time.monotonic() < deadline, second.stdout()
        time.sleep(0.05)
    assert second.terminate() == 0
    assert token not in first.stdout()
    assert f"admin token      {token}" in second.stdout()
    if "RELAYBOOK_DATABASE_URL" not in os.environ:
        assert '"migration applied"' in first.stderr()
        assert '"migration applied"' not in second.stderr(), "the database was kept"


def test_up_names_a_taken_port_and_starts_nothing(data_dir: Path) -> None:
    env = environment(data_dir)
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", int(env["RELAYBOOK_INGEST_PORT"])))
        taken.listen()
        result = subprocess.run(
            [*RELAYBOOK, "up"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        f"relaybook: RELAYBOOK_INGEST_PORT={env['RELAYBOOK_INGEST_PORT']}: cannot listen there "
        "(Address already in use)"
    )
    assert not (data_dir / "postgres").exists()


def test_migrate_applies_once_then_reports_current(data_dir: Path) -> None:
    env = environment(data_dir)
    runs = [
        subprocess.run(
            [*RELAYBOOK, "migrate"], env=env, capture_output=True, text=True, timeout=60, check=True
        )
        for _ in range(2)
    ]
    if "RELAYBOOK_DATABASE_URL" not in os.environ:
        assert runs[0].stdout.splitlines() == [
            f"applied {m.version:04d}_{m.name}" for m in migrations()
        ]
    assert runs[1].stdout.strip() == f"the database is current (migration {len(migrations())})"
    assert running_postgres_pid(data_dir) is None, "migrate stops the server it started"


def test_a_single_deployable_refuses_to_start_without_configured_servers(data_dir: Path) -> None:
    env = environment(data_dir)
    env.pop("RELAYBOOK_DATABASE_URL", None)
    result = subprocess.run(
        [*RELAYBOOK, "dispatcher"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "relaybook: relaybook dispatcher needs RELAYBOOK_DATABASE_URL and "
        "RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS (only `relaybook up` and `relaybook demo` start "
        "embedded servers)"
    )


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (
            "worker",
            "relaybook worker needs RELAYBOOK_SENDGRID_API_KEY, RELAYBOOK_TWILIO_ACCOUNT_SID, "
            "RELAYBOOK_TWILIO_AUTH_TOKEN, RELAYBOOK_TWILIO_FROM and "
            "RELAYBOOK_PUBLIC_WEBHOOK_BASE_URL to send (the providers' credentials; on a "
            "trial, those the sandbox accepts: deploy/sandbox.env)",
        ),
        (
            "ingest",
            "relaybook ingest needs RELAYBOOK_SENDGRID_WEBHOOK_PUBLIC_KEYS, "
            "RELAYBOOK_TWILIO_AUTH_TOKEN and RELAYBOOK_PUBLIC_WEBHOOK_BASE_URL to verify the "
            "providers' webhooks",
        ),
    ],
)
def test_a_single_worker_or_ingest_refuses_to_start_without_the_providers_settings(
    data_dir: Path, command: str, said: str
) -> None:
    """Else it would start and report ready, then fail every send or refuse every
    webhook. The servers are never reached (port 1): the refusal comes first."""
    env = environment(
        data_dir,
        RELAYBOOK_DATABASE_URL="postgresql://relaybook@127.0.0.1:1/relaybook",
        RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
    )
    result = subprocess.run(
        [*RELAYBOOK, command], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stderr.strip()) == (2, f"relaybook: {said}")


def test_demo_reports_every_step_as_json_and_exits_0(tmp_path: Path) -> None:
    result = subprocess.run(
        [*RELAYBOOK, "demo", "--json"],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert (report["ok"], report["error"]) == (True, None)
    steps = {step["name"]: step for step in report["steps"]}
    assert all(step["ok"] for step in report["steps"])
    for name in (
        "start-up to ready",
        "publish the deposit call",
        "the funnel adds up",
        "every failure says why",
        "a spam complaint unsubscribes at once, as the owner's own word",
        "three hard bounces unsubscribe",
        "the overview shows who and why",
        "blocks by reputation are not the owner's fault",
        "resend options count each scope",
        "the fixed address gets through",
        "support overrides the automatic unsubscribe",
        "the provider is given it again",
        "their texts stop",
        "the manager's yes is refused",
        "the support's yes is refused",
        "their texts come back",
        "stop cleanly",
    ):
        assert name in steps, name
    assert steps["resend options count each scope"]["data"]["failed"]["recipients"] == 6
    assert report["seconds"] < 60


def test_after_up_is_killed_the_broker_dies_with_it_and_the_next_up_recovers(
    data_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL leaves no time to clean up: the broker is tied to its parent by the kernel;
    the PostgreSQL server outlives it and is found and reused by the next `up`."""
    killed = Up(environment(data_dir), tmp_path / "killed")
    killed.wait_ready()
    brokers = [child for child in killed.children() if "tansu" in child.name()]
    assert brokers
    killed.process.kill()
    killed.process.wait(10)
    psutil.wait_procs(brokers, timeout=10)
    assert not [broker for broker in brokers if broker.is_running()]

    stale = json.loads((data_dir / "owner.json").read_text())
    assert stale["pid"] == killed.process.pid, "the owner file outlives a killed `up`"

    again = Up(environment(data_dir), tmp_path / "again")
    again.wait_ready()
    assert json.loads((data_dir / "owner.json").read_text())["pid"] == again.process.pid
    assert again.terminate() == 0
    assert running_postgres_pid(data_dir) is None, "the next `up` adopted the server and stopped it"
    assert not (data_dir / "owner.json").exists()


def test_with_provider_credentials_up_runs_no_sandbox(data_dir: Path, tmp_path: Path) -> None:
    env = environment(
        data_dir,
        RELAYBOOK_SENDGRID_API_KEY="SG.real",
        RELAYBOOK_TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        RELAYBOOK_TWILIO_AUTH_TOKEN="real-token",
        RELAYBOOK_TWILIO_FROM="+15005550006",
    )
    up = Up(env, tmp_path / "real")
    up.wait_ready()
    assert up.terminate() == 0
    assert "provider sandbox" not in up.stdout()
    assert not (data_dir / "sandbox").exists()


def test_the_sandbox_runs_alone_without_database_or_broker(data_dir: Path, tmp_path: Path) -> None:
    env = environment(data_dir)
    env.pop("RELAYBOOK_DATABASE_URL", None)
    port = env["RELAYBOOK_SANDBOX_PORT"]
    with (tmp_path / "sandbox.out").open("w") as out:
        process = subprocess.Popen(
            [*RELAYBOOK, "sandbox"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                described = httpx.get(f"http://127.0.0.1:{port}/_sandbox", timeout=1).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, (tmp_path / "sandbox.out").read_text()
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert described["sendgrid_webhook_public_key"]
    assert not (data_dir / "postgres").exists()


# --- one owner per data dir: `up` owns it; brief commands use its database


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RELAYBOOK, *command], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def still_serving(up: Up, postgres_pid: int | None) -> None:
    """`up` is still ready (its database answers) on the very same PostgreSQL server."""
    assert up.process.poll() is None, up.stderr()
    assert httpx.get(f"{up.api}/readyz", timeout=5).status_code == 200, up.stderr()
    assert running_postgres_pid(up_data_dir(up)) == postgres_pid


def up_data_dir(up: Up) -> Path:
    return Path(up.env["RELAYBOOK_DATA_DIR"])


def test_up_describes_itself_as_the_data_dir_owner(data_dir: Path, tmp_path: Path) -> None:
    up = Up(environment(data_dir), tmp_path / "up")
    up.wait_ready()
    owner = json.loads((data_dir / "owner.json").read_text())
    assert owner["pid"] == up.process.pid
    assert owner["command"] == "relaybook up"
    assert owner["urls"]["dispatcher"] == up.api
    assert owner["urls"]["ingest"] == up.ingest
    assert owner["started_at"]
    if "RELAYBOOK_DATABASE_URL" not in os.environ:
        assert owner["database_url"].startswith("postgres")
    assert up.terminate() == 0
    assert not (data_dir / "owner.json").exists(), "a stopped `up` owns nothing"


def test_token_create_while_up_runs_uses_its_database_and_leaves_it_running(
    data_dir: Path, tmp_path: Path
) -> None:
    up = Up(environment(data_dir), tmp_path / "up")
    up.wait_ready()
    postgres = running_postgres_pid(data_dir)

    created = run(
        ["token", "create", "--name", "accounting", "--scopes", "journal:read"],
        environment(data_dir),
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()

    still_serving(up, postgres)
    answer = httpx.get(f"{up.api}/v1/journal", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert up.terminate() == 0


def test_migrate_while_up_runs_leaves_it_running(data_dir: Path, tmp_path: Path) -> None:
    up = Up(environment(data_dir), tmp_path / "up")
    up.wait_ready()
    postgres = running_postgres_pid(data_dir)

    migrated = run(["migrate"], environment(data_dir))
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == f"the database is current (migration {len(migrations())})"

    still_serving(up, postgres)
    assert up.terminate() == 0
    assert running_postgres_pid(data_dir) is None


def test_a_second_up_on_the_same_data_dir_exits_1_naming_the_first(
    data_dir: Path, tmp_path: Path
) -> None:
    first = Up(environment(data_dir), tmp_path / "first")
    first.wait_ready()
    postgres = running_postgres_pid(data_dir)

    second = run(["up"], environment(data_dir))  # other ports, same data dir

    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"relaybook: {data_dir} is in use by relaybook up (pid {first.process.pid}, "
        f"API {first.api}): stop it first, or set another RELAYBOOK_DATA_DIR"
    )
    assert "Traceback" not in second.stderr
    still_serving(first, postgres)
    assert json.loads((data_dir / "owner.json").read_text())["pid"] == first.process.pid
    assert first.terminate() == 0


def test_demo_stay_prints_how_to_add_a_support_user_beside_it_and_that_command_works(
    tmp_path: Path,
) -> None:
    """`relaybook demo --stay` shares its database as `up` does: the command it prints to add
    a support user (on its own data dir) succeeds while the demo stays up, and that person
    signs in to the demo's console."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOOK_")}
    out = tmp_path / "demo.out"
    with out.open("w") as stdout, (tmp_path / "demo.err").open("w") as stderr:
        demo = subprocess.Popen(
            [*RELAYBOOK, "demo", "--stay"], env=env, stdout=stdout, stderr=stderr
        )
    data_dir: Path | None = None
    try:
        deadline = time.monotonic() + 150
        while "to click through the tour" not in out.read_text():
            assert demo.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(0.2)
        told = out.read_text()
        printed = re.search(r"^ +(RELAYBOOK_DATA_DIR=.* relaybook user create .*)$", told, re.M)
        assert printed, f"no command to add a support user:\n{told}"
        assignment, program, *arguments = shlex.split(printed.group(1))
        assert program == "relaybook"
        assert arguments[arguments.index("--role") + 1] == "support"
        data_dir = Path(assignment.removeprefix("RELAYBOOK_DATA_DIR="))
        assert data_dir.is_absolute()
        email = arguments[arguments.index("--email") + 1]
        password = "a support password, long enough"

        created = subprocess.run(
            [*RELAYBOOK, *arguments],
            env=env | {"RELAYBOOK_DATA_DIR": str(data_dir)},
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert created.returncode == 0, created.stderr
        assert created.stdout.strip() == f"{email} created: support of every agency"

        console = re.search(r"Open (http://127\.0\.0\.1:\d+)/ui/", told)
        assert console, told
        with httpx.Client(base_url=console.group(1), timeout=30) as browser:
            form = browser.get("/ui/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf, form.text
            signed = browser.post(
                "/ui/login", data={"csrf": csrf.group(1), "email": email, "password": password}
            )
            assert signed.status_code == 303, signed.text
        assert demo.poll() is None, "the demo stays up beside a brief command"
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0, out.read_text()[-3000:]
        assert not data_dir.exists(), "the demo's own data dir goes with it"
    finally:
        # a test that failed half-way stops the demo as Ctrl-C does: it stops its servers
        # and removes its data dir (killed, it would leave both behind)
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(60)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait(30)
        if data_dir is not None:
            pid = running_postgres_pid(data_dir)
            if pid is not None:  # never leave a server behind, even when the test failed
                psutil.Process(pid).terminate()
                psutil.Process(pid).wait(30)


def test_a_single_dispatcher_never_prints_the_admin_token(
    data_dir: Path, tmp_path: Path, database_url: str, broker: EmbeddedBroker
) -> None:
    secret = "never-print-this-admin-token"
    env = environment(
        data_dir,
        RELAYBOOK_DATABASE_URL=database_url,
        RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        RELAYBOOK_TOPIC_PREFIX=f"cli{os.getpid()}.",
        RELAYBOOK_ADMIN_TOKEN=secret,
    )
    api = f"http://127.0.0.1:{env['RELAYBOOK_API_PORT']}"
    out, err = tmp_path / "dispatcher.out", tmp_path / "dispatcher.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [*RELAYBOOK, "dispatcher"], env=env, stdout=stdout, stderr=stderr
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, err.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        answer = httpx.get(f"{api}/v1/journal", headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 200, "the configured token is the admin's"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert "admin token      from RELAYBOOK_ADMIN_TOKEN" in out.read_text()
    assert secret not in out.read_text()
    assert secret not in err.read_text()


def test_up_starts_a_deployable_that_died_again_and_stops_them_all(
    data_dir: Path, tmp_path: Path
) -> None:
    up = Up(environment(data_dir), tmp_path / "up")
    up.wait_ready(timeout=60)
    deployables = {
        " ".join(child.cmdline()[-1:]): child
        for child in psutil.Process(up.process.pid).children()
        if "relaybook.tooling.cli" in child.cmdline()
    }
    assert set(deployables) == {"dispatcher", "ingest", "worker", "tracker", "bounce-policy"}
    deployables["worker"].kill()
    deployables["worker"].wait(10)
    worker = up.deployables["worker"]
    deadline = time.monotonic() + 60
    while True:  # the worker comes back, in a new process
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{worker}/readyz", timeout=1).status_code == 200:
                break
        assert time.monotonic() < deadline, up.stderr()
        time.sleep(0.2)
    assert httpx.get(f"{up.api}/readyz").status_code == 200, "the others went on"
    logged = [json.loads(line) for line in up.stderr().splitlines() if line.startswith("{")]
    restarted = [e for e in logged if e["event"] == "deployable exited; starting it again"]
    assert [e["deployable"] for e in restarted] == ["worker"]
    tagged = {e.get("deployable") for e in logged if e["event"] == "relaybook ready"}
    assert {"dispatcher", "worker", "tracker"} <= tagged, "each line names its deployable"
    now_running = psutil.Process(up.process.pid).children()
    assert up.terminate() == 0
    psutil.wait_procs(now_running, timeout=10)
    assert not [child for child in now_running if child.is_running()]
