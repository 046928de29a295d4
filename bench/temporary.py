"""The benchmarks' temporary directories: a run's servers and data (gigabytes after
100,000 events a level) removed when the script ends, kept (their path printed) when it
failed, for their logs."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType

_failed = False


def directory(prefix: str) -> Path:
    """A new temporary directory, removed at exit unless the script failed."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    sys.excepthook = _note_failure  # called before the exit handlers, on a failure
    atexit.register(_remove, path)
    return path


def _note_failure(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    global _failed  # noqa: PLW0603 - one flag for the process's one exit
    _failed = True
    sys.__excepthook__(kind, error, trace)


def _remove(path: Path) -> None:
    if _failed:
        print(f"kept for its logs: {path}", file=sys.stderr)
    else:
        shutil.rmtree(path, ignore_errors=True)
