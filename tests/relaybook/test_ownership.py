"""One owner per data dir (relaybook/tooling/ownership.py): the lock is exclusive across processes,
freed by the kernel when its holder dies, re-entrant within one process; brief commands
wait for a brief owner and share a running `up`'s database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaybook.tooling import ownership

ROOT = Path(__file__).resolve().parents[2]

#: holds a data dir in another process until a line arrives on its stdin
HOLDER = """
import sys
from pathlib import Path
from relaybook.tooling import ownership
kind = sys.argv[2]
claim = ownership.claim(
    Path(sys.argv[1]), "relaybook " + kind, brief=kind == "migrate", shares_database=kind == "up"
)
if kind == "up":
    claim.publish(
        database_url="postgresql:///relaybook?host=/nowhere",
        urls={"dispatcher": "http://127.0.0.1:8000"},
        ready=True,
    )
print("held", flush=True)
sys.stdin.readline()
claim.release()
"""


class Holder:
    """Another process holding the data dir as ``relaybook <kind>``."""

    def __init__(self, data_dir: Path, kind: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(data_dir), kind],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "held"

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.wait(10) == 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


def test_a_data_dir_held_elsewhere_is_refused_naming_its_owner(
    tmp_path: Path, holders: list[Holder]
) -> None:
    holder = Holder(tmp_path, "up")
    holders.append(holder)
    with pytest.raises(ownership.DataDirInUseError) as refused:
        ownership.claim(tmp_path, "relaybook up", wait_s=0)
    assert str(refused.value) == (
        f"{tmp_path} is in use by relaybook up (pid {holder.process.pid}, "
        "API http://127.0.0.1:8000): stop it first, or set another RELAYBOOK_DATA_DIR"
    )


def test_a_killed_owner_leaves_a_stale_file_that_the_next_claim_takes_over(
    tmp_path: Path, holders: list[Holder]
) -> None:
    holder = Holder(tmp_path, "up")
    holders.append(holder)
    holder.process.kill()
    holder.process.wait(10)
    assert ownership.read_owner(tmp_path) is not None, "SIGKILL leaves no time to clean up"

    with ownership.claim(tmp_path, "relaybook up", wait_s=0) as claim:
        assert claim.owner.pid == os.getpid()
        written = json.loads((tmp_path / ownership.OWNER_FILE).read_text())
        assert (written["pid"], written["command"]) == (os.getpid(), "relaybook up")
    assert not (tmp_path / ownership.OWNER_FILE).exists()


def test_a_claim_is_reentrant_within_a_process_and_held_until_the_last_release(
    tmp_path: Path,
) -> None:
    outer = ownership.claim(tmp_path, "relaybook up", shares_database=True)
    inner = ownership.claim(tmp_path)  # what infrastructure() does under `up`
    assert inner is outer
    inner.publish(database_url="postgresql:///x")
    inner.release()
    assert ownership.read_owner(tmp_path) == outer.owner
    assert outer.owner.command == "relaybook up"
    assert outer.owner.database_url == "postgresql:///x"
    outer.release()
    assert ownership.read_owner(tmp_path) is None
    with ownership.claim(tmp_path, "again", wait_s=0):  # free again
        pass


def test_a_brief_command_shares_a_running_ups_database(
    tmp_path: Path, holders: list[Holder]
) -> None:
    holders.append(Holder(tmp_path, "up"))
    shared = ownership.claim_or_share(tmp_path, "relaybook token create", wait_s=0)
    assert isinstance(shared, ownership.Owner)
    assert shared.database_url == "postgresql:///relaybook?host=/nowhere"


def test_a_brief_command_waits_for_a_brief_owner_then_takes_the_data_dir(
    tmp_path: Path, holders: list[Holder]
) -> None:
    holder = Holder(tmp_path, "migrate")
    holders.append(holder)
    taken: list[ownership.Claim | ownership.Owner] = []
    waiting = threading.Thread(
        target=lambda: taken.append(ownership.claim_or_share(tmp_path, "relaybook migrate"))
    )
    waiting.start()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # it is still waiting for the holder all along
        assert not taken
        time.sleep(0.05)
    holder.release()
    waiting.join(10)
    assert len(taken) == 1
    assert isinstance(taken[0], ownership.Claim)
    assert taken[0].owner.pid == os.getpid()
    taken[0].release()
