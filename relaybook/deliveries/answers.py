"""A delivery's channel and status as answers name them (the journal's, a notice's)."""

from __future__ import annotations

from typing import Literal

Channel = Literal["email", "sms"]
DeliveryStatus = Literal["queued", "sent", "delivered", "opened", "clicked", "failed", "skipped"]
