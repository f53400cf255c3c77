"""The audit log of admin actions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.models import AuditEntry


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    reason: str | None


async def record(
    conn: AsyncConnection,
    *,
    at: datetime,
    actor: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    """Append one entry, in the caller's transaction (so it exists iff the action does)."""
    await conn.execute(
        insert(AuditEntry).values(
            at=at,
            actor=actor,
            action=action,
            target=target,
            details=json.dumps(details, ensure_ascii=False, sort_keys=True) if details else None,
            reason=reason,
        )
    )


async def recent(
    conn: AsyncConnection, *, limit: int = 50, before_id: int | None = None
) -> list[AuditRecord]:
    """Newest entries first, ``limit`` at most, older than ``before_id`` when given."""
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    rows = (await conn.execute(stmt)).all()
    return [
        AuditRecord(
            r.id,
            r.at,
            r.actor,
            r.action,
            r.target,
            json.loads(r.details) if r.details else {},
            r.reason,
        )
        for r in rows
    ]
