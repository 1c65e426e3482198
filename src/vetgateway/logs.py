"""Structured logs: one JSON object per line on stderr, with identity-bearing fields redacted.

Each line carries ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``event`` (the formatted message),
every ``extra=`` field the caller passed (``message_id``, ``channel``, ``peer`` …) and ``exc_info``
when an exception is attached. Callers put identifiers in ``extra=`` rather than formatting them
into the message, so that log shippers can index them.

Redaction (CONVENTIONS.md §6: "never patient names or owner details in logs"): patient identity
belongs to the practice-management system and a log line is copied to places (journald, shippers,
support tickets) the clinic does not control. So any ``extra`` key that could carry the name of an
animal or of a person responsible for it is written as ``"[redacted]"``: the explicit keys in
``REDACTED_KEYS``, every key starting with ``owner_``, and every key ending in ``_name`` except the
technical names in ``ALLOWED_NAME_KEYS`` (channels, devices, tokens, queues …). The rule applies to
nested dictionaries too. It is a safety net, not a licence: never format such values into the
message text, which is not inspected.

uvicorn's own loggers are routed through the same handler (their handlers are removed, they
propagate to the root), so run uvicorn with ``log_config=None`` to keep it from installing its
plain-text handlers again. Access lines lose their query string, which may carry search terms.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

REDACTED = "[redacted]"

REDACTED_KEYS = frozenset(
    {
        "patient",
        "patient_name",
        "animal_name",
        "pet_name",
        "owner",
        "owner_name",
        "client",
        "client_name",
        "client_email",
        "client_phone",
        "client_address",
    }
)

ALLOWED_NAME_KEYS = frozenset(
    {
        "logger_name",
        "channel_name",
        "device_name",
        "analyzer_name",
        "modality_name",
        "token_name",
        "queue_name",
        "actor_name",
        "test_name",
        "host_name",
        "file_name",
        "ae_name",
        "setting_name",
    }
)

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")

# Libraries that log their own set-up at INFO, shown again at DEBUG: Alembic announces each of its
# plugins on every migration, which buries what an operator wants from a first start (where the
# gateway listens, which migrations ran); pika logs five to ten lines for every RabbitMQ
# connection it opens or closes (one per worker thread), three quarters of a worker's log. Their
# warnings and errors (a lost connection) still show.
SETUP_CHATTER = ("alembic.runtime.plugins", "pika")

# Attributes every LogRecord has; anything else on a record came from ``extra=``. uvicorn adds
# ``color_message`` (the event again, with ANSI colours), which is dropped too.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName", "color_message"}

_CORE_KEYS = ("ts", "level", "logger", "event", "exc_info", "stack_info")


def is_redacted_key(key: str) -> bool:
    """True when values logged under ``key`` must not appear in the output."""
    lowered = key.lower()
    if lowered in REDACTED_KEYS or lowered.startswith("owner_"):
        return True
    return lowered.endswith("_name") and lowered not in ALLOWED_NAME_KEYS


def redact(fields: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``fields`` with identity-bearing keys replaced, recursing into nested dicts."""
    cleaned: dict[str, Any] = {}
    for key, value in fields.items():
        if is_redacted_key(str(key)):
            cleaned[key] = REDACTED
        elif isinstance(value, dict):
            cleaned[key] = redact(value)
        else:
            cleaned[key] = value
    return cleaned


def _access_event(record: logging.LogRecord) -> tuple[str, dict[str, Any]] | None:
    """uvicorn.access records carry (client, method, path, http version, status) as args."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return None
    peer, method, path, http_version, status = args
    path = str(path).split("?", 1)[0]
    fields = {"peer": peer, "method": method, "path": path, "status": status}
    return f"{method} {path} HTTP/{http_version} {status}", fields


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (no embedded newlines: tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}
        access = _access_event(record)
        if access is None:
            event = record.getMessage()
        else:
            event, access_fields = access
            extra = {**access_fields, **extra}
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": event,
        }
        for key, value in redact(extra).items():
            line[f"extra_{key}" if key in _CORE_KEYS else key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class JsonLinesHandler(logging.StreamHandler[TextIO]):
    """The root handler ``configure_logging`` installs; its class marks it for replacement."""


def configure_logging(level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Send every log record, uvicorn's included, as JSON lines to ``stream`` (default stderr).

    Safe to call more than once: the previous JSON handler is replaced, never duplicated. Other
    handlers on the root logger (a test runner's capture, for instance) are left alone.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, JsonLinesHandler):
            root.removeHandler(handler)
            handler.close()
    handler = JsonLinesHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        for existing in list(uvicorn_logger.handlers):
            uvicorn_logger.removeHandler(existing)
        uvicorn_logger.propagate = True
        uvicorn_logger.setLevel(logging.NOTSET)
    chatter_level = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    for name in SETUP_CHATTER:
        logging.getLogger(name).setLevel(chatter_level)
