"""The database handle: engine set-up per backend and one transaction per use case."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from imserver.store import sqlite_driver

log = logging.getLogger(__name__)
T = TypeVar("T")

# The connection a use case runs on. Services name it by this alias and hand it to the
# stores: they never import SQLAlchemy themselves (an import-linter contract holds it).
Conn = AsyncConnection

# PostgreSQL: serialization failure, deadlock. Both mean "run the use case again".
_PG_RETRY = {"40001", "40P01"}
MAX_ATTEMPTS = 8
# PostgreSQL SQLSTATE classes and codes that mean "the database cannot serve now", not
# "this request is wrong": connection exceptions (08), insufficient resources such as a
# full disk (53), system errors such as I/O (58), and an administrator's or a crash's
# shutdown or a server still starting (57P01-57P03).
_PG_UNAVAILABLE_CLASSES = ("08", "53", "58")
_PG_UNAVAILABLE_CODES = {"57P01", "57P02", "57P03"}
# SQLite reports a full disk and failed I/O through OperationalError's text only
# (SQLITE_FULL, SQLITE_IOERR*, SQLITE_CANTOPEN); a constraint or a syntax error says
# something else and stays what it is.
_SQLITE_UNAVAILABLE = ("database or disk is full", "disk i/o error", "unable to open database")
# Bound on opening a PostgreSQL connection: a database host that does not answer at all
# must give a prompt "unavailable", not a request that hangs for asyncpg's 60 s default.
PG_CONNECT_TIMEOUT = 5.0
# Execution option of a SQLite connection opened by Database.snapshot: its BEGIN is a
# plain (deferred) one, so that a long reader does not hold the one write lock.
_READ_SNAPSHOT = "imserver_read_snapshot"


class Retry(Exception):
    """Raised by a use case to have its transaction run again from the start."""


class Unavailable(Exception):
    """The database cannot be reached or cannot write (stopped, restarting, disk full).

    Raised by :meth:`Database.transaction` instead of the driver's error, so that callers
    can tell "try again later" from a bad request: nothing of the use case was committed
    unless the link broke during the COMMIT itself, and then a request repeated with the
    same id finds what was committed. Never raised for constraint violations or bad input.
    """


def is_unavailable(exc: BaseException, is_sqlite: bool) -> bool:
    """Whether a driver error means the database is out of service (see Unavailable)."""
    if isinstance(exc, OSError):
        # Raised raw by asyncpg while connecting (refused, reset, timed out): SQLAlchemy
        # wraps only errors of the DBAPI module, and the pool opens connections lazily.
        return True
    if not isinstance(exc, DBAPIError) or isinstance(exc, IntegrityError):
        return False
    if exc.connection_invalidated:
        return True  # SQLAlchemy saw a disconnect (and dropped the pool's connections)
    if is_sqlite:
        return any(text in str(exc.orig).lower() for text in _SQLITE_UNAVAILABLE)
    code = _sqlstate(exc)
    return code is not None and (
        code.startswith(_PG_UNAVAILABLE_CLASSES) or code in _PG_UNAVAILABLE_CODES
    )


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    for attr in ("sqlstate", "pgcode"):
        code = getattr(orig, attr, None) or getattr(getattr(orig, "__cause__", None), attr, None)
        if code:
            return str(code)
    return None


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a SQLite database file (SQLite creates the file, not folders)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


class Database:
    """One engine; ``transaction`` runs a use case in a single transaction, retried on races.

    SQLite: WAL, ``synchronous=FULL`` (a committed payment survives a power cut),
    ``BEGIN IMMEDIATE`` so writers queue instead of failing on lock upgrades, and an
    in-process lock so that queued writers do not busy-wait. PostgreSQL: read committed
    with explicit row locks, synchronous commits, retry on serialization failures and
    deadlocks.
    """

    def __init__(self, url: str, *, echo: bool = False, read_only: bool = False) -> None:
        self.url = make_url(url)
        # A reader of someone else's database (the source of ``store/dbcopy``): the
        # database refuses its writes, and a SQLite file keeps its journal mode.
        self.read_only = read_only
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            ensure_sqlite_dir(url)
            kwargs["connect_args"] = {"timeout": 30}
            # One worker-thread trip per statement instead of four (see sqlite_driver).
            kwargs["module"] = sqlite_driver.dbapi()
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 10
            # After a PostgreSQL restart every pooled connection is dead: a ping when a
            # connection is checked out replaces it, so the first requests after the
            # restart succeed instead of failing once per pooled connection. One round
            # trip per transaction, and a payment batch is one transaction
            # (docs/design.md, Outages, has the measurement).
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"timeout": PG_CONNECT_TIMEOUT}
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        self._write_lock = asyncio.Lock()
        # Transactions that failed with Unavailable (the metrics endpoint reports it).
        self.unavailable = 0
        if self.is_sqlite:
            self._setup_sqlite()
        else:
            self._setup_postgres()

    def _setup_sqlite(self) -> None:
        sync_engine = self.engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's BEGIN below, not the driver, open transactions.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            durable = ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON")
            for pragma in (
                *(("query_only=ON",) if self.read_only else durable),
                "busy_timeout=30000",
            ):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            reader = conn.get_execution_options().get(_READ_SNAPSHOT, False)
            conn.exec_driver_sql("BEGIN" if reader else "BEGIN IMMEDIATE")

    def _setup_postgres(self) -> None:
        @event.listens_for(self.engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("SET synchronous_commit TO on")
            if self.read_only:
                cur.execute("SET default_transaction_read_only TO on")
            cur.close()

    async def transaction(self, use_case: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``use_case`` in one transaction; commit on success, roll back on error.

        The whole use case is run again (from a fresh transaction) on a unique-key race,
        a PostgreSQL serialization failure or deadlock, or a ``Retry``. A database that
        is unreachable, shutting down, full or failing its I/O raises ``Unavailable`` at
        once: running again would only hold the caller while the outage lasts.
        """
        try:
            return await self._attempts(use_case)
        except (OSError, DBAPIError) as exc:
            if is_unavailable(exc, self.is_sqlite):
                # The driver's first line only: the rest is the SQL and a link to docs.
                reason = (str(exc).splitlines() or [type(exc).__name__])[0]
                log.warning("database unavailable: %s", reason)
                self.unavailable += 1
                raise Unavailable(reason) from exc
            raise

    async def _attempts(self, use_case: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                if self.is_sqlite:
                    async with self._write_lock, self.engine.begin() as conn:
                        return await use_case(conn)
                async with self.engine.begin() as conn:
                    return await use_case(conn)
            except (IntegrityError, Retry) as exc:
                if attempt == MAX_ATTEMPTS:
                    raise
                log.debug("transaction retry %d after %s", attempt, type(exc).__name__)
            except (OperationalError, DBAPIError) as exc:
                if self.is_sqlite or _sqlstate(exc) not in _PG_RETRY or attempt == MAX_ATTEMPTS:
                    raise
                log.debug("transaction retry %d after sqlstate %s", attempt, _sqlstate(exc))
            await asyncio.sleep(random.uniform(0, 0.005 * attempt))
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """One read transaction that sees a single committed state until it ends, while
        the service goes on writing (for reading a whole database: ``store/dbcopy``).

        SQLite: a deferred BEGIN, whose snapshot is fixed by the first read (made here);
        in WAL mode (a live database) writers are not blocked, and checkpoints cannot
        pass the reader, so the WAL file grows while it lasts; in rollback-journal mode
        writers wait for it to end. PostgreSQL: REPEATABLE READ, READ ONLY.
        """
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                await conn.execution_options(**{_READ_SNAPSHOT: True})
            else:
                await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            async with conn.begin():
                if self.is_sqlite:
                    # SQLite fixes the snapshot at the first read, not at BEGIN.
                    await conn.exec_driver_sql("SELECT count(*) FROM sqlite_master")
                yield conn

    async def dispose(self) -> None:
        """Close every connection (the worker threads of aiosqlite included)."""
        await self.engine.dispose()
