"""The notification outbox, seen from the sender: claim, coalesce, give back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from functools import partial

from imserver.domain.notices import notification_body
from imserver.service.context import Context
from imserver.service.money_views import Notice
from imserver.store import outbox
from imserver.store.db import Conn

PAGE = 500  # rows claimed per transaction (short: the payment writer waits for the lock)
ROUND = 50_000  # rows claimed per sending round at most; more waits for the next round
MAX_PER_MESSAGE = 100  # earnings listed in one message (about 30 KB: far under stanza caps)


class Outbox:
    """Hands unsent notifications to the XMPP layer, one message per recipient and round."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Where the last round stopped: the next one goes on from there, so that under a
        # backlog longer than a round no recipient waits for those before it forever.
        self._cursor: outbox.Cursor | None = None

    def round(self, limit: int = ROUND) -> Round:
        """A sending round: everything a member earned since the last round goes out as
        one message (one per ``MAX_PER_MESSAGE`` earnings). The sender runs a round at
        most once per window, which is the digest."""
        return Round(self, limit)

    async def confirm(self, ids: Sequence[int]) -> None:
        """The server took the messages of these notifications: they are sent."""
        for i in range(0, len(ids), PAGE):
            chunk = ids[i : i + PAGE]
            await self.ctx.db.transaction(partial(_confirm, chunk, self.ctx.clock()))

    async def give_back(self, ids: Sequence[int]) -> None:
        """Unclaim notifications that were not confirmed: they go out again, in the same
        messages (same ids), to whichever sender claims them next."""
        for i in range(0, len(ids), PAGE):
            chunk = ids[i : i + PAGE]
            await self.ctx.db.transaction(partial(_unclaim, chunk))

    async def unsent(self) -> int:
        """How many notifications are waiting (or sent and not yet confirmed)."""
        return await self.ctx.db.transaction(outbox.unsent_count)


class Round:
    """One round of notifications, claimed a page at a time (a recipient's rows always
    in one page) and handed out page by page as messages.

    A claim lapses after ``LEASE``: if the process dies before the server confirmed a
    round, any sender takes those rows again after the lease and sends them in the same
    messages (at least once; the message id lets a client drop the repeat).
    """

    def __init__(self, owner: Outbox, limit: int) -> None:
        self.owner = owner
        self.limit = limit
        self.ids: list[int] = []  # every row claimed so far (to confirm or give back)
        self.more = False  # the round stopped at its limit: more rows wait

    async def messages(self) -> AsyncIterator[list[Notice]]:
        """Claim and yield the round's messages, a page at a time. A caller that stops
        iterating (the link dropped) stops the claiming; ``ids`` holds what was taken."""
        ctx = self.owner.ctx
        while len(self.ids) < self.limit:
            size = min(PAGE, self.limit - len(self.ids))
            now = ctx.clock()
            claim = partial(
                _claim_page, now, now - LEASE, self.owner._cursor, size, MAX_PER_MESSAGE
            )
            page = await ctx.db.transaction(claim)
            if not page:
                # The end: the next round starts again from the first recipient (not this
                # one, which would give a recipient a second message in the same round).
                self.owner._cursor = None
                return
            self.ids.extend(row.id for row in page)
            self.owner._cursor = (page[-1].recipient, page[-1].id)
            yield _notices(page)
        self.more = True


# A claim not confirmed within this time lapses. It must outlast a round's sending and
# its confirmation (CONFIRM_TIMEOUT in xmpp/notify.py, 5 s) with room to spare.
LEASE = timedelta(seconds=15)


async def _claim_page(
    now: datetime,
    lapsed_before: datetime,
    after: outbox.Cursor | None,
    size: int,
    per_message: int,
    conn: Conn,
) -> list[outbox.ClaimedRow]:
    return await outbox.claim(conn, now, lapsed_before, after, size, per_message)


async def _confirm(ids: Sequence[int], now: datetime, conn: Conn) -> None:
    await outbox.confirm(conn, ids, now)


async def _unclaim(ids: Sequence[int], conn: Conn) -> None:
    await outbox.unclaim(conn, ids)


def _notices(page: list[outbox.ClaimedRow]) -> list[Notice]:
    messages: dict[int, list[outbox.ClaimedRow]] = {}
    for row in page:
        messages.setdefault(row.message_id, []).append(row)
    out = []
    for message_id, rows in messages.items():
        earnings = [_DECODE(r.payload) for r in rows]
        body = notification_body(earnings)
        out.append(Notice([r.id for r in rows], rows[0].recipient, body, earnings, message_id))
    return out


_DECODE = json.JSONDecoder().decode
