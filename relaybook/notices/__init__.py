"""Notices: what a valid notice is (:mod:`relaybook.notices.request`), its creation with
its fan-out, its release and its statistics (:mod:`relaybook.notices.store`), the notices
list (:mod:`relaybook.notices.listing`), and resends (:mod:`relaybook.notices.resends`:
which failures a scope retries, and the resend itself). Their SQL is ``queries.sql``."""
