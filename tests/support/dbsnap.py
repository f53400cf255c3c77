"""A snapshot of every table, to assert that a refused request wrote nothing (or that a
copy on the other backend holds the same rows: ``imserver db copy``)."""

from __future__ import annotations

import weakref

from sqlalchemy import Connection, MetaData, inspect, select
from sqlalchemy.engine import Engine

from imserver.store.db import Database
from imserver.store.dbcopy import portable

Snapshot = dict[str, list[tuple[str, ...]]]

# The reflected tables of each engine, with the table names they were reflected from.
# Reflecting costs dozens of catalogue queries, most of a snapshot's time (the hostile
# inputs and the authorization matrix take two snapshots per request); the names are one
# query, so a table added or dropped since (a migration) is still reflected anew.
_reflected: weakref.WeakKeyDictionary[Engine, tuple[list[str], MetaData]] = (
    weakref.WeakKeyDictionary()
)


def _tables(conn: Connection) -> MetaData:
    names = sorted(inspect(conn).get_table_names())
    cached = _reflected.get(conn.engine)
    if cached is not None and cached[0] == names:
        return cached[1]
    meta = MetaData()
    meta.reflect(conn)
    _reflected[conn.engine] = (names, meta)
    return meta


async def snapshot(db: Database, *, skip: frozenset[str] = frozenset()) -> Snapshot:
    """Every row of every table (reflected, so tables added later are included), sorted."""
    async with db.engine.connect() as conn:
        meta = await conn.run_sync(_tables)
        out: Snapshot = {}
        for table in meta.sorted_tables:
            if table.name in skip or table.name == "alembic_version":
                continue
            rows = (await conn.execute(select(table))).all()
            out[table.name] = sorted(tuple(repr(portable(v)) for v in row) for row in rows)
        return out


def diff(before: Snapshot, after: Snapshot) -> dict[str, tuple[int, int]]:
    """Tables whose rows changed: name -> (rows before, rows after)."""
    names = set(before) | set(after)
    return {
        n: (len(before.get(n, [])), len(after.get(n, [])))
        for n in sorted(names)
        if before.get(n) != after.get(n)
    }
