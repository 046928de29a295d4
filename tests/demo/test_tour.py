"""The tour is the broadest end-to-end test: with a part of the pipeline missing it must
fail, naming the step that noticed."""

from __future__ import annotations

from typing import Any

import pytest

import demo.tour
from relaybook.settings import Settings
from relaybook.system import System


class WithoutTracker(System):
    def __init__(self, settings: Settings, only: set[str] | None = None) -> None:
        super().__init__(
            settings, only={"sandbox", "worker", "dispatcher", "ingest", "bounce-policy"}
        )
        del only


async def test_without_the_tracker_the_tour_fails_at_the_first_wait_and_says_so(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setattr(demo.tour, "System", WithoutTracker)
    monkeypatch.setattr(demo.tour, "WITHIN_S", 4.0)

    code = await demo.tour.run_demo(settings, data_dir=None, as_json=False)

    assert code == 1
    out, err = capsys.readouterr()
    assert "[FAIL] messages reach their final state" in out
    assert "step 'messages reach their final state' failed: timed out after 4 s" in err
    assert "[ok  ] stop cleanly" in out  # and everything it started is stopped all the same
