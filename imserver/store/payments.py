"""Payments, their share snapshots, refunds and the settlement queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import for_update
from imserver.store.models import Member, Payment, PaymentShare, Refund, RefundShare

# Inserts go through the Core tables: the ORM's bookkeeping for an INSERT of the mapped
# class cost more than the statement on every payment.
_PAYMENT: Table = Payment.__table__  # type: ignore[assignment]
_SHARE: Table = PaymentShare.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class PaymentRecord:
    id: int
    merchant_id: int
    ref: str
    payer_id: int
    amount: int
    currency: str
    policy_version: int
    refunded: int
    created_at: datetime
    settle_at: datetime
    settled_at: datetime | None


@dataclass(frozen=True)
class ShareRecord:
    """A stored share, with the beneficiary's JID (None for the platform)."""

    seq: int
    role: str
    level: int | None
    scope: str | None
    member_id: int | None
    jid: str | None
    amount: int
    refunded: int


@dataclass(frozen=True)
class RefundRecord:
    id: int
    merchant_id: int
    ref: str
    payment_id: int
    amount: int
    created_at: datetime


_PAYMENT_COLS = (
    Payment.id,
    Payment.merchant_id,
    Payment.ref,
    Payment.payer_id,
    Payment.amount,
    Payment.currency,
    Payment.policy_version,
    Payment.refunded,
    Payment.created_at,
    Payment.settle_at,
    Payment.settled_at,
)


async def find_payment(
    conn: AsyncConnection, merchant_id: int, ref: str, *, lock: bool = False
) -> PaymentRecord | None:
    """The merchant's payment with this id (locked for update when asked)."""
    stmt = select(*_PAYMENT_COLS).where(Payment.merchant_id == merchant_id, Payment.ref == ref)
    row = (await conn.execute(for_update(conn, stmt) if lock else stmt)).first()
    return PaymentRecord(*row) if row else None


async def get_payment(conn: AsyncConnection, payment_id: int) -> PaymentRecord | None:
    """The payment with this row id."""
    row = (await conn.execute(select(*_PAYMENT_COLS).where(Payment.id == payment_id))).first()
    return PaymentRecord(*row) if row else None


async def insert_payment(
    conn: AsyncConnection,
    *,
    merchant_id: int,
    ref: str,
    payer_id: int,
    amount: int,
    currency: str,
    policy_version: int,
    now: datetime,
    settle_at: datetime,
) -> int:
    """Insert a payment; a concurrent duplicate fails on the (merchant, ref) unique key."""
    stmt = (
        insert(_PAYMENT)
        .values(
            merchant_id=merchant_id,
            ref=ref,
            payer_id=payer_id,
            amount=amount,
            currency=currency,
            policy_version=policy_version,
            refunded=0,
            created_at=now,
            settle_at=settle_at,
            settled_at=None,
        )
        .returning(_PAYMENT.c.id)
    )
    return int((await conn.execute(stmt)).scalar_one())


async def insert_shares(
    conn: AsyncConnection,
    payment_id: int,
    shares: Sequence[tuple[str, int | None, str | None, int | None, int]],
) -> None:
    """Store the snapshot: (role, level, scope, member id, amount) in allocation order."""
    await conn.execute(
        insert(_SHARE),
        [
            {
                "payment_id": payment_id,
                "seq": seq,
                "role": role,
                "level": level,
                "scope": scope,
                "member_id": member_id,
                "amount": amount,
                "refunded": 0,
            }
            for seq, (role, level, scope, member_id, amount) in enumerate(shares)
        ],
    )


async def shares_of(conn: AsyncConnection, payment_id: int) -> list[ShareRecord]:
    """A payment's shares in allocation order, with the beneficiaries' JIDs."""
    stmt = (
        select(
            PaymentShare.seq,
            PaymentShare.role,
            PaymentShare.level,
            PaymentShare.scope,
            PaymentShare.member_id,
            Member.jid,
            PaymentShare.amount,
            PaymentShare.refunded,
        )
        .outerjoin(Member, Member.id == PaymentShare.member_id)
        .where(PaymentShare.payment_id == payment_id)
        .order_by(PaymentShare.seq)
    )
    return [ShareRecord(*row) for row in await conn.execute(stmt)]


async def find_refund(conn: AsyncConnection, merchant_id: int, ref: str) -> RefundRecord | None:
    """The merchant's refund with this id."""
    stmt = select(
        Refund.id,
        Refund.merchant_id,
        Refund.ref,
        Refund.payment_id,
        Refund.amount,
        Refund.created_at,
    ).where(Refund.merchant_id == merchant_id, Refund.ref == ref)
    row = (await conn.execute(stmt)).first()
    return RefundRecord(*row) if row else None


async def insert_refund(
    conn: AsyncConnection,
    *,
    merchant_id: int,
    ref: str,
    payment_id: int,
    amount: int,
    parts: Sequence[int],
    now: datetime,
) -> int:
    """Store a refund and its per-share parts; add the parts to the shares' refunded."""
    refund_id = int(
        (
            await conn.execute(
                insert(Refund)
                .values(
                    merchant_id=merchant_id,
                    ref=ref,
                    payment_id=payment_id,
                    amount=amount,
                    created_at=now,
                )
                .returning(Refund.id)
            )
        ).scalar_one()
    )
    await conn.execute(
        insert(RefundShare),
        [{"refund_id": refund_id, "seq": seq, "amount": part} for seq, part in enumerate(parts)],
    )
    for seq, part in enumerate(parts):
        if part:
            await conn.execute(
                update(PaymentShare)
                .where(PaymentShare.payment_id == payment_id, PaymentShare.seq == seq)
                .values(refunded=PaymentShare.refunded + part)
            )
    await conn.execute(
        update(Payment).where(Payment.id == payment_id).values(refunded=Payment.refunded + amount)
    )
    return refund_id


async def refund_parts(conn: AsyncConnection, refund_id: int) -> list[int]:
    """The parts of a stored refund, by share order."""
    stmt = select(RefundShare.amount).where(RefundShare.refund_id == refund_id)
    return [int(a) for a in (await conn.execute(stmt.order_by(RefundShare.seq))).scalars()]


async def lock_due(conn: AsyncConnection, now: datetime, limit: int) -> list[PaymentRecord]:
    """Unsettled payments whose hold has ended, oldest first, locked.

    On PostgreSQL rows that another settler holds are skipped (SKIP LOCKED), so several
    processes share the work instead of queueing behind each other.
    """
    stmt = (
        select(*_PAYMENT_COLS)
        .where(Payment.settled_at.is_(None), Payment.settle_at <= now)
        .order_by(Payment.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return [PaymentRecord(*row) for row in await conn.execute(stmt)]


async def mark_settled(conn: AsyncConnection, payment_id: int, now: datetime) -> bool:
    """Mark a payment settled; False when it already was (so it is never settled twice)."""
    stmt = (
        update(Payment)
        .where(Payment.id == payment_id, Payment.settled_at.is_(None))
        .values(settled_at=now)
    )
    return bool((await conn.execute(stmt)).rowcount)


async def member_shares_of(
    conn: AsyncConnection, payment_ids: Sequence[int]
) -> dict[int, list[tuple[int, int]]]:
    """For each payment, (member id, unrefunded amount) of its earners' shares."""
    stmt = (
        select(
            PaymentShare.payment_id,
            PaymentShare.member_id,
            PaymentShare.amount,
            PaymentShare.refunded,
        )
        .where(
            PaymentShare.payment_id.in_(payment_ids),
            PaymentShare.role.in_(("referrer", "agent")),
        )
        .order_by(PaymentShare.payment_id, PaymentShare.seq)
    )
    out: dict[int, list[tuple[int, int]]] = {pid: [] for pid in payment_ids}
    for pid, member_id, amount, refunded in await conn.execute(stmt):
        if member_id is not None:  # earners' shares always name a member
            out[pid].append((int(member_id), int(amount) - int(refunded)))
    return out
