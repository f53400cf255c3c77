"""Read-only queries behind the human interface: overviews, listings and counts.

Every query is set-based and bounded (counts with GROUP BY, listings with LIMIT), so an
overview costs the same whatever the size of the network.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from imserver.store.members import _MEMBER_COLS, _record
from imserver.store.models import (
    AgencyLink,
    Agent,
    Bot,
    Member,
    Payment,
    PaymentShare,
    Refund,
    Region,
)
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


@dataclass(frozen=True)
class SaleRecord:
    """A payment, or a refund (``payment_ref`` set), of a merchant."""

    at: datetime
    ref: str
    amount: int  # positive; a refund's amount is what it gave back
    currency: str
    payer: str | None
    payment_ref: str | None = None


async def merchant_sales(
    conn: AsyncConnection, merchant_id: int, start: datetime, end: datetime, *, limit: int
) -> tuple[list[SaleRecord], list[SaleRecord]]:
    """A merchant's payments and refunds in [start, end), oldest first, ``limit`` each."""
    payer = aliased(Member)
    pay_stmt = (
        select(Payment.created_at, Payment.ref, Payment.amount, Payment.currency, payer.jid)
        .join(payer, payer.id == Payment.payer_id)
        .where(
            Payment.merchant_id == merchant_id,
            Payment.created_at >= start,
            Payment.created_at < end,
        )
        .order_by(Payment.created_at, Payment.id)
        .limit(limit)
    )
    refund_stmt = (
        select(
            Refund.created_at,
            Refund.ref,
            Refund.amount,
            Payment.currency,
            payer.jid,
            Payment.ref,
        )
        .join(Payment, Payment.id == Refund.payment_id)
        .join(payer, payer.id == Payment.payer_id)
        .where(
            Refund.merchant_id == merchant_id,
            Refund.created_at >= start,
            Refund.created_at < end,
        )
        .order_by(Refund.created_at, Refund.id)
        .limit(limit)
    )
    payments = [SaleRecord(*row) for row in await conn.execute(pay_stmt)]
    refunds = [SaleRecord(*row) for row in await conn.execute(refund_stmt)]
    return payments, refunds


async def payment_volume(
    conn: AsyncConnection,
    region_code: str | None = None,
    *,
    merchant_ids: Collection[int] | None = None,
) -> dict[str, tuple[int, int, int]]:
    """Per currency: (payments, amount paid, amount refunded), network-wide, for the
    merchants inside one region, or for the given merchants."""
    stmt = select(
        Payment.currency, func.count(), func.sum(Payment.amount), func.sum(Payment.refunded)
    ).group_by(Payment.currency)
    if region_code is not None:
        inside = select(AgencyLink.member_id).where(AgencyLink.region_code == region_code)
        stmt = stmt.where(Payment.merchant_id.in_(inside))
    if merchant_ids is not None:
        stmt = stmt.where(Payment.merchant_id.in_(list(merchant_ids)))
    return {
        currency: (int(n), int(paid or 0), int(refunded or 0))
        for currency, n, paid, refunded in await conn.execute(stmt)
    }


async def agent_earnings(
    conn: AsyncConnection, agent_id: int, region_code: str
) -> dict[str, tuple[int, int]]:
    """Per currency: (payments, net amount earned) of an agent's agent shares paid by the
    members of one region (refunds deducted)."""
    payers = select(AgencyLink.member_id).where(AgencyLink.region_code == region_code)
    stmt = (
        select(
            Payment.currency,
            func.count(distinct(Payment.id)),
            func.sum(PaymentShare.amount - PaymentShare.refunded),
        )
        .join(PaymentShare, PaymentShare.payment_id == Payment.id)
        .where(
            PaymentShare.role == "agent",
            PaymentShare.member_id == agent_id,
            Payment.payer_id.in_(payers),
        )
        .group_by(Payment.currency)
    )
    return {
        currency: (int(n), int(earned or 0)) for currency, n, earned in await conn.execute(stmt)
    }


async def refund_count(conn: AsyncConnection, merchant_ids: Collection[int]) -> int:
    """How many refunds these merchants made."""
    stmt = select(func.count()).where(Refund.merchant_id.in_(list(merchant_ids)))
    return int((await conn.execute(stmt)).scalar_one())


@dataclass(frozen=True)
class EarnedRecord:
    """What one beneficiary earned at one place of the split, refunds deducted."""

    role: str  # referrer | agent | platform | merchant
    level: int | None
    scope: str | None
    member_id: int | None  # None: the platform
    net: int


async def earned_by(
    conn: AsyncConnection, merchant_ids: Collection[int], currency: str
) -> list[EarnedRecord]:
    """Net shares of the payments to these merchants, per role, level, scope and member."""
    stmt = (
        select(
            PaymentShare.role,
            PaymentShare.level,
            PaymentShare.scope,
            PaymentShare.member_id,
            func.sum(PaymentShare.amount - PaymentShare.refunded),
        )
        .join(Payment, Payment.id == PaymentShare.payment_id)
        .where(Payment.merchant_id.in_(list(merchant_ids)), Payment.currency == currency)
        .group_by(PaymentShare.role, PaymentShare.level, PaymentShare.scope, PaymentShare.member_id)
    )
    return [
        EarnedRecord(role, level, scope, member_id, int(net or 0))
        for role, level, scope, member_id, net in await conn.execute(stmt)
    ]
