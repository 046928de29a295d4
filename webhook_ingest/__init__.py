"""Webhook ingest: verifies the providers' signed webhooks and turns them into canonical
``delivery-event`` messages (``relaybook ingest``)."""
