"""The notification outbox, seen from the sender: claim, coalesce, give back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from imserver.domain.notices import notification_body
from imserver.service.context import Context
from imserver.service.money_views import Notice
from imserver.store import outbox
from imserver.store.db import Conn

PAGE = 500  # rows claimed per transaction (short: the payment writer waits for the lock)
ROUND = 50_000  # rows claimed per sending round at most; more waits for the next round
MAX_PER_MESSAGE = 100  # earnings listed in one message (about 30 KB: far under stanza caps)
# Earnings written into messages between two yields to the event loop: a round of tens of
# thousands of earnings must not hold up the payments answered meanwhile (their p99).
SLICE = 500


class Outbox:
    """Hands unsent notifications to the XMPP layer, one message per recipient and round."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def claim(self, limit: int = ROUND) -> tuple[list[Notice], bool]:
        """Take unsent notifications (marked sent as they are claimed), grouped per member.

        Everything a member earned since the last round goes out as one message (one per
        ``MAX_PER_MESSAGE`` earnings): the sender runs a round at most once per window,
        which is the digest. Returns the messages and whether more rows wait (the round
        stopped at ``limit``).
        """
        rows: list[outbox.OutboxRow] = []
        while len(rows) < limit:
            size = min(PAGE, limit - len(rows))
            page = await self.ctx.db.transaction(partial(_claim_page, self.ctx.clock(), size))
            rows.extend(page)
            if len(page) < size:
                return await _messages(rows), False
        return await _messages(rows), True

    async def give_back(self, ids: Sequence[int]) -> None:
        """Unclaim notifications that were never written to the link."""

        async def use_case(conn: Conn) -> None:
            await outbox.unclaim(conn, ids)

        await self.ctx.db.transaction(use_case)

    async def unsent(self) -> int:
        """How many notifications are waiting."""
        return await self.ctx.db.transaction(outbox.unsent_count)


async def _claim_page(now: datetime, size: int, conn: Conn) -> list[outbox.OutboxRow]:
    return await outbox.claim(conn, now, size)


async def _messages(rows: list[outbox.OutboxRow]) -> list[Notice]:
    grouped: dict[str, list[outbox.OutboxRow]] = {}
    for row in rows:
        grouped.setdefault(row.recipient, []).append(row)
    notices = []
    written = 0
    for recipient, rows_of in grouped.items():
        for i in range(0, len(rows_of), MAX_PER_MESSAGE):
            group = rows_of[i : i + MAX_PER_MESSAGE]
            earnings = [r.payload for r in group]
            body = notification_body(earnings)
            notices.append(Notice([r.id for r in group], recipient, body, earnings))
            written += len(group)
            if written >= SLICE:
                written = 0
                await asyncio.sleep(0)
    return notices
