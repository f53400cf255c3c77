"""The double-entry ledger: accounts, balanced movements, statements and the invariant check.

An account is (owner, bucket, currency). Owners are ``member:<id>`` (buckets ``pending``,
``available``, ``reserved``, ``sales``), ``platform`` (bucket ``earnings``) and ``system``
(buckets ``payments``: money that came in from payers, ``payouts``: money paid out to
members). Every movement is a set of entries that sums to zero, so every currency sums
to zero over all accounts; ``Account.balance`` is kept equal to the sum of its entries.

Locks: accounts are always touched in the order of their key (owner, bucket, currency),
by every use case, so that two transactions never wait for each other in a cycle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Table, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import bulk_insert, for_update, reserve_ids, upsert
from imserver.store.models import Account, LedgerEntry, LedgerTxn, Payment, Refund, Withdrawal

# Writes go through the Core tables: the ORM's per-statement bookkeeping for an INSERT
# of the mapped class cost more than the statement on every payment.
_ACCOUNT: Table = Account.__table__  # type: ignore[assignment]
_TXN: Table = LedgerTxn.__table__  # type: ignore[assignment]
_ENTRY: Table = LedgerEntry.__table__  # type: ignore[assignment]

PENDING = "pending"
AVAILABLE = "available"
RESERVED = "reserved"
SALES = "sales"
PLATFORM = "platform"
EARNINGS = "earnings"
SYSTEM = "system"
PAYMENTS_IN = "payments"
PAYOUTS = "payouts"


class AccountKey(NamedTuple):
    """Identifies an account; the ordering is the lock order (a tuple: hashed and compared
    in C, which matters when a batch of payments sums its moves)."""

    owner: str
    bucket: str
    currency: str
    member_id: int | None = None


def member_account(member_id: int, bucket: str, currency: str) -> AccountKey:
    """A member's account of one bucket in one currency."""
    return AccountKey(f"member:{member_id}", bucket, currency, member_id)


def platform_account(currency: str) -> AccountKey:
    """The platform's earnings in one currency."""
    return AccountKey(PLATFORM, EARNINGS, currency)


def system_account(bucket: str, currency: str) -> AccountKey:
    """The world outside the ledger: payments in, payouts out."""
    return AccountKey(SYSTEM, bucket, currency)


class UnbalancedMovement(ValueError):
    """A movement whose entries do not sum to zero (a bug, never a user error)."""


@dataclass(frozen=True)
class Movement:
    """One balanced movement to record: signed amounts per account, and what caused it."""

    kind: str
    currency: str
    moves: Mapping[AccountKey, int]
    at: datetime
    payment_id: int | None = None
    refund_id: int | None = None
    withdrawal_id: int | None = None

    def checked(self) -> dict[AccountKey, int]:
        """The non-zero moves, after proving that they balance in one currency."""
        moves = {k: v for k, v in self.moves.items() if v}
        if sum(moves.values()) != 0:
            raise UnbalancedMovement(f"{self.kind}: entries sum to {sum(moves.values())}")
        if any(k.currency != self.currency for k in moves):
            raise UnbalancedMovement(f"{self.kind}: an entry is not in {self.currency}")
        return moves


async def post(
    conn: AsyncConnection,
    *,
    kind: str,
    currency: str,
    moves: Mapping[AccountKey, int],
    at: datetime,
    payment_id: int | None = None,
    refund_id: int | None = None,
    withdrawal_id: int | None = None,
) -> int | None:
    """Record one balanced movement and update the balances; returns the movement's id.

    ``moves`` maps accounts to signed amounts; zero amounts are left out, and a movement
    with nothing left is not recorded (None).
    """
    movement = Movement(kind, currency, moves, at, payment_id, refund_id, withdrawal_id)
    return (await post_many(conn, [movement]))[0]


async def post_many(conn: AsyncConnection, movements: Sequence[Movement]) -> list[int | None]:
    """Record several movements with one upsert of every account they touch.

    Each account's balance moves once by the sum of its amounts (a batch of payments to
    one merchant updates its sales account once), the accounts in key order, which is the
    lock order. Returns each movement's id (None for one with nothing left to record).
    """
    checked = [m.checked() for m in movements]
    totals: dict[AccountKey, int] = defaultdict(int)
    for moves in checked:
        for key, amount in moves.items():
            totals[key] += amount
    if not totals:
        return [None] * len(movements)
    ids = await _apply(conn, sorted(totals.items()))
    recorded = [i for i, moves in enumerate(checked) if moves]
    txn_ids = await reserve_ids(conn, _TXN, len(recorded))
    await bulk_insert(
        conn,
        _TXN,
        _TXN_INSERT,
        [
            (t, m.kind, m.currency, m.payment_id, m.refund_id, m.withdrawal_id, m.at)
            for t, m in zip(txn_ids, (movements[i] for i in recorded), strict=True)
        ],
    )
    out: list[int | None] = [None] * len(movements)
    entries: list[tuple[int, int, int]] = []
    for i, txn_id in zip(recorded, txn_ids, strict=True):
        out[i] = txn_id
        entries.extend((txn_id, ids[k], v) for k, v in sorted(checked[i].items()))
    await bulk_insert(conn, _ENTRY, ("txn_id", "account_id", "amount"), entries)
    return out


_TXN_INSERT = ("id", "kind", "currency", "payment_id", "refund_id", "withdrawal_id", "at")


async def _apply(
    conn: AsyncConnection, moves: list[tuple[AccountKey, int]]
) -> dict[AccountKey, int]:
    """Add each amount to its account (created at need), in key order; the accounts' ids."""
    stmt = upsert(conn, Account).values(
        [
            {
                "owner": k.owner,
                "member_id": k.member_id,
                "bucket": k.bucket,
                "currency": k.currency,
                "balance": amount,
            }
            for k, amount in moves
        ]
    )
    c = _ACCOUNT.c
    upserted = stmt.on_conflict_do_update(
        index_elements=[c.owner, c.bucket, c.currency],
        set_={"balance": c.balance + stmt.excluded.balance},
    ).returning(c.id, c.owner, c.bucket, c.currency)
    by_key = {(k.owner, k.bucket, k.currency): k for k, _ in moves}
    return {by_key[(o, b, cur)]: int(i) for i, o, b, cur in await conn.execute(upserted)}


async def lock_member_balances(
    conn: AsyncConnection, member_id: int, currency: str
) -> dict[str, int]:
    """Lock a member's accounts in one currency (key order); balance per bucket."""
    stmt = (
        select(Account.bucket, Account.balance)
        .where(Account.owner == f"member:{member_id}", Account.currency == currency)
        .order_by(Account.bucket)
    )
    return {b: int(v) for b, v in await conn.execute(for_update(conn, stmt))}


async def member_balances(conn: AsyncConnection, member_id: int) -> dict[str, dict[str, int]]:
    """A member's balance per currency and bucket."""
    stmt = (
        select(Account.currency, Account.bucket, Account.balance)
        .where(Account.owner == f"member:{member_id}")
        .order_by(Account.currency, Account.bucket)
    )
    out: dict[str, dict[str, int]] = {}
    for currency, bucket, balance in await conn.execute(stmt):
        out.setdefault(currency, {})[bucket] = int(balance)
    return out


async def account_balance(conn: AsyncConnection, key: AccountKey) -> int:
    """One account's balance (0 when it was never used)."""
    stmt = select(Account.balance).where(
        Account.owner == key.owner, Account.bucket == key.bucket, Account.currency == key.currency
    )
    return int((await conn.execute(stmt)).scalar_one_or_none() or 0)


@dataclass(frozen=True)
class StatementEntry:
    """One line of a member's statement."""

    id: int
    at: datetime
    kind: str
    bucket: str
    currency: str
    amount: int
    payment: str | None
    refund: str | None
    withdrawal: int | None


async def statement(
    conn: AsyncConnection,
    member_id: int,
    *,
    currency: str | None,
    limit: int,
    after: int | None = None,
    before: int | None = None,
    last_page: bool = False,
) -> tuple[list[StatementEntry], int, int]:
    """A page of a member's entries, oldest first, by entry id (XEP-0059 semantics).

    ``after``: entries after that id; ``before``: entries before it; ``last_page``: the
    newest page. Returns (entries, total count, index of the first entry in the set).
    """
    owner = Account.owner == f"member:{member_id}"
    where: list[Any] = [owner]
    if currency:
        where.append(Account.currency == currency)
    base = (
        select(
            LedgerEntry.id,
            LedgerTxn.at,
            LedgerTxn.kind,
            Account.bucket,
            Account.currency,
            LedgerEntry.amount,
            Payment.ref,
            Refund.ref,
            LedgerTxn.withdrawal_id,
        )
        .join(Account, Account.id == LedgerEntry.account_id)
        .join(LedgerTxn, LedgerTxn.id == LedgerEntry.txn_id)
        .outerjoin(Payment, Payment.id == LedgerTxn.payment_id)
        .outerjoin(Refund, Refund.id == LedgerTxn.refund_id)
        .where(*where)
    )
    count_stmt = (
        select(func.count())
        .select_from(LedgerEntry)
        .join(Account, Account.id == LedgerEntry.account_id)
        .where(*where)
    )
    total = int((await conn.execute(count_stmt)).scalar_one())
    if after is not None:
        stmt = base.where(LedgerEntry.id > after).order_by(LedgerEntry.id).limit(limit)
        rows = list(await conn.execute(stmt))
    elif before is not None or last_page:
        stmt = base
        if before is not None:
            stmt = stmt.where(LedgerEntry.id < before)
        rows = list(await conn.execute(stmt.order_by(LedgerEntry.id.desc()).limit(limit)))
        rows.reverse()
    else:
        rows = list(await conn.execute(base.order_by(LedgerEntry.id).limit(limit)))
    entries = [StatementEntry(*(r[0], r[1], r[2], r[3], r[4], int(r[5]), *r[6:])) for r in rows]
    first_index = 0
    if entries:
        idx_stmt = (
            select(func.count())
            .select_from(LedgerEntry)
            .join(Account, Account.id == LedgerEntry.account_id)
            .where(*where, LedgerEntry.id < entries[0].id)
        )
        first_index = int((await conn.execute(idx_stmt)).scalar_one())
    return entries, total, first_index


@dataclass(frozen=True)
class LedgerReport:
    """The result of the invariant check."""

    currencies: dict[str, int]  # currency -> sum of all balances (must be 0)
    accounts: int
    movements: int
    entries: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


async def check(conn: AsyncConnection) -> LedgerReport:
    """Prove the ledger's invariants, or list what breaks them.

    Every currency sums to zero (over balances and over entries), every movement sums to
    zero, every entry is in its movement's currency, every balance equals its entries, and
    every member's reserved balance equals its pending withdrawals.
    """
    problems: list[str] = []
    sums = {
        c: int(s)
        for c, s in await conn.execute(
            select(Account.currency, func.sum(Account.balance)).group_by(Account.currency)
        )
    }
    for currency, total in sorted(sums.items()):
        if total != 0:
            problems.append(f"{currency}: balances sum to {total}, not 0")
    entry_sums = await conn.execute(
        select(LedgerTxn.currency, func.sum(LedgerEntry.amount))
        .join(LedgerTxn, LedgerTxn.id == LedgerEntry.txn_id)
        .group_by(LedgerTxn.currency)
    )
    for currency, total in entry_sums:
        if int(total) != 0:
            problems.append(f"{currency}: entries sum to {total}, not 0")
    unbalanced = await conn.execute(
        select(LedgerEntry.txn_id, func.sum(LedgerEntry.amount))
        .group_by(LedgerEntry.txn_id)
        .having(func.sum(LedgerEntry.amount) != 0)
        .limit(20)
    )
    for txn_id, total in unbalanced:
        problems.append(f"movement {txn_id}: entries sum to {total}")
    mixed = await conn.execute(
        select(LedgerEntry.id)
        .join(LedgerTxn, LedgerTxn.id == LedgerEntry.txn_id)
        .join(Account, Account.id == LedgerEntry.account_id)
        .where(Account.currency != LedgerTxn.currency)
        .limit(20)
    )
    for (entry_id,) in mixed:
        problems.append(f"entry {entry_id}: account currency differs from its movement's")
    per_account = (
        select(LedgerEntry.account_id, func.sum(LedgerEntry.amount).label("total"))
        .group_by(LedgerEntry.account_id)
        .subquery()
    )
    drift = await conn.execute(
        select(Account.id, Account.owner, Account.bucket, Account.currency, Account.balance)
        .outerjoin(per_account, per_account.c.account_id == Account.id)
        .where(
            or_(
                and_(per_account.c.total.is_(None), Account.balance != 0),
                Account.balance != func.coalesce(per_account.c.total, 0),
            )
        )
        .limit(20)
    )
    for acc_id, owner, bucket, currency, balance in drift:
        problems.append(
            f"account {acc_id} ({owner} {bucket} {currency}): balance {balance} "
            "differs from the sum of its entries"
        )
    # What is reserved is exactly what pending withdrawals asked for.
    reserved = {
        (int(m), c): int(b)
        for m, c, b in await conn.execute(
            select(Account.member_id, Account.currency, Account.balance).where(
                Account.bucket == RESERVED, Account.member_id.is_not(None)
            )
        )
        if m is not None
    }
    asked = {
        (int(m), c): int(t)
        for m, c, t in await conn.execute(
            select(Withdrawal.member_id, Withdrawal.currency, func.sum(Withdrawal.amount))
            .where(Withdrawal.status == "pending")
            .group_by(Withdrawal.member_id, Withdrawal.currency)
        )
    }
    for key in sorted(set(reserved) | set(asked)):
        if reserved.get(key, 0) != asked.get(key, 0):
            problems.append(
                f"member {key[0]} {key[1]}: reserved {reserved.get(key, 0)} but pending "
                f"withdrawals ask for {asked.get(key, 0)}"
            )
    counts = [
        int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
        for t in (Account, LedgerTxn, LedgerEntry)
    ]
    return LedgerReport(sums, counts[0], counts[1], counts[2], problems)


async def pending_withdrawal_total(conn: AsyncConnection, member_id: int, currency: str) -> int:
    """The sum of a member's withdrawals still waiting for a decision."""
    stmt = select(func.coalesce(func.sum(Withdrawal.amount), 0)).where(
        Withdrawal.member_id == member_id,
        Withdrawal.currency == currency,
        Withdrawal.status == "pending",
    )
    return int((await conn.execute(stmt)).scalar_one())
