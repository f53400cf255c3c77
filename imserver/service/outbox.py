"""The notification outbox, seen from the sender: claim, coalesce, give back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
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

    def round(self, limit: int = ROUND) -> Round:
        """A sending round: everything a member earned since the last round goes out as
        one message (one per ``MAX_PER_MESSAGE`` earnings). The sender runs a round at
        most once per window, which is the digest."""
        return Round(self.ctx, limit)

    async def give_back(self, ids: Sequence[int]) -> None:
        """Unclaim notifications that were never written to the link."""

        async def use_case(conn: Conn) -> None:
            await outbox.unclaim(conn, ids)

        await self.ctx.db.transaction(use_case)

    async def unsent(self) -> int:
        """How many notifications are waiting."""
        return await self.ctx.db.transaction(outbox.unsent_count)


class Round:
    """One round of notifications, claimed page by page (each page marked sent as it is
    claimed) and handed out as messages as soon as they are complete.

    A recipient's message is complete at ``MAX_PER_MESSAGE`` earnings or at the end of
    the round, so a round holds only the JSON text of the earnings of recipients whose
    message is not full yet, never the whole round as objects (it can be 50,000
    earnings: the component's memory), and the sender never blocks the event loop for
    more than a slice of them.
    """

    def __init__(self, ctx: Context, limit: int) -> None:
        self.ctx = ctx
        self.limit = limit
        self.ids: list[int] = []  # every row claimed so far (given back if unconfirmed)
        self.more = False  # the round stopped at its limit: more rows wait

    async def messages(self) -> AsyncIterator[list[Notice]]:
        """Claim and yield the round's messages, a slice at a time. A caller that stops
        iterating (the link dropped) stops the claiming; ``ids`` holds what was taken."""
        waiting: dict[str, list[outbox.ClaimedRow]] = {}
        ready: list[Notice] = []
        while len(self.ids) < self.limit:
            size = min(PAGE, self.limit - len(self.ids))
            page = await self.ctx.db.transaction(partial(_claim_page, self.ctx.clock(), size))
            self.ids.extend(row.id for row in page)
            for row in page:
                group = waiting.setdefault(row.recipient, [])
                group.append(row)
                if len(group) == MAX_PER_MESSAGE:
                    ready.append(_notice(waiting.pop(row.recipient)))
            if ready:
                yield ready
                ready = []
            if len(page) < size:
                break
        else:
            self.more = True
        written = 0
        for group in waiting.values():
            ready.append(_notice(group))
            written += len(group)
            if written >= SLICE:
                yield ready
                ready, written = [], 0
        if ready:
            yield ready


async def _claim_page(now: datetime, size: int, conn: Conn) -> list[outbox.ClaimedRow]:
    return await outbox.claim(conn, now, size)


def _notice(rows: list[outbox.ClaimedRow]) -> Notice:
    earnings = [_DECODE(r.payload) for r in rows]
    return Notice([r.id for r in rows], rows[0].recipient, notification_body(earnings), earnings)


_DECODE = json.JSONDecoder().decode
