"""The notification outbox, seen from the sender: claim, coalesce, give back."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from functools import partial
from typing import NamedTuple

from imserver.domain.jids import domain_of
from imserver.domain.notices import notification_body
from imserver.domain.retries import RetryPolicy
from imserver.service.context import Context
from imserver.service.money_views import Notice
from imserver.store import outbox
from imserver.store.db import Conn

PAGE = 500  # rows claimed per transaction (short: the payment writer waits for the lock)
ROUND = 50_000  # rows claimed per sending round at most; more waits for the next round
MAX_PER_MESSAGE = 100  # earnings listed in one message (about 30 KB: far under stanza caps)
# What our server answers when it could not reach the recipient's server (RFC 6120
# 8.3.3): worth another try later. Any other error (no such user, refused) is final.
UNREACHABLE = frozenset({"remote-server-not-found", "remote-server-timeout"})

log = logging.getLogger(__name__)


class Retry(NamedTuple):
    """A bounced message put back: how many notifications, to which domain, for how long
    (None: given up, never sent); ``news``: the first given up in this outage of its
    domain (worth telling someone)."""

    rows: int
    domain: str
    delay: timedelta | None
    news: bool = False

    @property
    def given_up(self) -> bool:
        """Whether the message was given up rather than put back."""
        return self.delay is None


class Outbox:
    """Hands unsent notifications to the XMPP layer, one message per recipient and round."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Where the last round stopped: the next one goes on from there, so that under a
        # backlog longer than a round no recipient waits for those before it forever.
        self._cursor: outbox.Cursor | None = None
        self.retry = ctx.config.federation.retry_policy()
        # When each remote domain last bounced: one warning per outage, not per message.
        self._bounced_at: dict[str, datetime] = {}
        # Domains whose notifications were given up in their current outage (warned).
        self._given_up: set[str] = set()

    def round(self, limit: int = ROUND) -> Round:
        """A sending round: everything a member earned since the last round goes out as
        one message (one per ``MAX_PER_MESSAGE`` earnings). The sender runs a round at
        most once per window, which is the digest."""
        return Round(self, limit)

    async def confirm(self, token: str) -> int:
        """The server took the messages of the round ``token``: they are sent. Any
        process may confirm any round (the answer that proves it may reach another
        process than the sender's under ejabberd). Returns the rows confirmed."""
        return await self.ctx.db.transaction(partial(_confirm, token, self.ctx.clock()))

    async def give_back(self, token: str) -> None:
        """Unclaim what the round ``token`` took and nobody confirmed: it goes out again,
        in the same messages (same ids), from whichever sender claims it next."""
        await self.ctx.db.transaction(partial(_unclaim, token))

    async def bounced(self, sender: str, message_id: int, condition: str) -> Retry | None:
        """Our server could not deliver the message ``message_id``: it answered with the
        error ``condition`` from ``sender`` (the bare JID or domain it was sent to). If
        the recipient's server was unreachable, the message's notifications become
        unsent again and go out later, in the same message (same id), after a wait that
        grows with each bounce; a bounce later than the retry policy's ``give_up_after``
        since the first one gives them up instead (never sent; the ledger keeps the
        earnings). Believed only from the recipient itself or its domain, and only for a
        message that went out to it; anything else changes nothing (returns None)."""
        if condition not in UNREACHABLE:
            return None
        now = self.ctx.clock()
        retry = await self.ctx.db.transaction(
            partial(_retry_later, sender, message_id, now, self.retry)
        )
        if retry is not None and self._warn(retry, condition, now):
            return retry._replace(news=True)
        return retry

    def _warn(self, retry: Retry, condition: str, now: datetime) -> bool:
        # One warning as a domain's outage starts, one as its first notification is
        # given up (True then); an outage ends when the domain has not bounced for two
        # longest waits.
        domain = retry.domain
        last = self._bounced_at.get(domain)
        self._bounced_at[domain] = now
        if last is None or now - last > 2 * self.retry.longest:
            self._given_up.discard(domain)
            if not retry.given_up:
                log.warning(
                    "%s is unreachable (%s): notifications to its members wait and go "
                    "out again, the first in %s",
                    domain,
                    condition,
                    retry.delay,
                )
        if not retry.given_up or domain in self._given_up:
            return False
        self._given_up.add(domain)
        log.warning(
            "%s has been unreachable for more than %s: notifications to its members "
            "are given up (never sent; balances and statements have the earnings)",
            domain,
            self.retry.give_up_after,
        )
        return True

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
        # Names the round's rows: the server's answer confirms them by it.
        self.token = uuid.uuid4().hex
        self.ids: list[int] = []  # every row claimed so far
        self.more = False  # the round stopped at its limit: more rows wait

    async def messages(self) -> AsyncIterator[list[Notice]]:
        """Claim and yield the round's messages, a page at a time. A caller that stops
        iterating (the link dropped) stops the claiming; ``ids`` holds what was taken."""
        ctx = self.owner.ctx
        while len(self.ids) < self.limit:
            size = min(PAGE, self.limit - len(self.ids))
            now = ctx.clock()
            claim = partial(
                _claim_page,
                self.token,
                now,
                now - LEASE,
                self.owner._cursor,
                size,
                MAX_PER_MESSAGE,
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
# the server's answer to its ping with room to spare.
LEASE = timedelta(seconds=15)


async def _claim_page(
    token: str,
    now: datetime,
    lapsed_before: datetime,
    after: outbox.Cursor | None,
    size: int,
    per_message: int,
    conn: Conn,
) -> list[outbox.ClaimedRow]:
    return await outbox.claim(conn, token, now, lapsed_before, after, size, per_message)


async def _confirm(token: str, now: datetime, conn: Conn) -> int:
    return await outbox.confirm(conn, token, now)


async def _unclaim(token: str, conn: Conn) -> None:
    await outbox.unclaim(conn, token)


async def _retry_later(
    sender: str, message_id: int, now: datetime, policy: RetryPolicy, conn: Conn
) -> Retry | None:
    rows = [
        r
        for r in await outbox.handed_rows(conn, message_id)
        if sender in (r.recipient, domain_of(r.recipient))
    ]
    if not rows:
        return None
    ids, domain = [r.id for r in rows], domain_of(rows[0].recipient)
    bounces = max(r.bounces for r in rows) + 1
    first = min([at for r in rows if (at := r.first_bounced_at) is not None], default=now)
    retry_at = policy.next_try(first, now, bounces)
    if retry_at is None:
        await outbox.give_up(conn, ids, now, bounces)
        return Retry(len(rows), domain, None)
    await outbox.retry_later(conn, ids, retry_at, bounces, first)
    return Retry(len(rows), domain, retry_at - now)


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
