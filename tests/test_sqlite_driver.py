"""The one-hop SQLite cursor (imserver.store.sqlite_driver) behaves as aiosqlite's does.

No server needed: a Database on a temporary file, the statements the stores use.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.db import Database


async def test_statements_rows_rowcount_and_errors(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'd.sqlite3'}")
    try:

        async def setup(conn: AsyncConnection) -> None:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))

        await db.transaction(setup)

        async def work(conn: AsyncConnection) -> tuple[list[int], int, int, list[str]]:
            ids = list(
                (
                    await conn.execute(
                        text("INSERT INTO t (v) VALUES ('a'), ('b'), ('c') RETURNING id")
                    )
                ).scalars()
            )
            await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "d"}, {"v": "e"}])
            changed = (await conn.execute(text("UPDATE t SET v = v || '!' WHERE id > 1"))).rowcount
            count = (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()
            values = list((await conn.execute(text("SELECT v FROM t ORDER BY id"))).scalars())
            return ids, changed, count, values

        ids, changed, count, values = await db.transaction(work)
        assert ids == [1, 2, 3]
        assert (changed, count) == (4, 5)
        assert values == ["a", "b!", "c!", "d!", "e!"]

        async def duplicate(conn: AsyncConnection) -> None:
            await conn.execute(text("INSERT INTO t (v) VALUES ('zz')"))
            await conn.execute(text("INSERT INTO t (v) VALUES ('a')"))

        attempts = 0

        async def counted(conn: AsyncConnection) -> None:
            nonlocal attempts
            attempts += 1
            await duplicate(conn)

        # A unique-key race is retried, then raised: and nothing of it was committed.
        with pytest.raises(IntegrityError):
            await db.transaction(counted)
        assert attempts > 1

        async def zz(conn: AsyncConnection) -> int:
            return int(
                (await conn.execute(text("SELECT count(*) FROM t WHERE v = 'zz'"))).scalar_one()
            )

        assert await db.transaction(zz) == 0
    finally:
        await db.dispose()


async def test_statements_run_on_the_worker_thread(tmp_path: Path) -> None:
    """The sqlite3 connection is only touched on aiosqlite's thread (check_same_thread)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'd.sqlite3'}")
    try:

        async def where(conn: AsyncConnection) -> str:
            raw = (await conn.get_raw_connection()).driver_connection
            seen: list[str] = []

            def probe() -> None:
                seen.append(threading.current_thread().name)

            await raw._execute(probe)  # the same door sqlite_driver uses
            await conn.execute(text("SELECT 1"))
            return seen[0]

        assert await db.transaction(where) != threading.current_thread().name
    finally:
        await db.dispose()
