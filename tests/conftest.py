"""Shared fixtures: databases on both back ends, each test on a clean, migrated schema."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.pgcluster import PostgresCluster, private_cluster
from tests.services import POSTGRES, POSTGRES_ADMIN_URL, require
from vetgateway.store import migrate
from vetgateway.store.db import Database
from vetgateway.store.models import Base

# Times without an offset are read in this host's zone (``Settings.zone``): pin it, so that the
# suite (and every gateway it starts) reads them alike on any machine. Tests of the zone set
# their own.
os.environ["TZ"] = "UTC"

BACKENDS = ["sqlite", "postgresql"]


class PostgresServer:
    """Creates throw-away databases on the local PostgreSQL and drops them afterwards."""

    def __init__(self) -> None:
        self.admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create_database(self) -> str:
        name = f"vgtest_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return (
            sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        )

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    require(POSTGRES)
    server = PostgresServer()
    yield server
    server.drop_all()


@pytest.fixture
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no schema) on the back end named by the test's ``backend`` param."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    db.dispose()
    return path


@pytest.fixture(scope="session")
def _postgres_migrated(postgres_server: PostgresServer) -> Iterator[Database]:
    db = Database(postgres_server.create_database())
    migrate.upgrade(db)
    yield db
    db.dispose()


def _truncate_all(db: Database) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database: a copy of a template file on SQLite, a truncated one on
    PostgreSQL. Tests using it run once per back end."""
    if request.param == "sqlite":
        path = tmp_path / "vetgateway.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        database = Database(f"sqlite:///{path}")
        yield database
        database.dispose()
    else:
        database = request.getfixturevalue("_postgres_migrated")
        _truncate_all(database)
        yield database


@pytest.fixture
def pg_cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster this test may stop and restart (see ``tests/pgcluster.py``)."""
    with private_cluster() as cluster:
        yield cluster


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No VETGATEWAY_* from the surroundings leaks into the settings under test."""
    for name in list(os.environ):
        if name.startswith("VETGATEWAY_"):
            monkeypatch.delenv(name)
    return monkeypatch
