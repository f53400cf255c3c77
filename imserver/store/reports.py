"""Read-only queries behind the human interface: overviews, listings and counts.

Every query is set-based and bounded (counts with GROUP BY, listings with LIMIT), so an
overview costs the same whatever the size of the network.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.members import _MEMBER_COLS, _record
from imserver.store.models import AgencyLink, Agent, Bot, Member, Region
from imserver.store.records import MemberRecord, RegionRecord

_REGION_COLS = (Region.code, Region.name, Region.level, Region.parent_code, Region.successor_code)


async def children(conn: AsyncConnection, code: str, *, limit: int = 100) -> list[RegionRecord]:
    """The live (not retired) sub-regions of a region, by code."""
    stmt = (
        select(*_REGION_COLS)
        .where(Region.parent_code == code, Region.successor_code.is_(None))
        .order_by(Region.code)
        .limit(limit)
    )
    return [RegionRecord(*row) for row in await conn.execute(stmt)]


async def agent_jids(conn: AsyncConnection, codes: Sequence[str]) -> dict[str, str]:
    """The JID of the active agent of each of these regions that has one."""
    if not codes:
        return {}
    stmt = (
        select(Agent.region_code, Member.jid)
        .join(Member, Member.id == Agent.member_id)
        .where(Agent.region_code.in_(codes))
    )
    return {code: jid for code, jid in await conn.execute(stmt)}


async def active_members_in(conn: AsyncConnection, codes: Sequence[str]) -> dict[str, int]:
    """How many active members each region holds (its sub-regions included).

    A member's stored agency chain has one row per level of its region's line, so the
    rows naming a region are exactly the members inside it.
    """
    if not codes:
        return {}
    stmt = (
        select(AgencyLink.region_code, func.count(distinct(AgencyLink.member_id)))
        .join(Member, Member.id == AgencyLink.member_id)
        .where(AgencyLink.region_code.in_(codes), Member.status == "active")
        .group_by(AgencyLink.region_code)
    )
    counts = {code: int(n) for code, n in await conn.execute(stmt)}
    return {code: counts.get(code, 0) for code in codes}


async def members_in(
    conn: AsyncConnection, code: str, *, limit: int, offset: int = 0
) -> tuple[list[MemberRecord], int]:
    """A page of the active members inside a region, by rule number, and their total."""
    inside = (
        select(AgencyLink.member_id)
        .where(AgencyLink.region_code == code)
        .distinct()
        .scalar_subquery()
    )
    where = (Member.id.in_(inside), Member.status == "active")
    stmt = (
        select(*_MEMBER_COLS).where(*where).order_by(Member.rule_number).limit(limit).offset(offset)
    )
    rows = [_record(row) for row in await conn.execute(stmt)]
    total = (await conn.execute(select(func.count()).select_from(Member).where(*where))).scalar()
    return rows, int(total or 0)


async def direct_referrals(conn: AsyncConnection, member_id: int) -> int:
    """How many active members this member referred directly (after any repair)."""
    stmt = select(func.count()).where(Member.referrer_id == member_id, Member.status == "active")
    return int((await conn.execute(stmt)).scalar() or 0)


async def members_by_role_status(conn: AsyncConnection) -> dict[tuple[str, str], int]:
    """Member counts per (role, status)."""
    stmt = select(Member.role, Member.status, func.count()).group_by(Member.role, Member.status)
    return {(role, status): int(n) for role, status, n in await conn.execute(stmt)}


async def agent_count(conn: AsyncConnection) -> int:
    """How many regions have an active agent."""
    return int((await conn.execute(select(func.count()).select_from(Agent))).scalar() or 0)


async def bot_count(conn: AsyncConnection) -> int:
    """How many bot JIDs are linked to merchants."""
    return int((await conn.execute(select(func.count()).select_from(Bot))).scalar() or 0)
