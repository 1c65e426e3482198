"""What the end-to-end benches share: running ``vetgateway`` commands as child processes and a
throw-away PostgreSQL database. Not a bench itself."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast, get_args
from urllib.parse import urlsplit

import pika
import sqlalchemy as sa

from vetgateway.event_loop import EventLoopChoice, loop_name

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
VETGATEWAY = str(Path(sys.executable).with_name("vetgateway"))
# Every bench process (clients, bare servers, gateways) runs on the loop ``vetgateway run`` would
# pick with this setting, so a baseline never differs from the gateway by its event loop.
LOOP: EventLoopChoice = "auto"
if (_choice := os.environ.get("VETGATEWAY_EVENT_LOOP", "auto")) in get_args(EventLoopChoice):
    LOOP = cast(EventLoopChoice, _choice)
else:
    sys.exit(f"VETGATEWAY_EVENT_LOOP={_choice!r}: use one of {get_args(EventLoopChoice)}")
LOOP_NAME = loop_name(LOOP)


# Which processes on this machine do what: a test on a process's argument vector. The share of
# the two cores each role takes is what decides an end-to-end rate here.
ROLES: tuple[tuple[str, Callable[[list[str]], bool]], ...] = (
    ("gateway", lambda argv: argv[1:2] == [VETGATEWAY] and argv[2:3] == ["run"]),
    ("workers", lambda argv: argv[1:2] == [VETGATEWAY] and argv[2:3] == ["worker"]),
    # The postmaster by its path; its backends retitle themselves "postgres: 15/main: ...".
    ("postgres", lambda argv: argv[0].startswith("postgres:") or Path(argv[0]).name == "postgres"),
    ("rabbitmq", lambda argv: Path(argv[0]).name == "beam.smp"),
)


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each of ``ROLES``' processes that are running,
    and by this process (``client``). Take one before and one after, and subtract."""
    tick = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys([name for name, _ in ROLES], 0.0)
    others = (pid for pid in os.listdir("/proc") if pid.isdigit() and int(pid) != os.getpid())
    for pid in others:
        with contextlib.suppress(OSError, IndexError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            for name, plays in ROLES:
                if plays(argv):
                    used[name] += (int(fields[11]) + int(fields[12])) / tick
                    break
    own = os.times()
    used["client"] = own.user + own.system
    return used


def gateway_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This environment without VETGATEWAY_* settings, then ``settings``; every port 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VETGATEWAY_")}
    env["VETGATEWAY_DATA_DIR"] = str(data_dir)
    env["VETGATEWAY_EVENT_LOOP"] = LOOP
    ports = {"http_port": "0", "mllp_port": "0", "astm_port": "0", "dicom_port": "0"}
    env |= {f"VETGATEWAY_{k.upper()}": v for k, v in (ports | settings).items()}
    return env


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def process_listening(command: list[str], env: dict[str, str], name: str) -> Iterator[str]:
    """Start a server process, yield the address it prints for ``name``, stop it afterwards."""
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    try:
        address = ""
        for line in proc.stdout:
            parts = line.split()
            if name in parts[:2]:
                address = next(p for p in parts if "://" in p)
                break
        if not address:
            raise RuntimeError(f"{' '.join(command)} exited ({proc.wait()}) before listening")
        yield address
    finally:
        _stop(proc)


@contextlib.contextmanager
def process_ready(command: list[str], env: dict[str, str], marker: str) -> Iterator[None]:
    """Start a process and return once it prints a line starting with ``marker``."""
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    try:
        if not any(line.startswith(marker) for line in proc.stdout):
            raise RuntimeError(f"{' '.join(command)} exited ({proc.wait()}) before ready")
        yield
    finally:
        _stop(proc)


def split(address: str) -> tuple[str, int]:
    parts = urlsplit(address)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    name = f"vgbench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def delete_queues(amqp_url: str, queue: str) -> None:
    """Dramatiq declares a queue with a delay and a dead-letter queue beside it: drop all three."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
    finally:
        connection.close()
