"""What an operator asks of the database: the backlogs (outbox, settlement) and counts.

Read by the metrics endpoint at every scrape (:meth:`Health.backlog`, a few indexed
reads) and by ``imserver status`` (both methods; :meth:`Health.counts` scans the member
table, so it is not scraped).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from imserver.service.context import Context
from imserver.store import outbox, reports
from imserver.store import payments as store
from imserver.store.db import Conn
from imserver.store.dialect import utc


def _age(now: datetime, since: datetime | None) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


@dataclass(frozen=True)
class Backlog:
    """Work that waits, seen at ``at``."""

    at: datetime
    outbox_pending: int  # notifications not yet confirmed by the XMPP server
    outbox_oldest: datetime | None  # when the oldest of them not bounced was written
    outbox_retrying: int  # of the pending, those bounced by a remote server (a retry waits)
    outbox_given_up: int  # notifications given up: a remote server unreachable too long
    due_since: datetime | None  # the hold end of the oldest payment due and not settled
    last_settled: datetime | None  # when a payment was last settled

    @property
    def outbox_local(self) -> int:
        """Notifications waiting for our own XMPP server (not for a remote retry)."""
        return max(0, self.outbox_pending - self.outbox_retrying)

    @property
    def outbox_age(self) -> float:
        """Seconds the oldest notification waiting for our own XMPP server has waited (0:
        none waits); a remote server's outage shows in ``outbox_retrying`` instead."""
        return _age(self.at, self.outbox_oldest)

    @property
    def settlement_lag(self) -> float:
        """Seconds a due payment has waited for its settlement (0: none waits)."""
        return _age(self.at, self.due_since)


@dataclass(frozen=True)
class Counts:
    """How big the network is."""

    members: dict[tuple[str, str], int]  # (role, status) -> members
    payments: dict[str, tuple[int, int, int]]  # currency -> (payments, paid, refunded)


class Health:
    """Read-only figures for operators: no sender, no authorisation (never on the wire)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def backlog(self) -> Backlog:
        """The outbox and settlement backlogs, in one read transaction."""
        now = self.ctx.clock()

        async def use_case(conn: Conn) -> Backlog:
            pending = await outbox.unsent_count(conn)
            oldest = await outbox.oldest_unsent(conn) if pending else None
            retrying = await outbox.retrying_count(conn) if pending else 0
            given_up = await outbox.given_up_count(conn)
            due, last = await store.settlement_state(conn, now)
            return Backlog(
                now, pending, utc(oldest), retrying, given_up, utc(due), utc(last)
            )

        return await self.ctx.db.transaction(use_case)

    async def counts(self) -> Counts:
        """Members by role and status, payments by currency."""

        async def use_case(conn: Conn) -> Counts:
            members = await reports.members_by_role_status(conn)
            return Counts(members, await reports.payment_volume(conn))

        return await self.ctx.db.transaction(use_case)
