"""Who may lift which cause: a pure function of what the contact rule found
(``relaybook/reachability/queries.sql``) and of who asks.

- An owner's own opt-out (STOP, unsubscribe link, spam complaint at the address, or their
  "no" recorded with evidence) is lifted by the owner only: START from the number, or a
  change made on their behalf (``changed_by: owner``) with its evidence. Anyone else:
  ``409 owner_opted_out``, whatever their role.
- An automatic unsubscribe (the bounce policy's suppression of the address) is lifted by
  support only: ``403 support_only``.
- A manager's "no" is lifted by anyone who may change preferences.

Saying "yes" lifts every cause at once or none: a change that would leave the channel
off for a cause the caller may not lift is refused and changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

OWNER_OPTED_OUT = "owner_opted_out"
SUPPORT_ONLY = "support_only"


@dataclasses.dataclass(frozen=True)
class Causes:
    """What stands between a recipient and a channel, as the contact rule found it."""

    #: an owner's own opt-out of the address is active
    owner_block: bool
    #: an automatic suppression of the address applies to this recipient
    auto_block: bool
    #: the recipient's own preference: ``yes`` or ``no``, and who set it
    wants: str
    changed_by: str

    @property
    def owner_said_no(self) -> bool:
        return self.owner_block or (self.wants == "no" and self.changed_by == "owner")

    @property
    def automatic(self) -> bool:
        return self.auto_block or (self.wants == "no" and self.changed_by == "automatic")


@dataclasses.dataclass(frozen=True)
class Refusal:
    status: Literal[403, 409]
    code: str


def refusal(causes: Causes, wants: str, *, for_owner: bool, support: bool) -> Refusal | None:
    """Why the caller may not set ``wants`` on this channel (None: they may).

    ``for_owner``: the change is made on the owner's behalf, with evidence; ``support``:
    the caller has the support scope."""
    if wants != "yes":
        return None
    if causes.owner_said_no and not for_owner:
        return Refusal(409, OWNER_OPTED_OUT)
    if causes.automatic and not support:
        return Refusal(403, SUPPORT_ONLY)
    return None


def author(causes: Causes, wants: str, *, for_owner: bool) -> str:
    """Who a change is recorded as: the owner (through the caller), support bringing back
    an automatic unsubscribe, or a manager."""
    if for_owner:
        return "owner"
    if wants == "yes" and causes.automatic:
        return "support"
    return "manager"


def unchanged(causes: Causes, wants: str, *, for_owner: bool) -> bool:
    """A change that records nothing new: the recipient's preference says so already (an
    owner's own "no" is never rewritten as someone else's), and for "yes" nothing at the
    address needs lifting."""
    if causes.wants != wants:
        return False
    if wants == "no":
        return not for_owner or causes.changed_by == "owner"
    return not (causes.owner_block or causes.auto_block)
