"""The notification outbox, seen from the sender: claim, coalesce, give back."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.domain.notices import notification_body
from imserver.service.context import Context
from imserver.service.money_views import Notice
from imserver.store import outbox

BATCH = 500
MAX_PER_MESSAGE = 50  # earnings listed in one coalesced message


class Outbox:
    """Hands unsent notifications to the XMPP layer, one message per recipient."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def claim(self, limit: int = BATCH) -> list[Notice]:
        """Take unsent notifications (marked sent in this transaction), grouped per member.

        What one member earned since the last claim goes out as one message: this is the
        coalescing window (the sender waits a moment before claiming).
        """

        async def use_case(conn: AsyncConnection) -> list[Notice]:
            rows = await outbox.claim(conn, self.ctx.clock(), limit)
            grouped: dict[str, list[outbox.OutboxRow]] = {}
            for row in rows:
                grouped.setdefault(row.recipient, []).append(row)
            notices = []
            for recipient, rows_of in grouped.items():
                # Keep each message well under the XMPP servers' stanza size limits.
                for i in range(0, len(rows_of), MAX_PER_MESSAGE):
                    group = rows_of[i : i + MAX_PER_MESSAGE]
                    earnings = [{k: str(v) for k, v in r.payload.items()} for r in group]
                    body = notification_body(earnings)
                    notices.append(Notice([r.id for r in group], recipient, body, earnings))
            return notices

        return await self.ctx.db.transaction(use_case)

    async def give_back(self, ids: Sequence[int]) -> None:
        """Unclaim notifications that were never written to the link."""

        async def use_case(conn: AsyncConnection) -> None:
            await outbox.unclaim(conn, ids)

        await self.ctx.db.transaction(use_case)

    async def unsent(self) -> int:
        """How many notifications are waiting."""
        return await self.ctx.db.transaction(outbox.unsent_count)
