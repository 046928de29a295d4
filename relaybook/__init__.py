"""Shared plumbing of relaybook's deployables: settings, database, Kafka, logging, embedded
servers, HTTP and the command line. Nothing domain-specific lives here."""

__version__ = "0.1.0"
