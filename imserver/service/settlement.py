"""Settlement: earnings leave pending for available once the hold period has passed."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from imserver.service.context import Context
from imserver.store import ledger
from imserver.store import payments as store
from imserver.store.db import Conn
from imserver.store.ledger import AccountKey

BATCH = 200


class Settlement:
    """The settle use case; the scheduler (imserver.jobs) runs it periodically."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def settle(self, now: datetime | None = None) -> int:
        """Settle every payment whose hold has ended by ``now`` (default: the clock).

        Safe to run twice or concurrently: a payment is marked settled in the same
        transaction as its movement, and a settled one is never picked again. After
        downtime it catches up, since it takes every overdue payment, in batches (one
        transaction each). Returns how many payments it settled.
        """
        at = now or self.ctx.clock()
        total = 0
        while True:
            done, picked = await self.ctx.db.transaction(lambda conn: self._batch(conn, at))
            total += done
            if picked < BATCH:
                return total

    async def _batch(self, conn: Conn, at: datetime) -> tuple[int, int]:
        due = await store.lock_due(conn, at, BATCH)
        if not due:
            return 0, 0
        shares = await store.member_shares_of(conn, [p.id for p in due])
        done = 0
        for p in due:
            if not await store.mark_settled(conn, p.id, at):
                continue
            moves: dict[AccountKey, int] = defaultdict(int)
            for member_id, remaining in shares[p.id]:
                moves[ledger.member_account(member_id, ledger.PENDING, p.currency)] -= remaining
                moves[ledger.member_account(member_id, ledger.AVAILABLE, p.currency)] += remaining
            await ledger.post(
                conn, kind="settlement", currency=p.currency, moves=moves, at=at, payment_id=p.id
            )
            done += 1
        return done, len(due)
