"""Structured logging: one JSON object per line, identity fields redacted, uvicorn routed."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vetgateway.logs import (
    REDACTED,
    SETUP_CHATTER,
    UVICORN_LOGGERS,
    JsonLinesHandler,
    configure_logging,
    is_redacted_key,
)

WATCHED = ("", *UVICORN_LOGGERS, *SETUP_CHATTER)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back after each test."""
    saved = {
        name: (list(lg.handlers), lg.level, lg.propagate)
        for name in WATCHED
        for lg in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line must be a JSON object on its own."""
    out = stream.getvalue().splitlines()
    return [json.loads(line) for line in out]


def test_one_json_object_per_line_with_core_fields_and_extras() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("vetgateway.test")
    log.info("accepted %s", "ORU^R01", extra={"message_id": 42, "channel": "mllp", "peer": "x"})
    log.debug("not shown at INFO")
    [line] = lines(stream)
    assert line["level"] == "INFO"
    assert line["logger"] == "vetgateway.test"
    assert line["event"] == "accepted ORU^R01"
    assert (line["message_id"], line["channel"], line["peer"]) == (42, "mllp", "x")
    ts = datetime.fromisoformat(line["ts"])
    assert ts.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - ts).total_seconds()) < 60


def test_patient_and_owner_fields_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("vetgateway.test").warning(
        "unmatched result",
        extra={
            "patient_name": "Biscuit",
            "owner_name": "Jane Doe",
            "owner": "Jane Doe",
            "animal_name": "Biscuit",
            "client_name": "Jane Doe",
            "owner_phone": "+44 20 7946 0000",
            "given_name": "Jane",
            "channel_name": "idexx-mllp",
            "device_name": "Catalyst One",
            "message_id": 7,
            "nested": {"patient_name": "Biscuit", "ok": 1},
        },
    )
    [line] = lines(stream)
    for key in ("patient_name", "owner_name", "owner", "animal_name", "client_name"):
        assert line[key] == REDACTED, key
    assert line["owner_phone"] == REDACTED
    assert line["given_name"] == REDACTED
    assert line["nested"] == {"patient_name": REDACTED, "ok": 1}
    assert line["channel_name"] == "idexx-mllp"
    assert line["device_name"] == "Catalyst One"
    assert line["message_id"] == 7
    raw = stream.getvalue()
    assert "Biscuit" not in raw
    assert "Jane" not in raw
    assert "7946" not in raw


@pytest.mark.parametrize(
    ("key", "redacted"),
    [
        ("patient_name", True),
        ("Owner_Name", True),
        ("pet_name", True),
        ("first_name", True),
        ("owner_email", True),
        ("channel_name", False),
        ("device_name", False),
        ("message_id", False),
        ("peer", False),
        ("name_of_thing", False),
    ],
)
def test_redaction_rule(key: str, redacted: bool) -> None:
    assert is_redacted_key(key) is redacted


def test_exception_text_is_included_on_the_same_line() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        raise ValueError("bad segment\nsecond line")
    except ValueError:
        logging.getLogger("vetgateway.test").exception("parse failed", extra={"message_id": 3})
    [line] = lines(stream)
    assert line["event"] == "parse failed"
    assert "ValueError: bad segment" in line["exc_info"]
    assert "Traceback" in line["exc_info"]


def test_extras_cannot_overwrite_core_fields() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("vetgateway.test").info("real", extra={"event": "fake", "level": "x"})
    [line] = lines(stream)
    assert (line["event"], line["level"]) == ("real", "INFO")
    assert (line["extra_event"], line["extra_level"]) == ("fake", "x")


def test_unserialisable_extras_are_stringified() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("vetgateway.test").info("x", extra={"when": datetime(2026, 1, 2, tzinfo=UTC)})
    [line] = lines(stream)
    assert line["when"].startswith("2026-01-02")


def test_configuring_twice_does_not_duplicate_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=first)
    configure_logging("DEBUG", stream=second)
    logging.getLogger("vetgateway.test").debug("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["once"]
    ours = [h for h in logging.getLogger().handlers if isinstance(h, JsonLinesHandler)]
    assert len(ours) == 1


def test_uvicorn_loggers_go_through_the_json_handler_only() -> None:
    stray = io.StringIO()
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(stray))
    logging.getLogger("uvicorn.access").propagate = False
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 123, extra={"color_message": "\x1b[36m%d\x1b[0m"}
    )
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5555",
        "GET",
        "/api/v1/reports?patient_name=Biscuit",
        "1.1",
        200,
    )
    assert stray.getvalue() == ""
    started, access = lines(stream)
    assert started["logger"] == "uvicorn.error"
    assert started["event"] == "Started server process [123]"
    assert "color_message" not in started
    assert access["logger"] == "uvicorn.access"
    assert access["event"] == "GET /api/v1/reports HTTP/1.1 200"
    assert (access["method"], access["path"], access["status"]) == ("GET", "/api/v1/reports", 200)
    assert access["peer"] == "127.0.0.1:5555"
    assert "Biscuit" not in stream.getvalue()


_FIRST_START = """
import sys
from vetgateway.logs import configure_logging
from vetgateway.store import migrate
from vetgateway.store.db import Database

configure_logging(sys.argv[1], stream=sys.stdout)
migrate.upgrade(Database("sqlite:///" + sys.argv[2]))
"""


@pytest.mark.parametrize(("level", "chatter_shown"), [("INFO", False), ("DEBUG", True)])
def test_a_first_migration_logs_what_ran_without_alembics_plugin_set_up(
    tmp_path: Path, level: str, chatter_shown: bool
) -> None:
    """A first start migrates the embedded database through Alembic, whose plugins announce
    themselves once per process at INFO (hence a fresh interpreter): that is kept for DEBUG;
    the migrations it runs are shown at INFO."""
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_START, level, str(tmp_path / "first.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    logged = [json.loads(line) for line in done.stdout.splitlines()]
    assert any(line["event"].startswith("Running upgrade  -> 0001") for line in logged)
    plugin_lines = [line for line in logged if line["logger"] == "alembic.runtime.plugins"]
    assert bool(plugin_lines) is chatter_shown


def test_pikas_connection_chatter_is_debug_but_its_warnings_show() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    connection = logging.getLogger("pika.adapters.blocking_connection")
    connection.info("Created channel=1")
    connection.warning("Connection lost: reconnecting")
    assert [line["event"] for line in lines(stream)] == ["Connection lost: reconnecting"]
    configure_logging("DEBUG", stream=stream)
    connection.info("Created channel=2")
    assert lines(stream)[-1]["event"] == "Created channel=2"
