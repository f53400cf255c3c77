"""The notification outbox: rows written in the transaction that caused them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import bulk_insert, skip_locked
from imserver.store.models import OutboxMessage

_OUTBOX: Table = OutboxMessage.__table__  # type: ignore[assignment]


class ClaimedRow(NamedTuple):
    """A claimed notification as the sender needs it: the payload stays JSON text until
    its message is written (a round holds tens of thousands of them)."""

    id: int
    recipient: str
    payload: str


# One encoder for every row: json.dumps with options builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


async def add(
    conn: AsyncConnection, rows: Sequence[tuple[int, str, dict[str, str]]], now: datetime
) -> None:
    """Queue notifications: (member id, recipient JID, payload of text values)."""
    await bulk_insert(
        conn,
        _OUTBOX,
        ("member_id", "recipient", "payload", "created_at", "sent_at"),
        [
            (member_id, recipient, _ENCODE(payload), now, None)
            for member_id, recipient, payload in rows
        ],
    )


async def claim(conn: AsyncConnection, now: datetime, limit: int) -> list[ClaimedRow]:
    """Take up to ``limit`` unsent rows, oldest first, and mark them sent.

    The caller sends them after this transaction commits: a row is claimed once, so it is
    never sent twice, even by several component processes (PostgreSQL skips rows that
    another process is claiming).
    """
    stmt = (
        select(OutboxMessage.id, OutboxMessage.recipient, OutboxMessage.payload)
        .where(OutboxMessage.sent_at.is_(None))
        .order_by(OutboxMessage.id)
        .limit(limit)
    )
    rows = [ClaimedRow(*row) for row in await conn.execute(skip_locked(conn, stmt))]
    if rows:
        await conn.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([r.id for r in rows]))
            .values(sent_at=now)
        )
    return rows


async def unclaim(conn: AsyncConnection, ids: Sequence[int]) -> None:
    """Give rows back (claimed while the link was down, so never written to it)."""
    if ids:
        await conn.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(list(ids))).values(sent_at=None)
        )


async def unsent_count(conn: AsyncConnection) -> int:
    """How many notifications wait to be sent."""
    stmt = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
    return int((await conn.execute(stmt)).scalar_one())
