"""The benchmark scripts are run by hand, never by the suite; this only shows each one
still starts, as it is run (``python bench/<name>.py``, its folder first on the path), so
a module moved or named like a package elsewhere is found before the next sitting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: helpers the scripts import, not scripts
HELPERS = {"brokers.py", "floors.py", "temporary.py"}


def test_every_benchmark_script_starts_and_answers_help() -> None:
    scripts = sorted(p for p in (ROOT / "bench").glob("*.py") if p.name not in HELPERS)
    assert scripts
    running = {
        script.name: subprocess.Popen(
            [sys.executable, str(script), "--help"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script in scripts
    }
    failed = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        if process.returncode != 0 or "usage:" not in out:
            failed[name] = err.strip().splitlines()[-1:]
    assert failed == {}
