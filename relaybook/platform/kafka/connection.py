"""Reaching the cluster: the client options every producer, consumer and admin client is
built with (TLS, SASL), a check that says in one line why a bootstrap server refuses, and
the errors the platform raises when the broker is away."""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Sequence
from typing import Any

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from relaybook.platform import faults
from relaybook.platform.kafka.contracts import Headers
from relaybook.platform.settings import PlatformSettings, SettingsError


class BrokerError(faults.UnavailableError):
    """The broker cannot be reached or refused a request."""


class UnacknowledgedError(BrokerError):
    """Some records of a publication were not acknowledged: ``records`` are those, in
    their order (the others were)."""

    def __init__(self, message: str, records: Sequence[tuple[str | None, bytes, Headers]]) -> None:
        super().__init__(message)
        self.records = records


#: a record's headers (aiokafka's record builder takes a list only; never changed once made)


def client_options(settings: PlatformSettings) -> dict[str, Any]:
    """Where the cluster is and how to reach it: the keyword arguments every aiokafka
    producer, consumer and admin client of relaybook is built with, so that a secured
    cluster is reached by all of them or by none.

    Raises :class:`SettingsError` (one line) when the TLS files cannot be loaded."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = _ssl_context(
            settings.kafka_ssl_ca_file, settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file
        )
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


@functools.cache
def _ssl_context(
    ca_file: os.PathLike[str] | None,
    cert_file: os.PathLike[str] | None,
    key_file: os.PathLike[str] | None,
) -> ssl.SSLContext:
    # One context per process and files: loading them for every client costs a few ms each.
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=ca_file,
            certfile=cert_file,
            keyfile=key_file,
            # an encrypted key fails here instead of OpenSSL prompting on the terminal
            password=_no_passphrase,
        )
    except (ssl.SSLError, OSError) as error:
        files = ", ".join(str(path) for path in (ca_file, cert_file, key_file) if path)
        raise SettingsError(f"the Kafka TLS files ({files}) cannot be loaded: {error}") from None
    return context


def _no_passphrase() -> str:
    return ""


async def check_reachable(settings: PlatformSettings) -> None:
    """Returns once a bootstrap server answers a metadata request over relaybook's
    security settings; else raises :class:`BrokerError` saying why, in one line: the SASL
    credentials refused, the broker's certificate not trusted, or the server away.

    aiokafka's clients only log why they cannot bootstrap, and then raise "Unable to
    bootstrap": a process checks this first so that start-up stops with the reason."""
    options = client_options(settings)
    del options["bootstrap_servers"]
    problems = []
    for host, port, _ in collect_hosts(settings.kafka_bootstrap_servers or ""):
        try:
            connection = await create_conn(host, port, request_timeout_ms=10_000, **options)
        except (KafkaError, OSError, TimeoutError) as error:
            problems.append(_refusal(settings, f"{host}:{port}", error))
            continue
        try:
            # a broker that wants a client certificate closes the connection only now
            await connection.send(MetadataRequest([]))
        except (KafkaError, OSError, TimeoutError) as error:
            problems.append(_refusal(settings, f"{host}:{port}", error))
            continue
        finally:
            connection.close()
        return
    # every server's reason: they may differ (one away, another refusing the password)
    raise BrokerError("; ".join(problems) or "no bootstrap server")


def _refusal(settings: PlatformSettings, server: str, error: BaseException) -> str:
    """What an operator needs to hear of a failed connection to ``server``."""
    if isinstance(error, SaslAuthenticationFailed):
        return (
            f"Kafka at {server} refused the SASL credentials of user "
            f"{settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism}): check "
            f"RELAYBOOK_KAFKA_SASL_USERNAME and RELAYBOOK_KAFKA_SASL_PASSWORD ({error})"
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        trusted = (
            f"RELAYBOOK_KAFKA_SSL_CA_FILE={settings.kafka_ssl_ca_file}"
            if settings.kafka_ssl_ca_file is not None
            else "the system's authorities (RELAYBOOK_KAFKA_SSL_CA_FILE is not set)"
        )
        return (
            f"the TLS certificate of Kafka at {server} is not trusted by {trusted}: "
            f"{error.verify_message}"
        )
    said = str(error) if isinstance(error, KafkaError) else f"{type(error).__name__}: {error}"
    if isinstance(error, TimeoutError):
        said = "no answer within 10 s"
    return f"cannot reach Kafka at {server}: {said}"
