"""The few statements whose SQL differs between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, any_, bindparam, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.models import Base


def utc(at: datetime | None) -> datetime | None:
    """A timestamp as read back, in UTC: SQLite gives them without their zone (they were
    written in UTC)."""
    return at if at is None or at.tzinfo else at.replace(tzinfo=UTC)


def upsert(conn: AsyncConnection, model: type[Base]) -> Any:
    """An INSERT that supports ``on_conflict_do_update`` on the connection's backend."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def takes_row_locks(conn: AsyncConnection) -> bool:
    """Whether the backend needs row locks: PostgreSQL does; SQLite's BEGIN IMMEDIATE
    holds the only write lock of the database for the whole transaction, so a use case
    on SQLite can neither be overtaken nor read anything that changes under it."""
    return bool(conn.dialect.name == "postgresql")


def for_update(conn: AsyncConnection, stmt: Any, *, shared: bool = False, of: Any = None) -> Any:
    """Lock the selected rows until commit (SQLite's BEGIN IMMEDIATE already serialises).

    ``shared`` takes FOR SHARE: it keeps the row from changing (a concurrent termination
    waits) without blocking the key-share locks that foreign keys to it take. ``of``
    limits the lock to one table of a join.
    """
    if not takes_row_locks(conn):
        return stmt
    return stmt.with_for_update(read=shared, of=of)


def skip_locked(conn: AsyncConnection, stmt: Any) -> Any:
    """Lock the selected rows, skipping those another transaction holds: several
    processes share a queue (outbox, settlement) instead of waiting for each other."""
    if not takes_row_locks(conn):
        return stmt
    return stmt.with_for_update(skip_locked=True)


def ids_in(conn: AsyncConnection, column: Any, ids: Any) -> Any:
    """``column IN (subquery)``, written so that each backend's planner probes an index.

    PostgreSQL gets ``= ANY(ARRAY(subquery))``: the ids are computed first, then probed
    through the key. Written as IN or a join, it prefers a scan of the whole table as
    soon as a few thousand rows qualify (measured in bench/bench_repair.py).
    """
    if conn.dialect.name == "postgresql":
        return column == any_(func.array(ids.scalar_subquery()))
    return column.in_(ids)


# (dialect name, table, columns) -> (SQL, bind processors in column order)
_BULK: dict[tuple[str, str, tuple[str, ...]], tuple[str, list[Any]]] = {}


def _bulk_statement(conn: AsyncConnection, table: Table, columns: tuple[str, ...]) -> Any:
    key = (conn.dialect.name, table.name, columns)
    found = _BULK.get(key)
    if found is None:
        dialect = conn.dialect
        stmt = insert(table).values({c: bindparam(c) for c in columns}).inline()
        compiled = stmt.compile(dialect=dialect)
        assert list(compiled.positiontup or ()) == list(columns)
        types = [table.c[c].type.dialect_impl(dialect) for c in columns]
        processors = [t.bind_processor(dialect) for t in types]
        found = _BULK[key] = (str(compiled), processors)
    return found


async def bulk_insert(
    conn: AsyncConnection, table: Table, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert many rows with one ``executemany`` of a statement compiled once per dialect.

    The hot path of payments writes thousands of rows per batch: building, caching and
    processing a Core statement cost about 10 us a row, the driver's own executemany
    about 1. Values go through the columns' bind processors (SQLite stores datetimes as
    text), so what is written is what the ORM would write.
    """
    if not rows:
        return
    sql, processors = _bulk_statement(conn, table, columns)
    active: list[tuple[int, Any, dict[Any, Any]]] = [
        (i, p, {}) for i, p in enumerate(processors) if p is not None
    ]
    if active:
        converted = []
        for row in rows:
            values = list(row)
            for i, process, seen in active:
                # The rows of a batch share their timestamps: convert each value once.
                value = values[i]
                if value not in seen:
                    seen[value] = process(value)
                values[i] = seen[value]
            converted.append(tuple(values))
        rows = converted
    await conn.exec_driver_sql(sql, list(rows))


async def reserve_ids(conn: AsyncConnection, table: Table, count: int) -> list[int]:
    """Ids for ``count`` new rows of ``table``, taken before the insert (so that a bulk
    insert needs no RETURNING).

    PostgreSQL: the column's sequence, safe with any number of processes. SQLite: the
    next ids after the largest, safe because the transaction holds the database's only
    write lock (BEGIN IMMEDIATE) until it commits.
    """
    if count <= 0:
        return []
    pk = table.c.id
    if conn.dialect.name == "postgresql":
        stmt = text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)")
        found = await conn.execute(stmt, {"t": table.name, "n": count})
        return [int(i) for i in found.scalars()]
    top = (await conn.execute(select(func.coalesce(func.max(pk), 0)))).scalar_one()
    return list(range(int(top) + 1, int(top) + 1 + count))
