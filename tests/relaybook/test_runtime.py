"""The process-wide tuning a started service applies (relaybook/runtime.py)."""

from __future__ import annotations

import subprocess
import sys


def test_a_started_service_collects_garbage_rarely_and_skips_what_startup_made() -> None:
    # in a process of its own: the tuning is process-wide and for good
    code = (
        "import gc, relaybook.system\n"
        "from relaybook.runtime import settle_garbage_collector\n"
        "settle_garbage_collector()\n"
        "print(gc.get_threshold(), gc.get_freeze_count() > 10_000)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "(20000, 20, 20) True"
