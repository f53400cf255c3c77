"""The few statements whose SQL differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.models import Base


def upsert(conn: AsyncConnection, model: type[Base]) -> Any:
    """An INSERT that supports ``on_conflict_do_update`` on the connection's backend."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def for_update(conn: AsyncConnection, stmt: Any, *, shared: bool = False) -> Any:
    """Lock the selected rows until commit (SQLite's BEGIN IMMEDIATE already serialises).

    ``shared`` takes FOR SHARE: it keeps the row from changing (a concurrent termination
    waits) without blocking the key-share locks that foreign keys to it take.
    """
    if conn.dialect.name != "postgresql":
        return stmt
    return stmt.with_for_update(read=shared)
