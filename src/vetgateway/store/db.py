"""Engines and sessions: the only module that creates either.

Durability is set here, per dialect, because the inbox's promise ("the row is on disk before the
peer is acknowledged") depends on it:

- SQLite: WAL journal with ``synchronous=FULL`` (a commit is fsynced before it returns),
  foreign keys on, and write transactions opened with ``BEGIN IMMEDIATE`` so two writers queue on
  the lock instead of failing with SQLITE_BUSY when a read transaction tries to upgrade.
- PostgreSQL: ``synchronous_commit=on`` for every connection, whatever the server default says.

Dead connections are handled optimistically, not with a ping per checkout (a round trip on the
inbox's hot path): the first statement that finds the server gone invalidates the whole pool, so
one operation fails after a database restart, and ``Database.write`` retries that one when nothing
had reached the commit yet. A single-statement write (autocommit) is its own commit and is never
retried, so it looks at the socket first instead (no round trip).

Callers own the unit of work: ``with db.session() as s:`` commits on success and rolls back on any
exception. Store functions take a session and never commit.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from vetgateway.errors import StorageError, StorageUnavailable
from vetgateway.store.writer_gate import WriterGate, gate_for

log = logging.getLogger(__name__)

T = TypeVar("T")

_SQLITE_BEGIN = "vetgateway_sqlite_begin"


def normalise_url(url: str) -> URL:
    """Accept ``postgresql://`` and ``postgres://`` as psycopg 3 URLs; keep SQLite URLs as given."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _configure_sqlite(engine: Engine, *, durable: bool) -> None:
    synchronous = "FULL" if durable else "NORMAL"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (so BEGIN IMMEDIATE works).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get(_SQLITE_BEGIN, "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


def create_engine(url: str, *, pool_size: int = 10, durable: bool = True) -> Engine:
    """Build an engine with the durability settings above. Creates the SQLite file's folder.

    ``durable=False`` is for work that can be redone from what is durable already (the
    pipeline: its results are derived from stored messages, and a lost commit also loses the
    status change, so the message is processed again). Its commits skip the flush to disk:
    SQLite ``synchronous=NORMAL`` in WAL mode (the next FULL commit, an intake, flushes them
    too), PostgreSQL ``synchronous_commit=off``. Consistency is never relaxed, only the wait.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, pool_size=pool_size, max_overflow=pool_size)
        _configure_sqlite(engine, durable=durable)
        return engine
    commit = "on" if durable else "off"
    return sa.create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"options": f"-c synchronous_commit={commit}", "connect_timeout": 5},
    )


def _closed_by_server(connection: Any) -> bool:
    """Whether an idle psycopg connection was closed by the server, asked without a round trip.

    An idle connection has nothing to read unless the server sent something unasked: on a
    shutdown or restart, a FATAL message and the end of the stream. So readable means stale.
    (An asynchronous notice could also be waiting, costing only a reconnect; the gateway does
    not LISTEN.)
    """
    try:
        poller = select.poll()  # not select(): a gateway may hold descriptors past FD_SETSIZE
        poller.register(connection.pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, psycopg.OperationalError):  # closed on our side already
        return True


def _autocommitted(connection: Any, work: Callable[[Any], T]) -> T:
    """``work``'s one flight, committed by the server at its end. The connection leaves
    autocommit again before anyone else can use it (a broken one is dropped by the pool
    instead)."""
    connection.autocommit = True
    try:
        return work(connection)
    finally:
        if not connection.broken:
            connection.autocommit = False


def is_connection_error(exc: BaseException) -> bool:
    """True when the database itself failed (down, disk full, locked), not our statement."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _translate(exc: DBAPIError) -> StorageError:
    if is_connection_error(exc):
        return StorageUnavailable(f"database unavailable: {exc.orig}")
    return StorageError(f"database rejected the write: {exc.orig}")


class PinnedConnection:
    """A pooled connection kept between ``Database.write`` calls by one hot writer (an inbox
    commit slot), saving the pool's checkout and reset on every commit. Only a connection that
    just committed is kept; after any failure it goes back to the pool (or is discarded)."""

    def __init__(self) -> None:
        self._pooled: Any = None

    def take(self) -> Any:
        pooled, self._pooled = self._pooled, None
        return pooled

    def keep(self, pooled: Any) -> bool:
        self._pooled = pooled
        return True

    def release(self) -> None:
        """Return the kept connection to the pool (when the writer stops)."""
        pooled = self.take()
        if pooled is not None:
            pooled.close()


class Database:
    """An engine plus the session factory; the unit of work for all store access."""

    def __init__(self, url: str, *, pool_size: int = 10, durable: bool = True) -> None:
        self.url = url
        self.durable = durable
        self.engine = create_engine(url, pool_size=pool_size, durable=durable)
        dbapi = self.engine.dialect.loaded_dbapi
        self._driver_error: type[Exception] = dbapi.Error
        self._driver_operational_error: type[Exception] = dbapi.OperationalError
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(**{_SQLITE_BEGIN: "DEFERRED"}),
            expire_on_commit=False,
        )
        self._gate: WriterGate | None = None
        if self.dialect == "sqlite":
            self._gate = gate_for(str(Path(self.engine.url.database or ":memory:").resolve()))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """One transaction: commits when the block ends, rolls back if it raises.

        Database failures surface as ``StorageUnavailable`` (or ``StorageError``), so callers that
        must not acknowledge on failure need to catch only our own errors.
        """
        factory = self._read_sessions if readonly else self._sessions
        try:
            with self._writing(not readonly), factory() as session, session.begin():
                yield session
        except DBAPIError as exc:
            raise _translate(exc) from exc

    def _writing(self, writes: bool, *, priority: bool = False) -> AbstractContextManager[None]:
        """On SQLite, queue for this process's writer gate (``writer_gate.py``)."""
        if writes and self._gate is not None:
            return self._gate.held(priority=priority)
        return nullcontext()

    def write(
        self,
        work: Callable[[Any], T],
        *,
        pin: PinnedConnection | None = None,
        one_flight: bool = False,
    ) -> T:
        """Run ``work(driver_connection)`` in one transaction and commit: the hot path for
        durable writes, with no SQLAlchemy statement layer between the caller and the driver.

        If the connection turns out to be dead before the commit was sent (a database restart
        since it was pooled), the work is retried once on a fresh connection: nothing of the first
        attempt can have been committed. A failure during COMMIT itself is never retried, since
        the outcome is unknown; it raises ``StorageUnavailable`` and the caller must not
        acknowledge. With ``pin``, the connection is kept there after a successful commit and
        reused by the next call, instead of going back to the pool.

        ``one_flight``: ``work`` runs exactly one statement, or pipelines its statements and
        ends the pipeline once (psycopg's ``Connection.pipeline``). On PostgreSQL it then runs in
        autocommit mode and the server commits the flight by itself, as one implicit transaction
        ending at the pipeline's Sync: one round trip instead of one per statement plus BEGIN
        and COMMIT, which psycopg sends as statements of their own. The flight *is* the commit,
        so once it was sent it is never retried; a connection the server closed while it sat
        idle (the restart above) is recognised before anything is sent instead, without a round
        trip (``_closed_by_server``), and replaced. ``work`` must read nothing back before the
        flight ends (reading inside a pipeline syncs it, committing what was sent so far).
        SQLite ignores the flag.
        """
        with self._writing(True, priority=True):
            return self._write(work, pin, one_flight=one_flight)

    def _write(
        self, work: Callable[[Any], T], pin: PinnedConnection | None, *, one_flight: bool
    ) -> T:
        autocommit = one_flight and self.dialect == "postgresql"
        for attempt in (1, 2):
            pooled = pin.take() if pin is not None else None
            if pooled is None:
                try:
                    pooled = self.engine.raw_connection()
                except (DBAPIError, self._driver_error) as exc:
                    raise StorageUnavailable(f"database unavailable: {exc}") from exc
            committing = kept = False
            try:
                driver_connection = pooled.driver_connection
                assert driver_connection is not None
                if self.dialect == "sqlite":
                    driver_connection.execute("BEGIN IMMEDIATE")
                elif autocommit and _closed_by_server(driver_connection):
                    self._discard_pool(pooled)
                    if attempt == 1:
                        log.warning("database connection was stale; retrying on a new one")
                        continue
                    raise StorageUnavailable("database unavailable: connection closed")
                if autocommit:
                    committing = True  # the flight is the commit: never sent twice
                    outcome = _autocommitted(driver_connection, work)
                else:
                    outcome = work(driver_connection)
                    committing = True
                    driver_connection.commit()
                if pin is not None:
                    kept = pin.keep(pooled)
                return outcome
            except self._driver_error as exc:
                lost = self._lost_connection(pooled, exc)
                if attempt == 1 and lost and not committing:
                    log.warning("database connection was stale; retrying on a new one")
                    continue
                if lost or isinstance(exc, self._driver_operational_error):
                    raise StorageUnavailable(f"database unavailable: {exc}") from exc
                raise StorageError(f"database rejected the write: {exc}") from exc
            finally:
                if not kept:
                    pooled.close()  # back to the pool, rolled back if the commit was not reached
        raise AssertionError("unreachable")  # pragma: no cover

    def _discard_pool(self, pooled: Any, exc: BaseException | None = None) -> None:
        """Drop a connection found dead, and every idle one of the pool with it: a server
        restart killed them all, and a retry must not be handed another dead one (the pager and
        API share this pool)."""
        pooled.invalidate(exc)
        self.engine.dispose()

    def _lost_connection(self, pooled: Any, exc: Exception) -> bool:
        """Whether a driver error means the connection is gone; if so, drop the pool's
        connections (``_discard_pool``)."""
        dialect = self.engine.dialect
        lost = bool(dialect.is_disconnect(exc, pooled.dbapi_connection, None))  # type: ignore[arg-type]
        if lost:
            self._discard_pool(pooled, exc)
        return lost

    def redoable(self) -> Database:
        """A second handle on the same database whose commits do not wait for the disk
        (``create_engine(durable=False)``), for work that is redone if a crash loses it."""
        return Database(self.url, pool_size=self.engine.pool.size(), durable=False)  # type: ignore[attr-defined]

    def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers a trivial query."""
        with self.session(readonly=True) as session:
            session.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
