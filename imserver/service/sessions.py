"""Pending command steps kept in the database, so that the next step of an ad-hoc
command or a chat confirmation may reach any process (several behind ejabberd) or the
same process after a restart."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

from imserver.service.context import Context
from imserver.store import sessions
from imserver.store.db import Conn
from imserver.store.sessions import SessionRecord

__all__ = ["SessionRecord", "Sessions"]


class Sessions:
    """Keep, find, take and drop pending steps; expired ones are never returned."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def keep(self, record: SessionRecord, ttl: float) -> None:
        """Keep ``record`` for ``ttl`` seconds (replacing one under the same key); the
        expired ones of everybody are purged on the way."""
        now = self.ctx.clock()

        async def run(conn: Conn) -> None:
            await sessions.purge(conn, now)
            await sessions.put(conn, record, now + timedelta(seconds=ttl))

        await self.ctx.db.transaction(run)

    async def find(self, key: str) -> SessionRecord | None:
        """The pending step under ``key``, if it has not expired."""
        return await self.ctx.db.transaction(partial(_get, key, self.ctx.clock()))

    async def take(self, key: str) -> SessionRecord | None:
        """Remove and return the pending step under ``key``: only one taker gets it."""
        return await self.ctx.db.transaction(partial(_take, key, self.ctx.clock()))

    async def drop(self, key: str) -> None:
        """Forget the step under ``key`` (finished, cancelled or failed)."""
        await self.ctx.db.transaction(partial(_drop, key))


async def _get(key: str, now: datetime, conn: Conn) -> SessionRecord | None:
    return await sessions.get(conn, key, now)


async def _take(key: str, now: datetime, conn: Conn) -> SessionRecord | None:
    return await sessions.take(conn, key, now)


async def _drop(key: str, conn: Conn) -> None:
    await sessions.drop(conn, key)
