"""The settings machinery, and the platform's own settings (:class:`PlatformSettings`).

Each owner (a domain package, an app, the tooling) declares the settings it reads in a
frozen, ``kw_only`` dataclass of its own, its *fragment*, each field made by
:func:`_setting`. The composition root (:mod:`relaybook.tooling.settings`) makes one
``Settings`` class inheriting every fragment, read from ``RELAYBOOK_*`` environment
variables by :func:`load`. Code below it annotates with the fragment it reads, and an app
handed the whole object narrows it with :func:`section`.

Every value is validated when :func:`load` runs, so a bad setting stops start-up with a
single line naming the variable (:class:`SettingsError`), never later with a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

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


def _float_days(raw: str) -> float:
    return _number(raw, 0.001, 3650, "a number of days between 0.001 and 3650")


def _setting(
    parse: Callable[[str], Any],
    default: Any = None,
    *,
    secret: bool = False,
    doc: str = "",
    shown: Callable[[Any], str] | None = None,
) -> Any:
    """One setting of a fragment: ``parse`` turns its variable's text into its value (a
    ValueError's message says what is wrong); ``shown`` how :func:`describe` shows a set
    value (default: as text, a tuple comma-separated)."""
    # secrets are left out of the repr too, so a logged or printed Settings never shows one
    return dataclasses.field(
        default=default,
        repr=not secret,
        metadata={"parse": parse, "secret": secret, "doc": doc, "shown": shown},
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlatformSettings:
    """What every relaybook process stands on: the database, the Kafka client, HTTP,
    logging, the outbox. ``None`` means "not configured": for the database and the broker
    that selects the embedded defaults."""

    database_url: str | None = _setting(
        _postgres_url, secret=True, doc="PostgreSQL URL; unset: embedded PostgreSQL"
    )
    kafka_bootstrap_servers: str | None = _setting(
        _bootstrap_servers, doc="host:port,...; unset: embedded broker"
    )
    data_dir: Path = _setting(Path, Path(".relaybook"), doc="embedded data, keys, admin token")
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
    kafka_session_timeout_ms: int | None = _setting(
        _positive_int,
        doc="consumer group session timeout; default 10000, 2000 on the embedded broker",
    )
    outbox_retention_days: int = _setting(
        _count,
        7,
        doc="days a published event stays in the outbox table (Kafka and the journal keep "
        "it); 0: kept for ever",
    )
    log_level: str = _setting(_log_level, "INFO", doc="DEBUG, INFO, WARNING or ERROR")
    log_format: str = _setting(
        _log_format, "auto", doc="json, console, or auto (console on a terminal)"
    )

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
        """These settings (every fragment of them) as text, secrets masked: :func:`describe`."""
        return describe(self)

    def check(self) -> None:
        """Kafka's security settings make sense together (:func:`load` runs each
        fragment's own ``check``)."""
        _check_kafka_security(self)


Fragment = TypeVar("Fragment")


def section(settings: object, fragment: type[Fragment]) -> Fragment:
    """``settings`` seen as the fragment ``fragment`` (an owner's settings class): what an
    app handed the whole settings (``Infrastructure.settings``) reads its own through.
    A TypeError when ``settings`` do not include that fragment: they were not built by the
    composition root (``relaybook.tooling.settings``)."""
    if not isinstance(settings, fragment):
        raise TypeError(
            f"{type(settings).__qualname__} has no {fragment.__module__}."
            f"{fragment.__qualname__}: build the settings with relaybook.tooling.settings"
        )
    return settings


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def describe(settings: DataclassInstance) -> dict[str, str]:
    """``settings`` as text by variable, secrets masked (``(set)``): safe to print or log."""
    shown: dict[str, str] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if value is None or value == ():
            text = "(unset)"
        elif field.metadata["secret"]:
            text = "(set)"
        elif field.metadata["shown"] is not None:
            text = field.metadata["shown"](value)
        elif isinstance(value, tuple):
            text = ",".join(value)
        else:
            text = str(value)
        shown[env_name(field.name)] = text
    return shown


def environment(settings: DataclassInstance) -> dict[str, str]:
    """``settings`` as the variables that :func:`load` reads back into the same settings
    (what `up` hands the process of each deployable); unset ones are left out."""
    variables = {}
    for field in dataclasses.fields(settings):
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


class Documented(NamedTuple):
    """One setting as ``relaybook settings`` and the README show it."""

    variable: str
    default: str
    meaning: str
    #: the package whose fragment declares it (``relaybook.reachability``, ``send_worker``)
    owner: str


def documented(settings_class: type[DataclassInstance]) -> list[Documented]:
    """Every setting of ``settings_class`` (a fragment, or the composed settings), in
    field order."""
    rows = []
    for field in dataclasses.fields(settings_class):
        default = field.default
        if default is None or default == ():
            shown = ""
        elif isinstance(default, tuple):
            shown = ",".join(default)
        else:
            shown = str(default)
        owner = _declared_by(settings_class, field.name).__module__.rpartition(".")[0]
        rows.append(Documented(env_name(field.name), shown, field.metadata["doc"], owner))
    return rows


def _declared_by(settings_class: type, name: str) -> type:
    """The class that declares the field ``name``: the first, from ``object`` up, to have it."""
    for klass in reversed(settings_class.__mro__):
        if name in getattr(klass, "__dataclass_fields__", {}):
            return klass
    raise LookupError(name)


Loaded = TypeVar("Loaded", bound="DataclassInstance")


def load(
    settings_class: type[Loaded], environ: Mapping[str, str] | None = None, **overrides: Any
) -> Loaded:
    """Build ``settings_class`` (the composed settings: every setting of relaybook) from
    ``environ`` (default: the process environment), then run the ``check`` of each class
    it is made of, the platform's first.

    An empty variable counts as unset. A variable with our prefix that names no setting is
    an error too: a typo must not silently fall back to a default.
    """
    environ = os.environ if environ is None else environ
    fields = {field.name: field for field in dataclasses.fields(settings_class)}
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
    settings = settings_class(**values)
    for klass in reversed(settings_class.__mro__):
        own_check = vars(klass).get("check")
        if own_check is not None:
            own_check(settings)
    return settings


def _check_kafka_security(settings: PlatformSettings) -> None:
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
