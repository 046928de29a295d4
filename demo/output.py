"""How the tour speaks: one line per step (``[ok  ]`` / ``[FAIL]``), small tables under
some steps, a progress bar while messages move (on a terminal only), and with ``--json``
nothing but the report at the end."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass
class Step:
    name: str
    ok: bool
    detail: str
    seconds: float
    data: Any = None


class DemoStepError(Exception):
    """A step did not behave; the message says which and how."""


class Tour:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.steps: list[Step] = []
        self.terminal = sys.stdout.isatty() and not as_json

    def record(self, name: str, ok: bool, detail: str, started: float, data: Any = None) -> None:
        """Prints the step's line; raises :class:`DemoStepError` if it did not behave."""
        step = Step(name, ok, detail, round(time.monotonic() - started, 2), data)
        self.steps.append(step)
        self.clear_progress()
        self.say(f"[{'ok  ' if ok else 'FAIL'}] {name:46} {detail}  ({step.seconds:.2f} s)")
        if not ok:
            raise DemoStepError(f"step '{name}' failed: {detail}")

    def say(self, text: str = "") -> None:
        if not self.as_json:
            print(text, flush=True)

    def heading(self, text: str) -> None:
        self.say(f"\n== {text}")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: int = 7) -> None:
        if self.as_json:
            return
        cells = [[str(h) for h in headers]] + [
            ["" if c is None else str(c) for c in r] for r in rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        pad = " " * indent
        for index, row in enumerate(cells):
            print(pad + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if index == 0:
                print(pad + "  ".join("-" * w for w in widths))

    def progress(self, label: str, done: int, total: int, detail: str) -> None:
        """A bar redrawn in place, on a terminal only."""
        if not self.terminal or total <= 0:
            return
        width = 30
        filled = round(width * done / total)
        bar = "█" * filled + "░" * (width - filled)
        print(f"\r       {label:6} {bar} {done}/{total} {detail}\033[K", end="", flush=True)

    def clear_progress(self) -> None:
        if self.terminal:
            print("\r\033[K", end="", flush=True)

    def report(self, ok: bool, error: str | None, total: float) -> dict[str, Any]:
        return {
            "ok": ok,
            "error": error,
            "seconds": round(total, 2),
            "steps": [dataclasses.asdict(step) for step in self.steps],
        }
