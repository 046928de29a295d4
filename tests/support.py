"""Helpers shared by the tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

#: the admin token of the in-process system fixture
ADMIN = "test-admin-token"


def notice(count: int = 3, **changes: Any) -> dict[str, Any]:
    """A deposit call to ``count`` owners with email and phone, sent now."""
    body: dict[str, Any] = {
        "source": {"service": "accounting", "kind": "deposit_call", "reference": "DC-2026-Q4"},
        "title": "Deposit call Q4 2026",
        "email": {"subject": "Deposit call Q4", "text": "Pay at https://portal.example.org/dc"},
        "sms": {"text": "Your Q4 deposit call is available on the portal."},
        "recipients": [
            {
                "id": f"owner-{i}",
                "name": f"Owner {i}",
                "email": f"owner{i}@example.org",
                "phone": f"+3361{i:07d}",
            }
            for i in range(count)
        ],
        "send": True,
    }
    body.update(changes)
    return body


async def until(condition: Callable[[], Any], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
