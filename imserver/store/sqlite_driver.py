"""aiosqlite with one thread hop per statement instead of four.

SQLAlchemy's aiosqlite adapter crosses to aiosqlite's worker thread and back to create a
cursor, to execute, to fetch the rows and to close the cursor: four round trips per
statement, each a cross-thread wake-up of the event loop. A payment runs about sixteen
statements while it holds the SQLite write lock, so those wake-ups, not SQLite, set the
rate (py-spy on bench/bench_payments.py: the event loop sat idle for most of a payment).
Here one function on the worker thread creates the cursor, executes, fetches every row
and closes the cursor; SQLAlchemy then reads the buffered rows without crossing again.

Only the cursor changes: the connection, its worker thread, commit, rollback and the
exceptions (sqlite3's own) are aiosqlite's, and SQLAlchemy's async engine, events and
pool work as before. The worker thread runs the function through aiosqlite's queue
(``Connection._execute``), the same private door SQLAlchemy's adapter already uses for
``isolation_level``; :mod:`imserver.store.compat` pins the versions and names relied on.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

from imserver.store.compat import verify_aiosqlite

_Result = tuple[Any, list[Any], int, int | None]


class OneHopCursor:
    """An aiosqlite-like cursor whose ``execute`` is one trip to the worker thread.

    The rows are fetched in that trip (SQLAlchemy buffers them all anyway: the adapter's
    non-streaming cursor calls ``fetchall`` right after ``execute``), so ``rowcount`` is
    also final for ``INSERT … RETURNING``.
    """

    __slots__ = ("_aio", "_rows", "arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, aio: aiosqlite.Connection) -> None:
        self._aio = aio
        self.arraysize = 1
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: deque[Any] = deque()

    async def __aenter__(self) -> OneHopCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.close()

    def _store(self, result: _Result) -> OneHopCursor:
        self.description, rows, self.rowcount, self.lastrowid = result
        self._rows = deque(rows)
        return self

    async def execute(self, sql: str, parameters: Any = None) -> OneHopCursor:
        conn = self._aio._conn

        def run() -> _Result:
            cur = conn.cursor()
            try:
                cur.execute(sql) if parameters is None else cur.execute(sql, parameters)
                rows = cur.fetchall() if cur.description else []
                return cur.description, rows, cur.rowcount, cur.lastrowid
            finally:
                cur.close()

        return self._store(await self._aio._execute(run))  # type: ignore[no-untyped-call]

    async def executemany(self, sql: str, seq_of_parameters: Sequence[Any]) -> OneHopCursor:
        conn = self._aio._conn

        def run() -> _Result:
            cur = conn.cursor()
            try:
                cur.executemany(sql, seq_of_parameters)
                return cur.description, [], cur.rowcount, cur.lastrowid
            finally:
                cur.close()

        return self._store(await self._aio._execute(run))  # type: ignore[no-untyped-call]

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        n = self.arraysize if size is None else size
        return [self._rows.popleft() for _ in range(min(n, len(self._rows)))]

    async def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def close(self) -> None:
        """Nothing to release: the sqlite3 cursor was closed on the worker thread."""
        self._rows.clear()

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *_sizes: Any) -> None:
        return None

    def setoutputsize(self, *_args: Any) -> None:
        return None


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()
    # OneHopCursor.close is synchronous (and free): no trip for it either.
    _awaitable_cursor_close = False

    def _make_new_cursor(self, connection: Any) -> Any:
        return OneHopCursor(connection)


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _Cursor


class OneHopDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module handed to ``create_async_engine(module=…)`` for SQLite."""

    def connect(self, *arg: Any, **kw: Any) -> _Connection:
        adapted = super().connect(*arg, **kw)
        return _Connection(self, adapted._connection)


def dbapi() -> OneHopDbapi:
    """A fresh DBAPI module object (one per engine, as SQLAlchemy's own)."""
    verify_aiosqlite()  # the private names below must still be where they were
    return OneHopDbapi(aiosqlite, sqlite3)
