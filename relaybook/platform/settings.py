"""One typed settings object per process, read from ``RELAYBOOK_*`` environment variables.

Every value is validated when :func:`load` runs, so a bad setting stops start-up with a
single line naming the variable (:class:`SettingsError`), never later with a traceback.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_der_private_key,
    load_der_public_key,
)

PREFIX = "RELAYBOOK_"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message is one line naming the variable."""


def _port(raw: str) -> int:
    value = _int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("must be a TCP port between 1 and 65535")
    return value


def _port_or_zero(raw: str) -> int:
    value = _int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port between 1 and 65535, or 0 for a free one")
    return value


def _int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError("must be an integer") from None


def _count(raw: str) -> int:
    value = _int(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _positive_int(raw: str) -> int:
    value = _int(raw)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _http_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return raw.strip().rstrip("/")


_UNENCODED = "(a '/', '?' or '#' in the password must be percent-encoded: %2F, %3F, %23)"


def _postgres_url(raw: str) -> str:
    url = raw.strip()
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError("must be a postgresql:// URL")
    # A '/', '?' or '#' left in the password ends the host part early: what follows it,
    # up to the '@', is read as the port, or (the password's start all digits, before a
    # '/') as a valid port, and its end as part of the database's name. Neither message
    # may quote it.
    if "," not in parts.netloc:  # several hosts (libpq's failover list): asyncpg reads them
        try:
            parts.port  # noqa: B018 - read to be checked: it raises if it is not a number
        except ValueError:
            raise ValueError(f"its port is not a number from 1 to 65535 {_UNENCODED}") from None
    after = url.partition("//")[2][len(parts.netloc) :]
    if "@" not in parts.netloc and re.match(r"[^=&]*@", after):
        raise ValueError(f"its host part ends before its '@' {_UNENCODED}")
    return url


def _bootstrap_servers(raw: str) -> str:
    servers = [part.strip() for part in raw.split(",") if part.strip()]
    if not servers:
        raise ValueError("must list at least one host:port")
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{server!r} is not host:port")
    return ",".join(servers)


def _choice(*allowed: str) -> Callable[[str], str]:
    """A parser accepting one of ``allowed`` (case-insensitive), returned as spelt there."""

    def parse(raw: str) -> str:
        by_upper = {value.upper(): value for value in allowed}
        value = by_upper.get(raw.strip().upper())
        if value is None:
            raise ValueError(f"must be {', '.join(allowed[:-1])} or {allowed[-1]}")
        return value

    return parse


def _kafka_nodes(raw: str) -> int:
    value = _int(raw)
    if value not in {1, 3}:
        raise ValueError("must be 1 or 3")
    return value


def _existing_file(raw: str) -> Path:
    path = Path(raw.strip()).expanduser()
    if not path.is_file():
        raise ValueError("is not a file that exists")
    return path


def _ipv4(raw: str) -> str:
    try:
        return str(ipaddress.IPv4Address(raw.strip()))
    except ValueError:
        raise ValueError("must be an IPv4 address: 127.0.0.1, or 0.0.0.0 for every one") from None


def _trusted_proxies(raw: str) -> tuple[str, ...]:
    """IP addresses and networks (CIDR), comma-separated; or ``*`` alone (every one)."""
    entries = tuple(part.strip() for part in raw.split(",") if part.strip())
    if "*" in entries:
        if entries != ("*",):
            raise ValueError("'*' trusts every address: alone, or list the proxies instead")
        return entries
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"{entry!r} is not an IP address nor a network (10.0.0.0/8); "
                "list the proxies' addresses, comma-separated"
            ) from None
    return entries


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _agency(raw: str) -> str:
    value = raw.strip()
    if not 1 <= len(value) <= 200 or any(c in value for c in "\x00\r\n"):
        raise ValueError("must be an agency id: 1 to 200 characters on one line")
    return value


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"auto", "json", "console"}:
        raise ValueError("must be auto, json or console")
    return value


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return value


def _public_keys(raw: str) -> tuple[str, ...]:
    """Base64 DER SubjectPublicKeyInfo keys, as SendGrid shows them; each must be P-256."""
    keys = tuple(part.strip() for part in raw.split(",") if part.strip())
    for index, key in enumerate(keys, start=1):
        try:
            loaded = load_der_public_key(base64.b64decode(key, validate=True))
        except (binascii.Error, ValueError):
            raise ValueError(f"key {index} is not a base64 DER public key") from None
        if not isinstance(loaded, ec.EllipticCurvePublicKey) or loaded.curve.name != "secp256r1":
            raise ValueError(f"key {index} is not an ECDSA P-256 public key")
    return keys


def _number(raw: str, low: float, high: float, meaning: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"must be {meaning}") from None
    if not low <= value <= high:
        raise ValueError(f"must be {meaning}")
    return value


def _rate(raw: str) -> float:
    return _number(raw, 0, 1, "a number between 0 and 1")


def _non_negative(raw: str) -> float:
    return _number(raw, 0, float("inf"), "a number, 0 or more")


def _float_seconds(raw: str) -> float:
    value = _number(raw, 0, float("inf"), "a positive number of seconds")
    if value == 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _private_key(raw: str) -> str:
    try:
        loaded = load_der_private_key(base64.b64decode(raw.strip(), validate=True), password=None)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("is not a base64 DER private key") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise ValueError("is not an ECDSA P-256 private key")
    return raw.strip()


def _float_days(raw: str) -> float:
    return _number(raw, 0.001, 3650, "a number of days between 0.001 and 3650")


def _codes(raw: str) -> tuple[str, ...]:
    codes = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not codes or not all(code.isdigit() for code in codes):
        raise ValueError("must be comma-separated numeric error codes")
    return codes


def _setting(
    parse: Callable[[str], Any], default: Any = None, *, secret: bool = False, doc: str = ""
) -> Any:
    # secrets are left out of the repr too, so a logged or printed Settings never shows one
    return dataclasses.field(
        default=default, repr=not secret, metadata={"parse": parse, "secret": secret, "doc": doc}
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a relaybook process is configured with. ``None`` means "not configured":
    for the database, the broker and the providers that selects the embedded defaults."""

    database_url: str | None = _setting(
        _postgres_url, secret=True, doc="PostgreSQL URL; unset: embedded PostgreSQL"
    )
    kafka_bootstrap_servers: str | None = _setting(
        _bootstrap_servers, doc="host:port,...; unset: embedded broker"
    )
    data_dir: Path = _setting(Path, Path(".relaybook"), doc="embedded data, keys, admin token")
    api_port: int = _setting(_port, 8000, doc="dispatcher API and dashboard")
    ingest_port: int = _setting(_port, 8001, doc="webhook ingest")
    sandbox_port: int = _setting(_port, 8025, doc="provider sandbox")
    worker_port: int = _setting(_port, 8002, doc="send workers' health, readiness and metrics")
    tracker_port: int = _setting(_port, 8003, doc="journal tracker's health, readiness and metrics")
    bounce_policy_port: int = _setting(
        _port, 8004, doc="bounce policy's health, readiness and metrics"
    )
    listen_address: str = _setting(
        _ipv4,
        "127.0.0.1",
        doc="address the HTTP ports listen on; 0.0.0.0 (every interface) in a container",
    )
    public_url: str | None = _setting(
        _http_url,
        doc="the API's and console's public base URL; https: session cookies always Secure"
        " and HSTS on every answer of the API",
    )
    forwarded_allow_ips: tuple[str, ...] = _setting(
        _trusted_proxies,
        ("127.0.0.1", "::1"),
        doc="proxies whose X-Forwarded-For and -Proto are believed: addresses or networks,"
        " comma-separated, * for any",
    )
    broker_port: int = _setting(_port_or_zero, 0, doc="embedded broker port; 0 picks a free one")
    admin_token: str | None = _setting(
        _text, secret=True, doc="API admin token; unset: generated and kept in the data dir"
    )
    topic_prefix: str = _setting(_text, "relaybook.", doc="prefix of every Kafka topic")
    default_agency: str = _setting(
        _agency,
        "default",
        doc="agency of notices that name none (token bound to several or none), and of "
        "the data from before agencies",
    )
    kafka_partitions: int = _setting(
        _positive_int, 6, doc="partitions of topics created at start-up"
    )
    kafka_replication_factor: int = _setting(
        _positive_int, 1, doc="replication factor of topics created at start-up"
    )
    kafka_enable_idempotence: bool = _setting(
        _bool, False, doc="idempotent producer; on for a real Kafka cluster"
    )
    kafka_security_protocol: str = _setting(
        _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        "PLAINTEXT",
        doc="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    )
    kafka_sasl_mechanism: str | None = _setting(
        _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        doc="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; needed with SASL_*",
    )
    kafka_sasl_username: str | None = _setting(_text, doc="SASL user; needed with SASL_*")
    kafka_sasl_password: str | None = _setting(
        _text, secret=True, doc="SASL password; needed with SASL_*"
    )
    kafka_ssl_ca_file: Path | None = _setting(
        _existing_file, doc="PEM CA bundle trusted for the brokers; unset: the system's"
    )
    kafka_ssl_cert_file: Path | None = _setting(
        _existing_file, doc="PEM client certificate (mutual TLS), key included or beside it"
    )
    kafka_ssl_key_file: Path | None = _setting(
        _existing_file, doc="PEM private key of the client certificate"
    )
    embedded_broker: str = _setting(
        _choice("tansu", "kafka"),
        "tansu",
        doc="embedded broker of `up`: tansu (in memory) or kafka (Apache Kafka, needs Java"
        " 17+ and Maven)",
    )
    embedded_kafka_nodes: int = _setting(
        _kafka_nodes, 1, doc="nodes of the embedded Apache Kafka: 1, or 3 (replication 3)"
    )
    kafka_session_timeout_ms: int | None = _setting(
        _positive_int,
        doc="consumer group session timeout; default 10000, 2000 on the embedded broker",
    )
    tracker_lanes: int = _setting(
        _positive_int,
        3,
        doc="transactions a journal tracker runs at once on its batch, each on a database "
        "connection of its own: more of PostgreSQL's cores for a backlog",
    )
    sendgrid_api_key: str | None = _setting(_text, secret=True, doc="SendGrid API key")
    sendgrid_base_url: str | None = _setting(_http_url, doc="SendGrid API base URL")
    sendgrid_webhook_public_keys: tuple[str, ...] = _setting(
        _public_keys, (), doc="base64 DER ECDSA keys, comma-separated (rotation)"
    )
    sendgrid_webhook_tolerance_s: float = _setting(
        _float_seconds, 300.0, doc="max age of a signed SendGrid webhook"
    )
    twilio_account_sid: str | None = _setting(_text, doc="Twilio account SID")
    twilio_auth_token: str | None = _setting(
        _text, secret=True, doc="Twilio auth token (signs webhooks too)"
    )
    twilio_base_url: str | None = _setting(_http_url, doc="Twilio API base URL")
    twilio_from: str | None = _setting(_text, doc="sender number or messaging service SID")
    public_webhook_base_url: str | None = _setting(
        _http_url, doc="URL providers call; default http://127.0.0.1:<INGEST_PORT>"
    )
    ingest_max_body_bytes: int = _setting(
        _positive_int, 4 * 1024 * 1024, doc="largest webhook body accepted (SendGrid: 768 KB)"
    )
    ingest_publish_timeout_s: float = _setting(
        _float_seconds, 5.0, doc="how long a webhook waits for the broker before a 503"
    )
    ingest_max_events_in_flight: int = _setting(
        _positive_int, 20_000, doc="events an ingest waits on the broker for; past it, 503"
    )
    email_from: str = _setting(_text, "notices@relaybook.test", doc="sender address of emails")
    email_from_name: str | None = _setting(_text, doc="sender name of emails")
    provider_timeout_s: float = _setting(
        _float_seconds, 10.0, doc="timeout of every call to SendGrid or Twilio"
    )
    sendgrid_concurrency: int = _setting(
        _positive_int, 4, doc="mail-send requests in flight per worker (1000 emails each)"
    )
    twilio_concurrency: int = _setting(_positive_int, 20, doc="SMS requests in flight per worker")
    sendgrid_rate_limit: float = _setting(
        _non_negative, 0.0, doc="mail-send requests per second per worker; 0: no limit"
    )
    twilio_rate_limit: float = _setting(
        _non_negative, 0.0, doc="SMS per second per worker; 0: no limit"
    )
    sms_yield_s: float = _setting(
        _non_negative,
        5.0,
        doc="texts wait up to this long while the same worker sends emails (1000 to a"
        " request, they are done sooner); 0: side by side",
    )
    send_max_attempts: int = _setting(
        _positive_int, 8, doc="tries of a send that meets transient errors before it fails"
    )
    unknown_outcome_grace_s: float = _setting(
        _float_seconds,
        180.0,
        doc="how long a send a crash left without an answer waits for the provider's word"
        " (SendGrid's events, Twilio's list) before it goes again",
    )
    bounce_email_hard_threshold: int = _setting(
        _positive_int, 3, doc="hard bounces of an email address that unsubscribe it"
    )
    bounce_email_hard_window_days: float = _setting(
        _float_days, 30.0, doc="...counted over this many days"
    )
    bounce_email_soft_threshold: int = _setting(
        _positive_int,
        5,
        doc="soft bounces of an email address since its last success that unsubscribe it",
    )
    bounce_email_soft_window_days: float = _setting(
        _float_days, 30.0, doc="...counted over at most this many days"
    )
    bounce_sms_hard_threshold: int = _setting(
        _positive_int, 2, doc="permanent SMS errors of a number that unsubscribe it"
    )
    bounce_sms_hard_window_days: float = _setting(
        _float_days, 30.0, doc="...counted over this many days"
    )
    bounce_sms_soft_threshold: int = _setting(
        _positive_int,
        5,
        doc="transient SMS errors of a number since its last success that unsubscribe it",
    )
    bounce_sms_soft_window_days: float = _setting(
        _float_days, 30.0, doc="...counted over at most this many days"
    )
    bounce_soft_suppression_days: float = _setting(
        _non_negative,
        30.0,
        doc="days an unsubscribe for soft failures lasts; 0: until lifted",
    )
    bounce_sms_permanent_codes: tuple[str, ...] = _setting(
        _codes, ("30005", "30006", "21211", "21614"), doc="Twilio error codes counted as permanent"
    )
    bounce_sms_transient_codes: tuple[str, ...] = _setting(
        _codes, ("30003", "30008", "30004"), doc="Twilio error codes counted as transient (soft)"
    )
    outbox_retention_days: int = _setting(
        _count,
        7,
        doc="days a published event stays in the outbox table (Kafka and the journal keep "
        "it); 0: kept for ever",
    )
    sandbox_seed: int = _setting(
        _int, 1, doc="sandbox: seed of its random choices (same seed, same choices)"
    )
    sandbox_duplicate_rate: float = _setting(
        _rate, 0.05, doc="sandbox: share of webhook events posted twice"
    )
    sandbox_reorder_rate: float = _setting(
        _rate, 0.1, doc="sandbox: share of webhook events held back behind later ones"
    )
    sandbox_open_rate: float = _setting(_rate, 0.6, doc="sandbox: share of delivered emails opened")
    sandbox_click_rate: float = _setting(_rate, 0.3, doc="sandbox: share of opened emails clicked")
    sandbox_machine_open_rate: float = _setting(
        _rate, 0.1, doc="sandbox: share of delivered emails opened by a machine (Apple MPP)"
    )
    sandbox_async_bounce_rate: float = _setting(
        _rate, 0.3, doc="sandbox: share of bounces without sg_message_id and custom args"
    )
    sandbox_webhooks: bool = _setting(
        _bool,
        True,
        doc="sandbox: post webhooks (SendGrid events, Twilio status callbacks); off: sends "
        "are only accepted (load tests)",
    )
    sandbox_batch_interval_s: float = _setting(
        _float_seconds, 0.25, doc="sandbox: how often event batches are posted (SendGrid: ~30 s)"
    )
    sandbox_rate_limit: int = _setting(
        _count, 0, doc="sandbox: mail-send requests per second before 429; 0: no limit"
    )
    sandbox_signing_key: str | None = _setting(
        _private_key,
        secret=True,
        doc="sandbox: base64 DER P-256 private key; unset: generated, kept in the data dir",
    )
    log_level: str = _setting(_log_level, "INFO", doc="DEBUG, INFO, WARNING or ERROR")
    log_format: str = _setting(
        _log_format, "auto", doc="json, console, or auto (console on a terminal)"
    )

    @property
    def webhook_base_url(self) -> str:
        """The URL the providers call; Twilio signatures are computed over it."""
        return self.public_webhook_base_url or f"http://127.0.0.1:{self.ingest_port}"

    @property
    def https(self) -> bool:
        """Browsers reach the API over https (behind a TLS proxy)."""
        return self.public_url is not None and urlsplit(self.public_url).scheme == "https"

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def uses_embedded_broker(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def session_timeout_ms(self) -> int:
        """How long a silent consumer keeps its partitions. The embedded broker waits this
        long before handing a departed member's partitions over, so it gets a short one."""
        if self.kafka_session_timeout_ms is not None:
            return self.kafka_session_timeout_ms
        return 2000 if self.uses_embedded_broker else 10_000

    def topic(self, name: str) -> str:
        """The full name of one of relaybook's topics (``send-jobs``, ``delivery-events``...)."""
        return f"{self.topic_prefix}{name}"

    def describe(self) -> dict[str, str]:
        """The settings as text, secrets masked: safe to print or log."""
        shown: dict[str, str] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or value == ():
                text = "(unset)"
            elif field.metadata["secret"]:
                text = "(set)"
            elif field.name == "sendgrid_webhook_public_keys":
                text = f"{len(value)} key(s)"
            elif isinstance(value, tuple):
                text = ",".join(value)
            else:
                text = str(value)
            shown[env_name(field.name)] = text
        return shown


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the variables that :func:`load` reads back into the same settings
    (what `up` hands the process of each deployable); unset ones are left out."""
    variables = {}
    for field in dataclasses.fields(Settings):
        value = getattr(settings, field.name)
        if value is None:
            continue
        if isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, tuple):
            shown = ",".join(value)
        else:
            shown = str(value)
        variables[env_name(field.name)] = shown
    return variables


def documented() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, for the README and ``--help``."""
    rows = []
    for field in dataclasses.fields(Settings):
        default = field.default
        if default is None or default == ():
            shown = ""
        elif isinstance(default, tuple):
            shown = ",".join(default)
        else:
            shown = str(default)
        rows.append((env_name(field.name), shown, field.metadata["doc"]))
    return rows


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``environ`` (default: the process environment).

    An empty variable counts as unset. A variable with our prefix that names no setting is
    an error too: a typo must not silently fall back to a default.
    """
    environ = os.environ if environ is None else environ
    fields = {field.name: field for field in dataclasses.fields(Settings)}
    known = {env_name(name) for name in fields}
    for variable in sorted(environ):
        if variable.startswith(PREFIX) and variable not in known:
            close = difflib.get_close_matches(variable, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(f"{variable} is not a relaybook setting{hint}")

    values: dict[str, Any] = {}
    for name, field in fields.items():
        raw = environ.get(env_name(name), "")
        if not raw.strip():
            continue
        try:
            values[name] = field.metadata["parse"](raw)
        except ValueError as error:
            shown = "(hidden)" if field.metadata["secret"] else repr(raw)
            raise SettingsError(f"{env_name(name)}={shown}: {error}") from None
    values.update(overrides)
    settings = Settings(**values)
    _check_together(settings)
    return settings


#: the settings of the ports the deployables serve on
PORTS = ("api_port", "ingest_port", "sandbox_port", "worker_port", "tracker_port",
         "bounce_policy_port")  # fmt: skip


def _check_together(settings: Settings) -> None:
    _check_kafka_security(settings)
    ports = {env_name(name): getattr(settings, name) for name in PORTS}
    seen: dict[int, str] = {}
    for variable, port in ports.items():
        if port in seen:
            raise SettingsError(f"{variable}={port}: the same port as {seen[port]}")
        seen[port] = variable


def _check_kafka_security(settings: Settings) -> None:
    """Security settings that only make sense together: one left out, or one the chosen
    protocol would silently ignore, is refused rather than guessed."""
    protocol = settings.kafka_security_protocol
    where = f"with RELAYBOOK_KAFKA_SECURITY_PROTOCOL={protocol}"
    sasl = {
        "RELAYBOOK_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "RELAYBOOK_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "RELAYBOOK_KAFKA_SASL_PASSWORD": settings.kafka_sasl_password,
    }
    ssl_files = {
        "RELAYBOOK_KAFKA_SSL_CA_FILE": settings.kafka_ssl_ca_file,
        "RELAYBOOK_KAFKA_SSL_CERT_FILE": settings.kafka_ssl_cert_file,
        "RELAYBOOK_KAFKA_SSL_KEY_FILE": settings.kafka_ssl_key_file,
    }
    if protocol != "PLAINTEXT" and settings.kafka_bootstrap_servers is None:
        raise SettingsError(
            f"RELAYBOOK_KAFKA_SECURITY_PROTOCOL={protocol} needs "
            "RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS: the embedded brokers listen in plain text"
        )
    if protocol.startswith("SASL_"):
        missing = [variable for variable, value in sasl.items() if value is None]
        if missing:
            raise SettingsError(f"{where}, set {' and '.join(missing)} too")
    else:
        stray = [variable for variable, value in sasl.items() if value is not None]
        if stray:
            raise SettingsError(
                f"{stray[0]} is set but unused {where} (use SASL_PLAINTEXT or SASL_SSL)"
            )
    if protocol.endswith("SSL"):
        if settings.kafka_ssl_key_file is not None and settings.kafka_ssl_cert_file is None:
            raise SettingsError(
                "RELAYBOOK_KAFKA_SSL_KEY_FILE is set without RELAYBOOK_KAFKA_SSL_CERT_FILE"
            )
    else:
        stray = [variable for variable, value in ssl_files.items() if value is not None]
        if stray:
            raise SettingsError(f"{stray[0]} is set but unused {where} (use SSL or SASL_SSL)")
