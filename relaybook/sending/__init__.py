"""Sending: what the providers (SendGrid, Twilio) are to relaybook, as every app that
talks to them or stands in for them sees it: their credentials, their API's base URLs,
and the URL they post their webhooks to (:mod:`relaybook.sending.settings`).

Its own table, ``send_attempts``: each attempt to hand a delivery to its provider,
numbered and recorded before the call (``queries.sql``: ``start_attempts``, the one
statement that writes it)."""
