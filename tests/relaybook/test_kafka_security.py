"""Reaching a secured Kafka: the security settings are checked together at start-up, and
one function turns them into the arguments of every client."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from relaybook.platform.kafka import client_options
from relaybook.platform.settings import SettingsError
from relaybook.tooling.settings import load
from tests.relaybook.certificates import Authority

SERVERS = {"RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS": "k1:9093"}
SASL = {
    "RELAYBOOK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "RELAYBOOK_KAFKA_SASL_MECHANISM": "scram-sha-512",
    "RELAYBOOK_KAFKA_SASL_USERNAME": "relaybook",
    "RELAYBOOK_KAFKA_SASL_PASSWORD": "s3cret-pw",
}


def test_plaintext_is_the_default_and_adds_nothing_but_the_servers() -> None:
    options = client_options(load(SERVERS))
    assert options == {"bootstrap_servers": "k1:9093", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_gives_the_mechanism_the_credentials_and_a_verifying_tls_context(
    tmp_path: Path,
) -> None:
    cert_file, key_file = Authority("relaybook test CA").issue(tmp_path, "client")
    settings = load(
        SERVERS
        | SASL
        | {
            "RELAYBOOK_KAFKA_SSL_CA_FILE": str(cert_file),
            "RELAYBOOK_KAFKA_SSL_CERT_FILE": str(cert_file),
            "RELAYBOOK_KAFKA_SSL_KEY_FILE": str(key_file),
        }
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"  # spelt as Kafka spells it
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "relaybook",
        "s3cret-pw",
    )
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert client_options(settings)["ssl_context"] is context, "loaded once per process"


def test_ssl_without_files_trusts_the_systems_authorities() -> None:
    options = client_options(load(SERVERS | {"RELAYBOOK_KAFKA_SECURITY_PROTOCOL": "ssl"}))
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert "sasl_mechanism" not in options


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"RELAYBOOK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "RELAYBOOK_KAFKA_SECURITY_PROTOCOL=SASL_SSL, set RELAYBOOK_KAFKA_SASL_MECHANISM "
            "and RELAYBOOK_KAFKA_SASL_USERNAME and RELAYBOOK_KAFKA_SASL_PASSWORD too",
        ),
        (
            SASL | {"RELAYBOOK_KAFKA_SASL_USERNAME": ""},
            "RELAYBOOK_KAFKA_SECURITY_PROTOCOL=SASL_SSL, set RELAYBOOK_KAFKA_SASL_USERNAME too",
        ),
        (
            {"RELAYBOOK_KAFKA_SASL_USERNAME": "relaybook"},
            "RELAYBOOK_KAFKA_SASL_USERNAME is set but unused with "
            "RELAYBOOK_KAFKA_SECURITY_PROTOCOL=PLAINTEXT (use SASL_PLAINTEXT or SASL_SSL)",
        ),
        (
            {"RELAYBOOK_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "RELAYBOOK_KAFKA_SECURITY_PROTOCOL='TLS': must be PLAINTEXT, SSL, SASL_PLAINTEXT "
            "or SASL_SSL",
        ),
        (
            SASL | {"RELAYBOOK_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "RELAYBOOK_KAFKA_SASL_MECHANISM='GSSAPI': must be PLAIN, SCRAM-SHA-256 or "
            "SCRAM-SHA-512",
        ),
        (
            {"RELAYBOOK_KAFKA_SECURITY_PROTOCOL": "SSL", "RELAYBOOK_KAFKA_SSL_CA_FILE": "/no/ca"},
            "RELAYBOOK_KAFKA_SSL_CA_FILE='/no/ca': is not a file that exists",
        ),
    ],
)
def test_security_settings_that_cannot_work_stop_start_up_with_one_line(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load(SERVERS | environ)
    assert str(raised.value).endswith(message), str(raised.value)
    assert "s3cret-pw" not in str(raised.value)


def test_tls_files_set_with_a_protocol_that_ignores_them_are_refused(tmp_path: Path) -> None:
    cert_file, key_file = Authority("relaybook test CA").issue(tmp_path, "client")
    with pytest.raises(SettingsError, match="RELAYBOOK_KAFKA_SSL_CA_FILE is set but unused"):
        load(SERVERS | {"RELAYBOOK_KAFKA_SSL_CA_FILE": str(cert_file)})
    with pytest.raises(SettingsError, match="KEY_FILE is set without RELAYBOOK_KAFKA_SSL_CERT"):
        load(
            SERVERS
            | {
                "RELAYBOOK_KAFKA_SECURITY_PROTOCOL": "SSL",
                "RELAYBOOK_KAFKA_SSL_KEY_FILE": str(key_file),
            }
        )


def test_a_secured_protocol_needs_configured_servers_not_the_embedded_broker() -> None:
    with pytest.raises(SettingsError, match="the embedded brokers listen in plain text"):
        load({"RELAYBOOK_KAFKA_SECURITY_PROTOCOL": "SSL"})


def test_tls_files_that_are_not_pem_give_one_line_when_the_clients_are_built(
    tmp_path: Path,
) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    settings = load(
        SERVERS
        | {"RELAYBOOK_KAFKA_SECURITY_PROTOCOL": "SSL", "RELAYBOOK_KAFKA_SSL_CA_FILE": str(garbage)}
    )
    with pytest.raises(SettingsError, match=r"the Kafka TLS files \(.*ca.pem\) cannot be loaded"):
        client_options(settings)


def test_the_sasl_password_is_never_shown() -> None:
    settings = load(SERVERS | SASL)
    assert settings.describe()["RELAYBOOK_KAFKA_SASL_PASSWORD"] == "(set)"
    assert "s3cret-pw" not in repr(settings)


def test_up_on_embedded_kafka_without_java_says_so_in_one_line_and_exits_2(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOOK_")}
    env |= {
        "PATH": str(tmp_path / "empty-bin"),  # no java, no mvn
        "RELAYBOOK_EMBEDDED_BROKER": "kafka",
        "RELAYBOOK_DATA_DIR": str(tmp_path / "data"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "relaybook.tooling.cli", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "relaybook: RELAYBOOK_EMBEDDED_BROKER=kafka needs Java 17 or later (no java on the "
        "PATH); install a JDK, or use RELAYBOOK_EMBEDDED_BROKER=tansu"
    )
    assert not (tmp_path / "data" / "postgres").exists(), "nothing may start without Java"
