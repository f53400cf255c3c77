"""Settlement: earnings leave pending for available once the hold period has passed.

A payment settles in two stages: its shares at ``settle_at`` (the policy's hold), and its
held shares, the earnings of members of remote domains, at ``held_until`` (the longer
``federation.hold_days``). Each stage of a payment is marked in the transaction that
moves its money, so neither ever runs twice.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from functools import partial

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
        transaction each). Returns how many payment stages it settled (a payment with
        held shares counts twice, once per stage).
        """
        at = now or self.ctx.clock()
        total = 0
        for held in (False, True):
            while True:
                done, picked = await self.ctx.db.transaction(partial(self._batch, at, held))
                total += done
                if picked < BATCH:
                    break
        return total

    async def _batch(self, at: datetime, held: bool, conn: Conn) -> tuple[int, int]:
        due = await store.lock_due(conn, at, BATCH, held=held)
        if not due:
            return 0, 0
        shares = await store.member_shares_of(conn, [p.id for p in due], held=held)
        done = 0
        for p in due:
            if not await store.mark_settled(conn, p.id, at, held=held):
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
