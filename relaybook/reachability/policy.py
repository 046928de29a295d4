"""When an address has failed enough: the thresholds as configuration, decided by a pure
function of the counts. Counts come from ``address_events`` (each provider event once):
hard failures within the window; soft failures within the window *and* since the
address's last success (a delivery resets them). A complaint, a provider suppression
and an opt-out act at once."""

from __future__ import annotations

import dataclasses
import datetime as dt

from relaybook.reachability.classify import Kind, SmsCodes
from relaybook.reachability.settings import BounceSettings

#: verdicts acted on at once, and the rule they are recorded under
IMMEDIATE = {
    Kind.COMPLAINT: "complaint",
    Kind.PROVIDER_SUPPRESSED: "provider_suppressed",
    Kind.OPT_OUT: "opt_out",
}


@dataclasses.dataclass(frozen=True)
class Limit:
    threshold: int
    window: dt.timedelta

    @property
    def days(self) -> str:
        return f"{self.window / dt.timedelta(days=1):g}"


@dataclasses.dataclass(frozen=True)
class ChannelPolicy:
    hard: Limit
    soft: Limit


@dataclasses.dataclass(frozen=True)
class Policy:
    email: ChannelPolicy
    sms: ChannelPolicy
    sms_codes: SmsCodes = dataclasses.field(default_factory=SmsCodes)
    #: how long an unsubscribe for soft failures lasts (None: until lifted)
    soft_suppression: dt.timedelta | None = dt.timedelta(days=30)

    @classmethod
    def from_settings(cls, settings: BounceSettings) -> Policy:
        def channel(prefix: str) -> ChannelPolicy:
            def limit(kind: str) -> Limit:
                return Limit(
                    getattr(settings, f"bounce_{prefix}_{kind}_threshold"),
                    dt.timedelta(days=getattr(settings, f"bounce_{prefix}_{kind}_window_days")),
                )

            return ChannelPolicy(limit("hard"), limit("soft"))

        return cls(
            channel("email"),
            channel("sms"),
            SmsCodes(
                frozenset(settings.bounce_sms_permanent_codes),
                frozenset(settings.bounce_sms_transient_codes),
            ),
            dt.timedelta(days=settings.bounce_soft_suppression_days)
            if settings.bounce_soft_suppression_days
            else None,
        )

    def of(self, channel: str) -> ChannelPolicy:
        return self.email if channel == "email" else self.sms


def decide(policy: ChannelPolicy, hard: int, soft: int, last: str) -> tuple[str, str] | None:
    """``(rule, reason)`` if the counts reach a threshold, else None. ``last`` describes
    the failure that was counted last, for the reason."""
    if hard >= policy.hard.threshold:
        failures = "hard failure" if hard == 1 else "hard failures"
        return "hard_bounces", f"{hard} {failures} in {policy.hard.days} days (last: {last})"
    if soft >= policy.soft.threshold:
        return (
            "soft_bounces",
            f"{soft} soft failures since the last success, within {policy.soft.days} days "
            f"(last: {last})",
        )
    return None
