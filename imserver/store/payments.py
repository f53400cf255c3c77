"""Payments, their share snapshots, refunds and the settlement queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

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
    held_until: datetime | None
    held_settled_at: datetime | None

    def share_settled(self, held: bool) -> bool:
        """Whether a share (held or not) has moved from pending to available."""
        return (self.held_settled_at if held else self.settled_at) is not None


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
    held: bool = False  # a remote member's earning: it settles at the payment's held_until


@dataclass(frozen=True)
class RefundRecord:
    id: int
    merchant_id: int
    ref: str
    payment_id: int
    amount: int
    created_at: datetime


# Typed loosely: SQLAlchemy's typed rows stop at fewer columns than a payment has.
_PAYMENT_COLS: tuple[Any, ...] = (
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
    Payment.held_until,
    Payment.held_settled_at,
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
    held_until: datetime | None  # None when no share is held
    # (role, level, scope, member id, amount, held)
    shares: Sequence[tuple[str, int | None, str | None, int | None, int, bool]]


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
                   "settled_at", "held_until", "held_settled_at")  # fmt: skip
_SHARE_INSERT = ("payment_id", "seq", "role", "level", "scope", "member_id", "amount", "refunded",
                 "held")  # fmt: skip


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
             p.created_at, p.settle_at, None, p.held_until, None)
            for i, p in zip(ids, payments, strict=True)
        ],
    )  # fmt: skip
    await bulk_insert(
        conn,
        _SHARE,
        _SHARE_INSERT,
        [
            (payment_id, seq, role, level, scope, member_id, amount, 0, held)
            for payment_id, p in zip(ids, payments, strict=True)
            for seq, (role, level, scope, member_id, amount, held) in enumerate(p.shares)
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
            PaymentShare.held,
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


# The two stages of settlement: (when it is due, when it was done), for the shares that
# are not held and for those that are (remote members' earnings, migration 0009).
_STAGES = {
    False: (Payment.settle_at, Payment.settled_at),
    True: (Payment.held_until, Payment.held_settled_at),
}


async def lock_due(
    conn: AsyncConnection, now: datetime, limit: int, *, held: bool = False
) -> list[PaymentRecord]:
    """Payments whose shares (``held`` or not) are due to settle and have not, oldest
    first, locked.

    On PostgreSQL rows that another settler holds are skipped (SKIP LOCKED), so several
    processes share the work instead of queueing behind each other.
    """
    due, done = _STAGES[held]
    stmt = (
        select(*_PAYMENT_COLS).where(done.is_(None), due <= now).order_by(Payment.id).limit(limit)
    )
    return [PaymentRecord(*row) for row in await conn.execute(skip_locked(conn, stmt))]


async def mark_settled(
    conn: AsyncConnection, payment_id: int, now: datetime, *, held: bool = False
) -> bool:
    """Mark a payment's shares (``held`` or not) settled; False when they already were
    (so nothing is ever settled twice)."""
    _due, done = _STAGES[held]
    stmt = update(Payment).where(Payment.id == payment_id, done.is_(None)).values({done: now})
    return bool((await conn.execute(stmt)).rowcount)


async def member_shares_of(
    conn: AsyncConnection, payment_ids: Sequence[int], *, held: bool = False
) -> dict[int, list[tuple[int, int]]]:
    """For each payment, (member id, unrefunded amount) of its earners' shares that are
    ``held`` (or not)."""
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
            PaymentShare.held == held,
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
    """(the oldest hold end that is due and not settled, the last settlement), of both
    stages: each read through its index (``ix_payments_due``, ``ix_payments_held_due``)."""
    due: list[datetime] = []
    last: list[datetime] = []
    for when, done in _STAGES.values():
        oldest = await conn.execute(select(func.min(when)).where(done.is_(None), when <= now))
        newest = await conn.execute(select(func.max(done)))
        due += filter(None, [oldest.scalar()])
        last += filter(None, [newest.scalar()])
    return min(due, default=None), max(last, default=None)
