"""The database handle: engine set-up per backend and one transaction per use case."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
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


class Retry(Exception):
    """Raised by a use case to have its transaction run again from the start."""


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

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
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
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        self._write_lock = asyncio.Lock()
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
            for pragma in (
                "journal_mode=WAL",
                "synchronous=FULL",
                "foreign_keys=ON",
                "busy_timeout=30000",
            ):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _setup_postgres(self) -> None:
        @event.listens_for(self.engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("SET synchronous_commit TO on")
            cur.close()

    async def transaction(self, use_case: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``use_case`` in one transaction; commit on success, roll back on error.

        The whole use case is run again (from a fresh transaction) on a unique-key race,
        a PostgreSQL serialization failure or deadlock, or a ``Retry``.
        """
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

    async def dispose(self) -> None:
        """Close every connection (the worker threads of aiosqlite included)."""
        await self.engine.dispose()
