"""Payments, their share snapshots, refunds and the settlement queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Table, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import bulk_insert, for_update, reserve_ids, skip_locked
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


class ShareRecord(NamedTuple):
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


@dataclass(frozen=True)
class NewPayment:
    """A payment to insert, with its share snapshot in allocation order."""

    merchant_id: int
    ref: str
    payer_id: int
    amount: int
    currency: str
    policy_version: int
    created_at: datetime
    settle_at: datetime
    # (role, level, scope, member id, amount)
    shares: Sequence[tuple[str, int | None, str | None, int | None, int]]


async def find_payments(
    conn: AsyncConnection, keys: Sequence[tuple[int, str]]
) -> dict[tuple[int, str], PaymentRecord]:
    """The stored payments among these (merchant id, ref) keys."""
    if not keys:
        return {}
    stmt = select(*_PAYMENT_COLS).where(tuple_(Payment.merchant_id, Payment.ref).in_(keys))
    found = [PaymentRecord(*row) for row in await conn.execute(stmt)]
    return {(p.merchant_id, p.ref): p for p in found}


_PAYMENT_INSERT = ("id", "merchant_id", "ref", "payer_id", "amount", "currency",
                   "policy_version", "refunded", "created_at", "settle_at",
                   "settled_at")  # fmt: skip
_SHARE_INSERT = ("payment_id", "seq", "role", "level", "scope", "member_id", "amount", "refunded")


async def insert_payments(conn: AsyncConnection, payments: Sequence[NewPayment]) -> list[int]:
    """Insert payments and their shares (two statements for any number); their ids in order.

    A duplicate (merchant, ref), stored meanwhile by another process, fails the unique key.
    """
    ids = await reserve_ids(conn, _PAYMENT, len(payments))
    await bulk_insert(
        conn,
        _PAYMENT,
        _PAYMENT_INSERT,
        [
            (i, p.merchant_id, p.ref, p.payer_id, p.amount, p.currency, p.policy_version, 0,
             p.created_at, p.settle_at, None)
            for i, p in zip(ids, payments, strict=True)
        ],
    )  # fmt: skip
    await bulk_insert(
        conn,
        _SHARE,
        _SHARE_INSERT,
        [
            (payment_id, seq, role, level, scope, member_id, amount, 0)
            for payment_id, p in zip(ids, payments, strict=True)
            for seq, (role, level, scope, member_id, amount) in enumerate(p.shares)
        ],
    )
    return ids


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
    return [PaymentRecord(*row) for row in await conn.execute(skip_locked(conn, stmt))]


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


async def settlement_state(
    conn: AsyncConnection, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """(the hold end of the oldest payment due and not settled, the last settlement):
    both read through the ``ix_payments_due`` index."""
    due = select(func.min(Payment.settle_at)).where(
        Payment.settled_at.is_(None), Payment.settle_at <= now
    )
    last = select(func.max(Payment.settled_at))
    return (await conn.execute(due)).scalar(), (await conn.execute(last)).scalar()
