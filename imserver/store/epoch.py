"""The chain epoch: a counter that triggers bump whenever cached chains may have changed."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import for_update
from imserver.store.models import ChainEpoch

_READ = select(ChainEpoch.n).where(ChainEpoch.id == 1)


async def read(conn: AsyncConnection) -> int:
    """The current epoch, held until commit.

    On PostgreSQL the row is read FOR SHARE: a writer that bumps it (any change of chains,
    statuses, agents, bots or policy, through the triggers) waits for this transaction, and
    this read waits for a writer that bumped it first, so what a batch reads from its cache
    is what was in force when it commits. SQLite's single writer gives the same for free.
    """
    return int((await conn.execute(for_update(conn, _READ, shared=True))).scalar_one())


async def bump(conn: AsyncConnection) -> None:
    """Move the epoch for a change that no trigger sees (a remote domain's trust): every
    process drops its cached chains before its next batch."""
    await conn.execute(update(ChainEpoch).where(ChainEpoch.id == 1).values(n=ChainEpoch.n + 1))
