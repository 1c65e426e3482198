"""``vetgateway run`` as a real child process, for tests that kill, restart or starve it.

The gateway logs one JSON line per message on stderr; a pipe nobody reads would fill up and stall
it mid-test, so stderr goes to a file (read back for failure messages). Every listener binds port
0; the addresses are read from the lines it prints on stdout once it listens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

VETGATEWAY = str(Path(sys.executable).with_name("vetgateway"))


def gateway_environment(data_dir: Path, **settings: str) -> dict[str, str]:
    """The parent's environment without any VETGATEWAY_* setting, then ``settings``, all ports 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VETGATEWAY_")}
    env["VETGATEWAY_DATA_DIR"] = str(data_dir)
    ports = {"http_port": "0", "mllp_port": "0", "astm_port": "0", "dicom_port": "0"}
    env.update({f"VETGATEWAY_{k.upper()}": v for k, v in (ports | settings).items()})
    return env


class _ChildProcess:
    """A ``vetgateway`` command run as a child process, stopped or killed by the test."""

    proc: subprocess.Popen[str] | None
    log_path: Path

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut or the OOM killer."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._close_stdout()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the clean stop an operator does. Returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._close_stdout()

    def ensure_dead(self) -> None:
        """For teardown: kill the process if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self._close_stdout()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _close_stdout(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


class GatewayProcess(_ChildProcess):
    """One run of the gateway. ``start()`` returns once HTTP (the last listener) is up."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.listening: dict[str, str] = {}

    def start(self) -> GatewayProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [VETGATEWAY, "run"], env=self._env, stdout=subprocess.PIPE, stderr=log, text=True
            )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            _, name, address, *_ = line.split()
            self.listening[name] = address
            if name == "http":
                return self
        self.proc.wait()
        raise AssertionError(
            f"gateway exited ({self.proc.returncode}) before listening: {self.log_tail()}"
        )

    @property
    def mllp(self) -> tuple[str, int]:
        address = urlsplit(self.listening["mllp"])
        assert address.hostname is not None
        assert address.port is not None
        return address.hostname, address.port

    @property
    def astm(self) -> tuple[str, int]:
        address = urlsplit(self.listening["astm"])
        assert address.hostname is not None
        assert address.port is not None
        return address.hostname, address.port


class WorkerProcess(_ChildProcess):
    """One ``vetgateway worker``; ``start()`` returns once it has declared itself ready."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self._env = env
        self._args = args
        self.log_path = log_path
        self.proc = None

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [VETGATEWAY, "worker", *self._args],
                env=self._env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("worker ready"):
                return self
        self.proc.wait()
        raise AssertionError(f"worker exited ({self.proc.returncode}): {self.log_tail()}")
