"""Stored policy versions."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.domain.policy import Policy
from imserver.store.models import PolicyVersion


async def latest(conn: AsyncConnection) -> tuple[int, Policy] | None:
    """The newest policy version, if any was stored."""
    row = (
        await conn.execute(
            select(PolicyVersion.version, PolicyVersion.body)
            .order_by(PolicyVersion.version.desc())
            .limit(1)
        )
    ).first()
    return (row[0], Policy.from_dict(json.loads(row[1]))) if row else None


async def get(conn: AsyncConnection, version: int) -> Policy | None:
    """One stored version."""
    body = (
        await conn.execute(select(PolicyVersion.body).where(PolicyVersion.version == version))
    ).scalar_one_or_none()
    return Policy.from_dict(json.loads(body)) if body else None


async def add(conn: AsyncConnection, policy: Policy, by: str, now: datetime) -> int:
    """Store a new version (the next number) and return it."""
    top = (await conn.execute(select(func.max(PolicyVersion.version)))).scalar_one_or_none()
    version = (top or 0) + 1
    await conn.execute(
        insert(PolicyVersion).values(
            version=version, body=json.dumps(policy.as_dict()), created_at=now, created_by=by
        )
    )
    return version
