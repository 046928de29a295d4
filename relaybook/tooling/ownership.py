"""Who owns a data directory: one process at a time, so one system per embedded database.

The owner holds an exclusive ``flock`` on ``<data dir>/owner.lock`` (the kernel releases
it when the process dies, even by SIGKILL) and describes itself in ``owner.json`` beside
it: pid, command, the URLs it serves, the embedded database's URL, start time. A file
left by a killed owner is stale as soon as its lock is free, and the next claim takes it
over.

``relaybook up`` owns its data dir for as long as it runs and *shares* its database: a
brief command (``migrate``, ``token ...``, ``user ...``) on that data dir uses the running
server and leaves it alone. So does any process serving the embedded database on its data
dir (``relaybook demo --stay``). With nobody running, a brief command owns the data dir for
its duration; anyone else waits for it to finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

LOCK_FILE = "owner.lock"
OWNER_FILE = "owner.json"

#: how long a claim waits for a brief owner to finish, or a starting `up` to publish
#: its database
WAIT_S = 60.0
_POLL_S = 0.05


class DataDirInUseError(RuntimeError):
    """Another process owns the data dir; the message is one line naming it."""

    def __init__(self, data_dir: Path, owner: Owner | None, advice: str | None = None) -> None:
        self.data_dir = data_dir
        self.owner = owner
        who = owner.describe() if owner is not None else "another process"
        advice = advice or "stop it first, or set another RELAYBOOK_DATA_DIR"
        super().__init__(f"{data_dir} is in use by {who}: {advice}")


@dataclasses.dataclass(frozen=True)
class Owner:
    """What ``owner.json`` says about the process holding the lock."""

    pid: int
    command: str
    started_at: str
    #: `up`, the demo: brief commands on this data dir use its database instead of
    #: starting one
    shares_database: bool = False
    #: migrate, token...: it ends soon, so a newcomer waits for it rather than failing
    brief: bool = False
    #: the embedded PostgreSQL's URL once started (None with a configured database)
    database_url: str | None = None
    #: what it serves, by deployable (``dispatcher``, ``ingest``...)
    urls: dict[str, str] = dataclasses.field(default_factory=dict)
    #: fully started: a database_url still missing will not come
    ready: bool = False
    #: the broker it uses (embedded or configured), for brief commands that publish
    kafka_bootstrap_servers: str | None = None

    def describe(self) -> str:
        if "dispatcher" in self.urls:
            state = f", API {self.urls['dispatcher']}"
        elif not self.ready:
            state = ", starting"
        else:
            state = ""
        return f"{self.command} (pid {self.pid}{state})"


class Claim:
    """This process's hold on a data dir. Re-entrant within the process: a second claim
    returns the same object, and the lock is released when the last one is."""

    def __init__(self, data_dir: Path, descriptor: int, owner: Owner) -> None:
        self.data_dir = data_dir
        self.owner = owner
        self._descriptor: int | None = descriptor
        self._depth = 1
        self._write()

    def publish(self, **changes: Any) -> None:
        """Updates what ``owner.json`` says (atomically: readers never see half a file)."""
        self.owner = dataclasses.replace(self.owner, **changes)
        self._write()

    def release(self) -> None:
        with _registry_lock:
            self._depth -= 1
            if self._depth > 0 or self._descriptor is None:
                return
            _held.pop(self.data_dir, None)
            # the file goes before the lock: nobody reads our description once it is free
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / OWNER_FILE).unlink()
            os.close(self._descriptor)  # closing the last descriptor releases the flock
            self._descriptor = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _write(self) -> None:
        path = self.data_dir / OWNER_FILE
        scratch = path.with_name(f".{OWNER_FILE}.{os.getpid()}")
        scratch.write_text(json.dumps(dataclasses.asdict(self.owner), indent=2) + "\n")
        scratch.replace(path)


_held: dict[Path, Claim] = {}
_registry_lock = threading.Lock()


def read_owner(data_dir: Path) -> Owner | None:
    """What ``owner.json`` says, whether or not its writer still holds the lock."""
    try:
        raw = json.loads((data_dir.resolve() / OWNER_FILE).read_text())
        return Owner(**raw)
    except (OSError, ValueError, TypeError):
        return None


def claim(
    data_dir: Path,
    command: str | None = None,
    *,
    brief: bool = False,
    shares_database: bool = False,
    wait_s: float = WAIT_S,
) -> Claim:
    """Takes the data dir for this process (or joins this process's claim on it).

    Waits up to ``wait_s`` for a brief owner to finish; any other owner raises
    :class:`DataDirInUseError` at once."""
    taken = _acquire(
        data_dir,
        command or _invocation(),
        brief=brief,
        shares_database=shares_database,
        wait_s=wait_s,
        share=False,
    )
    assert isinstance(taken, Claim)
    return taken


def claim_or_share(data_dir: Path, command: str, *, wait_s: float = WAIT_S) -> Claim | Owner:
    """For a brief command: the running `up` whose database to use (it is never stopped),
    else a claim on the data dir for the command's duration."""
    return _acquire(data_dir, command, brief=True, shares_database=False, wait_s=wait_s, share=True)


def _acquire(
    data_dir: Path,
    command: str,
    *,
    brief: bool,
    shares_database: bool,
    wait_s: float,
    share: bool,
) -> Claim | Owner:
    path = data_dir.resolve()
    with _registry_lock:
        if path in _held:
            _held[path]._depth += 1
            return _held[path]
    path.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        descriptor = _try_lock(path)
        if descriptor is not None:
            started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            taken = Claim(
                path, descriptor, Owner(os.getpid(), command, started, shares_database, brief)
            )
            with _registry_lock:
                _held[path] = taken
            return taken
        owner = read_owner(path)
        if share and owner is not None and owner.shares_database and _alive(owner.pid):
            if owner.database_url is not None:
                return owner
            if owner.ready:
                raise DataDirInUseError(
                    path, owner, "it uses a configured database: set RELAYBOOK_DATABASE_URL"
                )
        # A holder that has not described itself yet (the file is missing or a dead
        # owner's) is starting: worth waiting for, like a brief one.
        worth_waiting = (
            owner is None
            or not _alive(owner.pid)
            or owner.brief
            or (share and owner.shares_database)
        )
        if not worth_waiting or time.monotonic() >= deadline:
            named = owner if owner is not None and _alive(owner.pid) else None
            raise DataDirInUseError(path, named)
        time.sleep(_POLL_S)


def _try_lock(data_dir: Path) -> int | None:
    """The lock file's descriptor, locked; None when another process holds the lock."""
    # O_CLOEXEC: a server we spawn (PostgreSQL outlives us) must never inherit the lock.
    descriptor = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, alive
        return True
    return True


def _invocation() -> str:
    """``relaybook demo``, say: how this process was started, for the owner file."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if name in {"cli.py", "__main__.py"}:
        name = "relaybook"
    return " ".join([name, *sys.argv[1:2]])
