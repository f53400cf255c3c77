"""Statements built once per process, and their variants per dialect.

Building a Core statement on every call (coercing its expressions, computing its cache
key, adapting its result columns) cost more CPU than running it: the hot paths execute
module-level statements with ``bindparam`` placeholders and a parameter dict instead.
What depends on the dialect (row locks, upserts) is built on first use per dialect name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import for_update

# (builder or statement, dialect name, variant) -> the statement to execute
_BUILT: dict[tuple[object, str, object], Any] = {}


def per_dialect(conn: AsyncConnection, build: Callable[[AsyncConnection], Any]) -> Any:
    """``build(conn)``, called once per dialect name (``build`` is a module-level function)."""
    key = (build, conn.dialect.name, None)
    found = _BUILT.get(key)
    if found is None:
        found = _BUILT[key] = build(conn)
    return found


def locked(conn: AsyncConnection, stmt: Any, *, shared: bool = False) -> Any:
    """``dialect.for_update(conn, stmt, shared=shared)`` for a statement built once."""
    key = (stmt, conn.dialect.name, shared)
    found = _BUILT.get(key)
    if found is None:
        found = _BUILT[key] = for_update(conn, stmt, shared=shared)
    return found
