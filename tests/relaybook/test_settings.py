"""Settings: typed, validated at start-up, one clear line naming the variable at fault."""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from provider_sandbox.settings import SandboxSettings
from relaybook.platform.settings import PlatformSettings, SettingsError, environment, section
from relaybook.reachability.classify import SMS_PERMANENT, SMS_TRANSIENT
from relaybook.reachability.policy import Policy
from relaybook.reachability.settings import BounceSettings
from relaybook.tooling.settings import Settings, documented, load


def p256_public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return base64.b64encode(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).decode()


def test_defaults_are_the_contracts_when_nothing_is_set() -> None:
    settings = load({})
    assert (settings.api_port, settings.ingest_port, settings.sandbox_port) == (8000, 8001, 8025)
    assert settings.data_dir == Path(".relaybook")
    assert settings.sendgrid_webhook_tolerance_s == 300
    assert settings.topic_prefix == "relaybook."
    assert settings.kafka_enable_idempotence is False
    assert settings.uses_embedded_postgres
    assert settings.uses_embedded_broker
    assert settings.webhook_base_url == "http://127.0.0.1:8001"
    assert settings.topic("send-jobs") == "relaybook.send-jobs"


def test_values_are_parsed_into_their_types() -> None:
    keys = [p256_public_key(), p256_public_key()]
    settings = load(
        {
            "RELAYBOOK_DATABASE_URL": "postgresql://u:p@db:5432/relaybook",
            "RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9092",
            "RELAYBOOK_API_PORT": "9000",
            "RELAYBOOK_INGEST_PORT": "9001",
            "RELAYBOOK_KAFKA_ENABLE_IDEMPOTENCE": "true",
            "RELAYBOOK_SENDGRID_WEBHOOK_PUBLIC_KEYS": ",".join(keys),
            "RELAYBOOK_SENDGRID_WEBHOOK_TOLERANCE_S": "60",
            "RELAYBOOK_PUBLIC_WEBHOOK_BASE_URL": "https://hooks.example.org/relay/",
            "RELAYBOOK_DATA_DIR": "/var/lib/relaybook",
        }
    )
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.api_port == 9000
    assert settings.kafka_enable_idempotence is True
    assert settings.sendgrid_webhook_public_keys == tuple(keys)
    assert settings.sendgrid_webhook_tolerance_s == 60.0
    assert settings.webhook_base_url == "https://hooks.example.org/relay"
    assert settings.data_dir == Path("/var/lib/relaybook")
    assert not settings.uses_embedded_postgres


def test_the_public_url_says_whether_browsers_come_over_https() -> None:
    """Unset or http: cookies are Secure only for a request that came over https (as
    the trusted proxies say); https: always, and the API sends HSTS."""
    assert load({}).public_url is None
    assert not load({}).https
    assert not load({"RELAYBOOK_PUBLIC_URL": "http://relaybook.example.org"}).https
    behind_tls = load({"RELAYBOOK_PUBLIC_URL": "https://relaybook.example.org/"})
    assert behind_tls.public_url == "https://relaybook.example.org"
    assert behind_tls.https


def test_the_proxies_trusted_for_forwarded_headers_are_addresses_or_networks() -> None:
    assert load({}).forwarded_allow_ips == ("127.0.0.1", "::1"), "uvicorn's own default"
    assert load(
        {"RELAYBOOK_FORWARDED_ALLOW_IPS": " 10.0.0.0/8, 192.0.2.7,fd00::/8 "}
    ).forwarded_allow_ips == ("10.0.0.0/8", "192.0.2.7", "fd00::/8")
    assert load({"RELAYBOOK_FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == ("*",)


def test_an_empty_variable_counts_as_unset() -> None:
    assert load({"RELAYBOOK_API_PORT": "", "RELAYBOOK_DATABASE_URL": "  "}) == load({})


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("RELAYBOOK_API_PORT", "eighty", "RELAYBOOK_API_PORT='eighty': must be an integer"),
        ("RELAYBOOK_INGEST_PORT", "70000", "RELAYBOOK_INGEST_PORT='70000': must be a TCP port"),
        (
            "RELAYBOOK_DATABASE_URL",
            "mysql://x",
            "RELAYBOOK_DATABASE_URL=(hidden): must be a postgresql",
        ),
        (
            "RELAYBOOK_DATABASE_URL",
            "postgresql://relay:s3cr/et@db:5432/relaybook",
            "RELAYBOOK_DATABASE_URL=(hidden): its port is not a number from 1 to 65535",
        ),
        (  # the password's start, all digits, reads as a port: its end as the database
            "RELAYBOOK_DATABASE_URL",
            "postgresql://relay:5150/7734@db:5432/relaybook",
            "RELAYBOOK_DATABASE_URL=(hidden): its host part ends before its '@'",
        ),
        (
            "RELAYBOOK_DATABASE_URL",
            "postgresql://relay:5150?7734@db:5432/relaybook",
            "RELAYBOOK_DATABASE_URL=(hidden): its host part ends before its '@'",
        ),
        (
            "RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS",
            "kafka",
            "RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS='kafka': 'kafka' is not host:port",
        ),
        ("RELAYBOOK_KAFKA_ENABLE_IDEMPOTENCE", "maybe", "must be true or false"),
        (
            "RELAYBOOK_KAFKA_PARTITIONS",
            "0",
            "RELAYBOOK_KAFKA_PARTITIONS='0': must be a positive integer",
        ),
        ("RELAYBOOK_SENDGRID_BASE_URL", "api.sendgrid.com", "must be an http:// or https:// URL"),
        (
            "RELAYBOOK_SENDGRID_WEBHOOK_PUBLIC_KEYS",
            "bm90IGEga2V5",
            "key 1 is not a base64 DER public key",
        ),
        ("RELAYBOOK_SENDGRID_WEBHOOK_PUBLIC_KEYS", "%%%", "key 1 is not a base64 DER public key"),
        ("RELAYBOOK_SENDGRID_WEBHOOK_TOLERANCE_S", "-5", "must be a positive number of seconds"),
        ("RELAYBOOK_LOG_FORMAT", "xml", "must be auto, json or console"),
        ("RELAYBOOK_SANDBOX_DUPLICATE_RATE", "1.5", "must be a number between 0 and 1"),
        ("RELAYBOOK_SANDBOX_RATE_LIMIT", "-1", "must be 0 or more"),
        ("RELAYBOOK_TWILIO_RATE_LIMIT", "fast", "must be a number, 0 or more"),
        ("RELAYBOOK_PROVIDER_TIMEOUT_S", "0", "must be a positive number of seconds"),
        ("RELAYBOOK_SANDBOX_SIGNING_KEY", "bm9wZQ==", "is not a base64 DER private key"),
        ("RELAYBOOK_PUBLIC_URL", "relaybook.example.org", "must be an http:// or https:// URL"),
        (
            "RELAYBOOK_FORWARDED_ALLOW_IPS",
            "10.0.0.0/8, proxy.internal",
            "RELAYBOOK_FORWARDED_ALLOW_IPS='10.0.0.0/8, proxy.internal': 'proxy.internal' is "
            "not an IP address nor a network",
        ),
        ("RELAYBOOK_FORWARDED_ALLOW_IPS", "10.0.0.0/33", "'10.0.0.0/33' is not an IP address"),
        ("RELAYBOOK_FORWARDED_ALLOW_IPS", "*, 10.0.0.1", "'*' trusts every address: alone"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load({variable: value})
    message = str(raised.value)
    assert expected in message
    assert message.startswith(variable)
    assert "\n" not in message


def test_a_key_on_another_curve_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = base64.b64encode(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(SettingsError, match="key 1 is not an ECDSA P-256 public key"):
        load({"RELAYBOOK_SENDGRID_WEBHOOK_PUBLIC_KEYS": der.decode()})


@pytest.mark.parametrize(
    "url",
    [
        # libpq's list of hosts to fail over, which asyncpg reads too
        "postgresql://relay:s3cret@db1:5432,db2:5432/relaybook",
        # an '@' in the query's values, and a password percent-encoded
        "postgresql:///relaybook?host=/run/postgresql&user=ops@example",
        "postgresql://relay:5150%2F7734@db:5432/relaybook",
    ],
)
def test_a_database_url_may_name_several_hosts_or_a_user_in_its_query(url: str) -> None:
    assert load({"RELAYBOOK_DATABASE_URL": url}).database_url == url


def test_a_secret_never_appears_in_an_error() -> None:
    with pytest.raises(SettingsError) as raised:
        load({"RELAYBOOK_DATABASE_URL": "mysql://admin:hunter2@db/x"})
    assert "hunter2" not in str(raised.value)


def test_a_misspelt_variable_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(
        SettingsError,
        match=r"RELAYBOOK_API_PROT is not a relaybook setting "
        r"\(did you mean RELAYBOOK_API_PORT\?\)",
    ):
        load({"RELAYBOOK_API_PROT": "9000"})


def test_two_services_on_one_port_are_refused() -> None:
    with pytest.raises(
        SettingsError, match="RELAYBOOK_INGEST_PORT=8000: the same port as RELAYBOOK_API_PORT"
    ):
        load({"RELAYBOOK_INGEST_PORT": "8000"})


def test_describe_masks_secrets() -> None:
    shown = load(
        {"RELAYBOOK_ADMIN_TOKEN": "s3cret-token", "RELAYBOOK_TWILIO_AUTH_TOKEN": "tw-secret"}
    ).describe()
    assert shown["RELAYBOOK_ADMIN_TOKEN"] == "(set)"
    assert shown["RELAYBOOK_TWILIO_AUTH_TOKEN"] == "(set)"
    assert shown["RELAYBOOK_DATABASE_URL"] == "(unset)"
    assert "s3cret-token" not in repr(shown)


def test_every_setting_is_documented() -> None:
    rows = documented()
    assert {row.variable for row in rows} == set(Settings().describe())
    assert all(row.meaning for row in rows)


def test_each_setting_is_declared_beside_the_package_that_reads_it() -> None:
    owners = {row.variable: row.owner for row in documented()}
    assert owners["RELAYBOOK_DATABASE_URL"] == "relaybook.platform"
    assert owners["RELAYBOOK_BOUNCE_SMS_PERMANENT_CODES"] == "relaybook.reachability"
    assert owners["RELAYBOOK_TWILIO_AUTH_TOKEN"] == "relaybook.sending"
    assert owners["RELAYBOOK_SEND_MAX_ATTEMPTS"] == "send_worker"
    assert owners["RELAYBOOK_INGEST_MAX_BODY_BYTES"] == "webhook_ingest"
    assert owners["RELAYBOOK_SANDBOX_SEED"] == "provider_sandbox"
    assert owners["RELAYBOOK_TRACKER_LANES"] == "tracker"
    assert owners["RELAYBOOK_BOUNCE_POLICY_PORT"] == "bounce_policy"
    assert owners["RELAYBOOK_EMBEDDED_BROKER"] == "relaybook.tooling"
    assert owners["RELAYBOOK_API_PORT"] == "dispatcher"
    assert owners["RELAYBOOK_CONSOLE_SESSION_IDLE_MINUTES"] == "relaybook.access"
    assert owners["RELAYBOOK_CONSOLE_SESSION_LIFETIME_HOURS"] == "relaybook.access"
    platform = {field.name for field in dataclasses.fields(PlatformSettings)}
    assert not {name for name in platform if name.startswith(("bounce_", "sandbox_", "twilio_"))}


def test_the_twilio_codes_have_one_default_which_the_classification_uses() -> None:
    assert frozenset(BounceSettings().bounce_sms_permanent_codes) == SMS_PERMANENT
    assert frozenset(BounceSettings().bounce_sms_transient_codes) == SMS_TRANSIENT
    assert Policy.from_settings(load({})) == Policy.from_settings(BounceSettings())


def test_an_app_sees_its_own_settings_in_the_whole_and_is_told_when_they_are_missing() -> None:
    settings: PlatformSettings = load({"RELAYBOOK_SANDBOX_SEED": "7"})
    assert section(settings, SandboxSettings).sandbox_seed == 7
    with pytest.raises(TypeError, match=r"PlatformSettings has no .*SandboxSettings"):
        section(PlatformSettings(), SandboxSettings)


def test_relaybook_settings_lists_every_setting_its_value_default_meaning_and_owner(
    tmp_path: Path,
) -> None:
    """The listing runs as an operator runs it, in the environment it describes."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAYBOOK_")}
    env |= {
        "RELAYBOOK_DATA_DIR": str(tmp_path),
        "RELAYBOOK_TRACKER_LANES": "5",
        "RELAYBOOK_TWILIO_AUTH_TOKEN": "tw-secret-token",
        "RELAYBOOK_DATABASE_URL": "postgresql://relay:hunter2@db:5432/relaybook",
        "RELAYBOOK_BOUNCE_SMS_PERMANENT_CODES": "30005,21211",
    }
    result = subprocess.run(
        [Path(sys.executable).parent / "relaybook", "settings"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "tw-secret-token" not in result.stdout
    assert "hunter2" not in result.stdout
    lines = {line.split()[0]: line.split(maxsplit=4) for line in result.stdout.splitlines()}
    assert lines.pop("VARIABLE") == ["VARIABLE", "VALUE", "DEFAULT", "PACKAGE", "MEANING"]
    assert set(lines) == {row.variable for row in documented()}
    assert lines["RELAYBOOK_TRACKER_LANES"] == [
        "RELAYBOOK_TRACKER_LANES",
        "5",
        "3",
        "tracker",
        "transactions a journal tracker runs at once on its batch, each on a database "
        "connection of its own: more of PostgreSQL's cores for a backlog",
    ]
    assert lines["RELAYBOOK_TWILIO_AUTH_TOKEN"][1:4] == ["(set)", "-", "relaybook.sending"]
    assert lines["RELAYBOOK_DATABASE_URL"][1:4] == ["(set)", "-", "relaybook.platform"]
    assert lines["RELAYBOOK_BOUNCE_SMS_PERMANENT_CODES"][1:4] == [
        "30005,21211",
        "30005,30006,21211,21614",
        "relaybook.reachability",
    ]
    assert lines["RELAYBOOK_SANDBOX_SIGNING_KEY"][1:4] == ["(unset)", "-", "provider_sandbox"]


def test_the_cli_stops_on_a_bad_setting_with_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "RELAYBOOK_API_PORT": "abc", "RELAYBOOK_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "relaybook.tooling.cli", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "relaybook: RELAYBOOK_API_PORT='abc': must be an integer"
    assert result.stdout == ""
    assert not (tmp_path / "postgres").exists(), "nothing may start on a bad setting"


def test_the_readmes_settings_table_lists_every_setting_with_its_default() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for row in documented():
        shown = f"`{row.default}`" if row.default else ""
        assert f"| `{row.variable}` | {shown} |" in readme, row.variable


def test_settings_as_variables_read_back_into_the_same_settings() -> None:
    configured = load(
        {
            "RELAYBOOK_DATABASE_URL": "postgresql://u:p@db:5432/relaybook",
            "RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "RELAYBOOK_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "RELAYBOOK_SANDBOX_WEBHOOKS": "false",
            "RELAYBOOK_WORKER_PORT": "9102",
            "RELAYBOOK_SMS_YIELD_S": "0.5",
        }
    )
    assert load(environment(configured)) == configured
    assert load(environment(load({}))) == load({})


def test_relaybook_help_names_the_settings_command() -> None:
    result = subprocess.run(
        [Path(sys.executable).parent / "relaybook", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    shown = " ".join(result.stdout.split())  # as wrapped for any terminal's width
    assert "settings list every setting: its value now (secrets masked)" in shown
    assert "`relaybook settings` lists them" in shown
