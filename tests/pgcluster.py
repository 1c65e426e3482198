"""A private PostgreSQL cluster that one test owns, so it can stop and restart the server.

The shared server on 127.0.0.1:5432 serves every other test and must never be stopped; tests of
"the database went away" get their own cluster instead: ``initdb`` into a temporary directory, a
free port on loopback, its Unix socket in that directory. ``stop("immediate")`` is the crash-like
stop (no checkpoint; the server recovers from its WAL on the next start), as a killed or
power-cut server would be.

PostgreSQL refuses to run as root; as root the binaries run as the ``postgres`` OS user through
``runuser``. Missing binaries skip the test with the reason, or fail it under ``CI=true``
(``tests/services.py``'s rule).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.services import in_ci

SEARCH_PATHS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")


def find_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: on PATH, else the newest packaged one."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent  # often a symlink into the versioned directory
    candidates = [Path(p) for pattern in SEARCH_PATHS for p in glob.glob(pattern)]
    found = [p for p in candidates if (p / "initdb").exists() and (p / "pg_ctl").exists()]
    return max(found, key=_version, default=None)


def _version(bin_dir: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> (15,); unversioned paths sort first."""
    digits = "".join(c if c.isdigit() else " " for c in bin_dir.parent.name)
    return tuple(int(part) for part in digits.split())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """``initdb`` + ``pg_ctl`` on a directory of its own. Use through the ``pg_cluster`` fixture."""

    def __init__(self, bin_dir: Path, directory: Path, run_as: str | None) -> None:
        self.bin_dir = bin_dir
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "server.log"
        self.port = _free_port()
        self._run_as = run_as
        self.running = False

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._run_as is not None:
            command = ["runuser", "-u", self._run_as, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:1])} failed ({result.returncode}): {result.stderr.strip()}\n"
                f"{self.log_tail()}"
            )

    def init(self) -> None:
        # --no-sync only skips flushing the freshly created files; the running server fsyncs.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown. ``immediate``: every process quits at once, no checkpoint."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        admin = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except (FileNotFoundError, PermissionError):
            return ""


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)


@contextmanager
def private_cluster() -> Iterator[PostgresCluster]:
    """A started private cluster; stopped (immediately) and removed afterwards, pass or fail.
    Skips (fails under CI=true) when PostgreSQL's server binaries are not installed."""
    bin_dir = find_binaries()
    if bin_dir is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    assert bin_dir is not None
    run_as: str | None = None
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            _unavailable("running as root, and runuser is missing to run PostgreSQL as postgres")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root, and there is no postgres OS user to run PostgreSQL as")
        run_as = "postgres"
    # Not under pytest's tmp_path: as root that sits in a 0700 directory postgres cannot enter.
    directory = Path(tempfile.mkdtemp(prefix="vgpg-"))
    if run_as is not None:
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    cluster = PostgresCluster(bin_dir, directory, run_as)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            if cluster.running or (cluster.data / "postmaster.pid").exists():
                cluster.stop("immediate")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
