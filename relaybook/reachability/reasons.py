"""Why a message is not sent to a recipient on a channel: the reason codes of the contact
rule (``queries.sql``, the ``contact`` fragment's ``skip_reason``), defined once here.

They are machine codes: the API answers them as they are (a delivery's ``reason``, a
resend's left-out messages), and whoever shows them to a person labels them from this
list (the console: ``console/i18n.py``, ``REASONS``, with their French in its message
catalogue). A test checks that the codes the SQL writes are these.

The refusals of a preferences change (who may lift which cause) are
:mod:`relaybook.reachability.authority`'s ``OWNER_OPTED_OUT`` and ``SUPPORT_ONLY``.
"""

from __future__ import annotations

from typing import Final

#: the recipient has no address on the channel
NO_ADDRESS: Final = "no_address"
#: the owner opted out (STOP, unsubscribe link, spam complaint) or a person said no
OPTED_OUT: Final = "opted_out"
#: the bounce policy unsubscribed the address (hard or soft failures, the provider's list)
AUTO_UNSUBSCRIBED: Final = "auto_unsubscribed"
#: the rule of earlier versions for a suppressed address, before the cause was told
#: apart: no statement writes it any more, messages skipped then still carry it
SUPPRESSED: Final = "suppressed"

#: every reason a message is not sent, in the order the contact rule tells them apart
SKIP_REASONS: Final = (NO_ADDRESS, OPTED_OUT, AUTO_UNSUBSCRIBED, SUPPRESSED)
