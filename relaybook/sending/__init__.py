"""Sending: what the providers (SendGrid, Twilio) are to relaybook, as every app that
talks to them or stands in for them sees it: their credentials, their API's base URLs,
and the URL they post their webhooks to (:mod:`relaybook.sending.settings`)."""
