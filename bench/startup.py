"""Start-up to ready: `relaybook up` on the embedded defaults, from the command to both
/readyz answering 200, cold (empty data dir: initdb) and warm (data dir kept), beside the
raw floor measured in the same run: starting the same embedded PostgreSQL and broker with
no relaybook code around them.

    .venv/bin/python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from relaybook.platform.settings import env_name
from relaybook.tooling.embedded import EmbeddedBroker, EmbeddedPostgres, free_port_settings


def time_up(data_dir: Path) -> float:
    # every deployable's port free, not only the two watched: the defaults may be a
    # running `up`'s (the broker's port is 0 by default: a free one)
    ports = free_port_settings()
    api, ingest = ports["api_port"], ports["ingest_port"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOOK_")}
    env |= {env_name(name): str(port) for name, port in ports.items()}
    env |= {"RELAYBOOK_DATA_DIR": str(data_dir), "RELAYBOOK_LOG_LEVEL": "WARNING"}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "relaybook.tooling.cli", "up"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit("relaybook up exited before it was ready")
            try:
                if all(
                    httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
                    for port in (api, ingest)
                ):
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def time_floor(data_dir: Path) -> float:
    started = time.monotonic()
    postgres = EmbeddedPostgres(data_dir)
    postgres.start()
    broker = EmbeddedBroker()
    broker.start()
    elapsed = time.monotonic() - started
    broker.stop()
    postgres.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    results: dict[str, list[float]] = {
        "up cold": [],
        "up warm": [],
        "floor cold": [],
        "floor warm": [],
    }
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as up_dir, tempfile.TemporaryDirectory() as raw_dir:
            results["up cold"].append(time_up(Path(up_dir)))
            results["up warm"].append(time_up(Path(up_dir)))
            results["floor cold"].append(time_floor(Path(raw_dir)))
            results["floor warm"].append(time_floor(Path(raw_dir)))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}, runs: {runs}")
    for name, values in results.items():
        print(f"{name:11} median {statistics.median(values):6.2f} s  max {max(values):6.2f} s")
    for kind in ("cold", "warm"):
        ratio = statistics.median(results[f"up {kind}"]) / statistics.median(
            results[f"floor {kind}"]
        )
        print(f"up {kind} / floor {kind}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
