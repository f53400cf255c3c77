"""Pending command steps (ad-hoc sessions, chat confirmations) that any process may take."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import upsert
from imserver.store.models import CommandSession


@dataclass(frozen=True)
class SessionRecord:
    """A command's pending step: who may continue it, which command, which step, with
    the arguments given so far (text values)."""

    key: str
    owner: str  # bare JID
    resource: str  # the resource of the full JID that started it ("" for chat)
    node: str
    step: str
    args: dict[str, str]


_COLUMNS = (
    CommandSession.key,
    CommandSession.owner,
    CommandSession.resource,
    CommandSession.node,
    CommandSession.step,
    CommandSession.args,
)


def _record(row: Any) -> SessionRecord:
    """A row of ``_COLUMNS`` (args last, as JSON text) as a record."""
    key, owner, resource, node, step, args = row
    return SessionRecord(key, owner, resource, node, step, dict(json.loads(args)))


async def put(conn: AsyncConnection, record: SessionRecord, expires_at: datetime) -> None:
    """Keep (or replace) a pending step until ``expires_at``."""
    values = {
        "key": record.key,
        "owner": record.owner,
        "resource": record.resource,
        "node": record.node,
        "step": record.step,
        "args": json.dumps(record.args, ensure_ascii=False, sort_keys=True),
        "expires_at": expires_at,
    }
    stmt = upsert(conn, CommandSession).values(**values)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[CommandSession.key],
            set_={k: v for k, v in values.items() if k != "key"},
        )
    )


async def get(conn: AsyncConnection, key: str, now: datetime) -> SessionRecord | None:
    """The pending step under ``key``, unless it expired."""
    row = (
        await conn.execute(
            select(*_COLUMNS).where(CommandSession.key == key, CommandSession.expires_at > now)
        )
    ).first()
    return None if row is None else _record(row)


async def take(conn: AsyncConnection, key: str, now: datetime) -> SessionRecord | None:
    """Remove and return the pending step under ``key`` unless it expired: of two
    processes taking the same step, one gets it."""
    row = (
        await conn.execute(
            delete(CommandSession)
            .where(CommandSession.key == key, CommandSession.expires_at > now)
            .returning(*_COLUMNS)
        )
    ).first()
    return None if row is None else _record(row)


async def drop(conn: AsyncConnection, key: str) -> None:
    """Forget a pending step (finished, cancelled or failed)."""
    await conn.execute(delete(CommandSession).where(CommandSession.key == key))


async def purge(conn: AsyncConnection, now: datetime) -> int:
    """Forget every expired step; returns how many."""
    result = await conn.execute(delete(CommandSession).where(CommandSession.expires_at <= now))
    return int(result.rowcount or 0)
