"""The webhook ingest deployable (port ``RELAYBOOK_INGEST_PORT``)."""

from __future__ import annotations

from relaybook.deployable import Deployable
from relaybook.http import create_app
from relaybook.runtime import Infrastructure


def build(infra: Infrastructure) -> Deployable:
    """Webhook ingest. So far: health, readiness (broker) and metrics; the provider routes
    come with their issue. Ingest needs only the broker: it is ready without the database."""
    return Deployable(app=create_app("ingest", routes=[], checks={"broker": infra.check_broker}))
