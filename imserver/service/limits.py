"""Rate limits per sender: a token bucket per bare JID, kept in memory with bounded size.

Every request and chat message of a sender takes one token. A sender gets
``limits.rate`` tokens a second up to ``limits.burst``; the configured admins and the
JIDs registered as a merchant's bot get ``privileged_rate`` / ``privileged_burst``.
Whether a JID is a bot is read from the database only when its ordinary bucket runs
dry (and then trusted for ``privileged_recheck_seconds``), so a flood costs at most one
query per sender and period, and a bot registered a moment ago is not held back long.

The buckets live in this process only: with several component processes behind ejabberd
(which spreads stanzas among them) each process limits on its own, so the effective
limit is the configured one times the number of processes. Nothing that matters depends
on these buckets; losing them on a restart only gives every sender a full bucket.

At most ``limits.max_senders`` buckets are kept; the least recently seen sender is
forgotten first, so a flood of distinct JIDs cannot grow memory without bound (a
forgotten sender starts again with a full bucket, which costs the flooder its own
tokens, not anyone else's).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from imserver.config import LimitsConfig
from imserver.service.context import Context
from imserver.service.errors import ServiceError
from imserver.store import bots


@dataclass
class Bucket:
    """One sender's tokens; ``privileged`` is None until the database was asked."""

    tokens: float
    stamp: float
    privileged: bool | None = None
    checked_at: float = 0.0
    warned: bool = False
    admin: bool = False  # from the config: privileged for good, never asked about


class SenderLimiter:
    """Token buckets per bare JID; see the module docstring."""

    def __init__(
        self,
        limits: LimitsConfig,
        admins: tuple[str, ...],
        is_bot: Callable[[str], Awaitable[bool]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.admins = frozenset(admins)
        self.is_bot = is_bot
        self.clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self.refused = 0  # requests refused since start (for logs and tests)

    def __len__(self) -> int:
        return len(self._buckets)

    def _params(self, privileged: bool) -> tuple[float, int]:
        lim = self.limits
        return (lim.privileged_rate, lim.privileged_burst) if privileged else (lim.rate, lim.burst)

    def _bucket(self, jid: str, now: float) -> Bucket:
        bucket = self._buckets.get(jid)
        if bucket is None:
            admin = jid in self.admins
            burst = self._params(admin)[1]
            bucket = Bucket(float(burst), now, True if admin else None, now, admin=admin)
            self._buckets[jid] = bucket
            while len(self._buckets) > self.limits.max_senders:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(jid)
        return bucket

    def _refill(self, bucket: Bucket, now: float) -> None:
        rate, burst = self._params(bool(bucket.privileged))
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now

    async def admit(self, jid: str) -> bool:
        """Take one token for ``jid``; False when the sender is over its limit."""
        now = self.clock()
        bucket = self._bucket(jid, now)
        self._refill(bucket, now)
        if bucket.tokens < 1.0 and self._should_check(bucket, now):
            # Only a sender that used up its ordinary bucket costs a database query.
            bucket.checked_at = now
            privileged = await self.is_bot(jid)
            if privileged and not bucket.privileged:
                # Spent tokens count against the privileged burst too.
                spent = self.limits.burst - bucket.tokens
                bucket.tokens = max(0.0, self.limits.privileged_burst - spent)
            elif not privileged:
                bucket.tokens = min(bucket.tokens, float(self.limits.burst))
            bucket.privileged = privileged
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.warned = False
            return True
        self.refused += 1
        return False

    def _should_check(self, bucket: Bucket, now: float) -> bool:
        if bucket.admin:
            return False
        if bucket.privileged is None:
            return True
        return now - bucket.checked_at >= self.limits.privileged_recheck_seconds

    def first_refusal(self, jid: str) -> bool:
        """True once per run of refusals: chat messages are answered only the first time."""
        bucket = self._buckets.get(jid)
        if bucket is None or bucket.warned:
            return False
        bucket.warned = True
        return True

    async def require(self, jid: str) -> None:
        """Take a token or raise ``resource-constraint`` (type wait) with a human text."""
        if await self.admit(jid):
            return
        bucket = self._buckets.get(jid)
        rate, burst = self._params(bool(bucket and bucket.privileged))
        raise ServiceError(
            "resource-constraint",
            f"too many requests: at most {rate:g} a second (bursts of {burst}); "
            "wait a moment and send it again",
            "wait",
        )


def bot_lookup(ctx: Context) -> Callable[[str], Awaitable[bool]]:
    """``is_bot(jid)``: whether the JID reports payments for a merchant (bots table)."""

    async def is_bot(jid: str) -> bool:
        return await ctx.db.transaction(lambda conn: bots.is_bot(conn, jid))

    return is_bot


def build_limiter(ctx: Context) -> SenderLimiter:
    """The limiter of one component process, from the config."""
    return SenderLimiter(ctx.config.limits, ctx.config.admins, bot_lookup(ctx))
