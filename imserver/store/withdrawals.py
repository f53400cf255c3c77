"""Withdrawal requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import for_update
from imserver.store.models import Member, Withdrawal


@dataclass(frozen=True)
class WithdrawalRecord:
    id: int
    member_id: int
    jid: str
    ref: str | None
    amount: int
    currency: str
    status: str
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    reason: str | None


_COLS = (
    Withdrawal.id,
    Withdrawal.member_id,
    Member.jid,
    Withdrawal.ref,
    Withdrawal.amount,
    Withdrawal.currency,
    Withdrawal.status,
    Withdrawal.created_at,
    Withdrawal.decided_at,
    Withdrawal.decided_by,
    Withdrawal.reason,
)


async def get(
    conn: AsyncConnection, withdrawal_id: int, *, lock: bool = False
) -> WithdrawalRecord | None:
    """One withdrawal (its row locked for update when asked)."""
    stmt = select(*_COLS).join(Member, Member.id == Withdrawal.member_id)
    stmt = stmt.where(Withdrawal.id == withdrawal_id)
    if lock:
        stmt = for_update(conn, stmt, of=Withdrawal)
    row = (await conn.execute(stmt)).first()
    return WithdrawalRecord(*row) if row else None


async def find_by_ref(conn: AsyncConnection, member_id: int, ref: str) -> WithdrawalRecord | None:
    """A member's withdrawal by the member's own idempotency key."""
    stmt = (
        select(*_COLS)
        .join(Member, Member.id == Withdrawal.member_id)
        .where(Withdrawal.member_id == member_id, Withdrawal.ref == ref)
    )
    row = (await conn.execute(stmt)).first()
    return WithdrawalRecord(*row) if row else None


async def insert_withdrawal(
    conn: AsyncConnection,
    *,
    member_id: int,
    ref: str | None,
    amount: int,
    currency: str,
    now: datetime,
) -> int:
    """A new pending withdrawal."""
    stmt = (
        insert(Withdrawal)
        .values(
            member_id=member_id,
            ref=ref,
            amount=amount,
            currency=currency,
            status="pending",
            created_at=now,
        )
        .returning(Withdrawal.id)
    )
    return int((await conn.execute(stmt)).scalar_one())


async def decide(
    conn: AsyncConnection,
    withdrawal_id: int,
    *,
    status: str,
    by: str,
    reason: str | None,
    now: datetime,
) -> bool:
    """Approve or reject a pending withdrawal; False when it was no longer pending."""
    stmt = (
        update(Withdrawal)
        .where(Withdrawal.id == withdrawal_id, Withdrawal.status == "pending")
        .values(status=status, decided_at=now, decided_by=by, reason=reason)
    )
    return bool((await conn.execute(stmt)).rowcount)


async def listing(
    conn: AsyncConnection, *, member_id: int | None, status: str | None, limit: int
) -> list[WithdrawalRecord]:
    """Withdrawals, oldest first: of one member or of everyone, of one status or any."""
    stmt = select(*_COLS).join(Member, Member.id == Withdrawal.member_id)
    if member_id is not None:
        stmt = stmt.where(Withdrawal.member_id == member_id)
    if status is not None:
        stmt = stmt.where(Withdrawal.status == status)
    rows = await conn.execute(stmt.order_by(Withdrawal.id).limit(limit))
    return [WithdrawalRecord(*row) for row in rows]
