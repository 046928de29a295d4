"""Reachability: whether a recipient may be contacted on a channel now, and if not why;
who may change that; and the bounce policy that unsubscribes failing addresses.

The rule itself is SQL (``queries.sql``, the ``contact`` fragment), included by every
query that shows or obeys it; :mod:`relaybook.reachability.authority` says who may lift
which cause. An owner's own opt-out (STOP, unsubscribe link, spam complaint, or their "no"
recorded with evidence) is lifted by the owner only; an automatic unsubscribe (the
bounce policy's) by support only; anyone who may change preferences lifts a manager's.
"""


def address_key(channel: str, address: str) -> str:
    """An address as suppressions and failure counts key it: emails are case-insensitive."""
    return address.strip().lower() if channel == "email" else address.strip()
