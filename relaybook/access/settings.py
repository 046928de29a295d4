"""The console's sessions (:mod:`relaybook.access.sessions`): how long one lasts idle, and
at most."""

from __future__ import annotations

import dataclasses
import datetime as dt

from relaybook.platform.settings import _positive_int, _setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccessSettings:
    console_session_idle_minutes: int = _setting(
        _positive_int, 30, doc="a console session ends after this many minutes without a request"
    )
    console_session_lifetime_hours: int = _setting(
        _positive_int,
        12,
        doc="...and this many hours after signing in, whatever happens (sign in again)",
    )

    @property
    def session_idle(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.console_session_idle_minutes)

    @property
    def session_lifetime(self) -> dt.timedelta:
        return dt.timedelta(hours=self.console_session_lifetime_hours)
