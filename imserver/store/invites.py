"""Registrations per invite.

An invite is a member's rule number; a registration through it (by code or by JID)
makes a user whose ``original_referrer_id`` is that member, and that binding never
changes afterwards (repair and reassignment move ``referrer_id`` only). Merchants that an
admin placed under a referrer are not registrations: only users are counted (the role a
registration makes, and a member's role never changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from imserver.store.models import Member

REGISTERED_ROLE = "user"
_JOINED = aliased(Member, name="joined")


@dataclass(frozen=True)
class InviteCount:
    """The registrations through one member's invite."""

    member_id: int
    jid: str
    rule_number: str
    role: str
    name: str | None
    status: str
    registrations: int
    active: int  # of them, still active
    last_at: datetime | None


_COUNTS = (
    func.count(_JOINED.id),
    func.coalesce(func.sum(case((_JOINED.status == "active", 1), else_=0)), 0),
    func.max(_JOINED.created_at),
)
_INVITER = (Member.id, Member.jid, Member.rule_number, Member.role, Member.name, Member.status)


async def count_for(conn: AsyncConnection, member_id: int) -> tuple[int, int, datetime | None]:
    """(registrations, still active, last registration) through a member's invite."""
    stmt = select(*_COUNTS).where(
        _JOINED.original_referrer_id == member_id, _JOINED.role == REGISTERED_ROLE
    )
    total, active, last = (await conn.execute(stmt)).one()
    return int(total), int(active), last


async def top(conn: AsyncConnection, limit: int) -> tuple[list[InviteCount], int]:
    """The invites with the most registrations (ties: the older rule number first), and
    the registrations through any invite."""
    stmt = (
        select(*_INVITER, *_COUNTS)
        .join(_JOINED, _JOINED.original_referrer_id == Member.id)
        .where(_JOINED.role == REGISTERED_ROLE)
        .group_by(*_INVITER)
        .order_by(func.count(_JOINED.id).desc(), Member.id)
        .limit(limit)
    )
    rows = [
        InviteCount(mid, jid, rule, role, name, status, int(n), int(active), last)
        for mid, jid, rule, role, name, status, n, active, last in await conn.execute(stmt)
    ]
    everyone = select(func.count()).where(
        Member.original_referrer_id.is_not(None), Member.role == REGISTERED_ROLE
    )
    return rows, int((await conn.execute(everyone)).scalar() or 0)
