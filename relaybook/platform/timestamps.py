"""How relaybook writes a moment in its messages and answers: ISO 8601 in UTC with a
``Z`` (``2026-11-22T10:00:00.123456Z``)."""

from __future__ import annotations

import datetime as dt


def iso(moment: dt.datetime) -> str:
    """``moment`` (aware, in UTC) as relaybook writes it."""
    return moment.isoformat().replace("+00:00", "Z")


def iso_or_none(value: dt.datetime | None) -> str | None:
    """A timestamp column as the API shows it (None stays None)."""
    return iso(value) if value is not None else None


def now_iso() -> str:
    return iso(dt.datetime.now(dt.UTC))
