"""A snapshot of every table, to assert that a refused request wrote nothing (or that a
copy on the other backend holds the same rows: ``imserver db copy``)."""

from __future__ import annotations

from sqlalchemy import MetaData, select

from imserver.store.db import Database
from imserver.store.dbcopy import portable

Snapshot = dict[str, list[tuple[str, ...]]]


async def snapshot(db: Database, *, skip: frozenset[str] = frozenset()) -> Snapshot:
    """Every row of every table (reflected, so tables added later are included), sorted."""
    meta = MetaData()
    async with db.engine.connect() as conn:
        await conn.run_sync(meta.reflect)
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
