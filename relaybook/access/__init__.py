"""Access: who may call relaybook and what they may see.

API tokens and the admin token (:mod:`relaybook.access.auth`), the console's people and
their roles (:mod:`relaybook.access.people`), both answering a
:class:`~relaybook.access.auth.Caller`; the agency scoping every query of a request goes
through (:mod:`relaybook.access.scope`); the console's sessions and its sign-in throttle
(:mod:`relaybook.access.sessions`, :mod:`relaybook.access.throttle`). Their SQL:
``queries.sql`` (tokens, people) and ``sessions.sql`` (sessions, throttle).
"""
