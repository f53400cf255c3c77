"""A day of trade: the merchants' bots report payments and refunds, hour by hour.

Each bot is a logged-in client that sends ``<payment/>`` and ``<refund/>`` requests with
the protocol plugin, a few in flight at a time; a request that gets no answer is sent
again with the same id (the id is the idempotency key, so it is never paid twice).
Everything the bots are told is added up in a :class:`Tally`, which the summary then
compares with the database.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from slixmpp import Iq
from slixmpp.exceptions import IqTimeout

from imserver.demo.client import MemberClient
from imserver.demo.seed import City
from imserver.demo.servers import DemoError, Servers
from imserver.progress import Progress
from imserver.service.network_report import share_key

CURRENCY = "CNY"
# Relative trade of each hour of the day: quiet nights, lunch and dinner peaks.
HOURS = (1, 1, 1, 1, 1, 2, 4, 7, 9, 8, 9, 13, 15, 11, 9, 9, 10, 12, 15, 14, 11, 8, 5, 3)
REFUND_SHARE = 0.03  # of payments, refunded later in the day (half of them in part)
IN_FLIGHT = 8  # requests in flight per bot
TRIES = 3
TIMEOUT = 30.0
# Payers mostly shop in their own district.
LOCAL_SHOPPING = 0.8


@dataclass
class Tally:
    """What the bots were told, added up (amounts in minor units)."""

    payments: int = 0
    paid: int = 0
    refunds: int = 0
    refunded: int = 0
    shares: Counter[str] = field(default_factory=Counter)  # share_key -> net amount
    repeats: int = 0  # requests sent again after no answer

    def add(self, answer: Iq) -> None:
        """Add the shares of one ``<distribution/>`` answer."""
        for share in answer["distribution"]["shares"]:
            key = share_key(share["role"], share["level"], share["scope"])
            self.shares[key] += int(share["amount"])


@dataclass(frozen=True)
class Sale:
    """One payment to make: which merchant, who pays, how much, under which id."""

    merchant: str
    payer: str
    amount: int
    ref: str


def amount(rng: random.Random) -> int:
    """A price in fen: most a few tens of yuan, a few hundreds (log-normal)."""
    return max(100, min(200_000, round(math.exp(rng.gauss(math.log(4000), 0.8)))))


def plan_day(city: City, payments: int, rng: random.Random) -> list[list[Sale]]:
    """The payments of each hour of the day, ``payments`` in all."""
    weights = [HOURS[h % 24] for h in range(24)]
    per_hour = [payments * w // sum(weights) for w in weights]
    for h in sorted(range(24), key=lambda h: -weights[h])[: payments - sum(per_hour)]:
        per_hour[h] += 1
    merchants = list(city.merchants)
    popularity = [rng.uniform(0.5, 2.0) for _ in merchants]
    local = {m: city.users_in(city.merchants[m].district) or city.users for m in merchants}
    day: list[list[Sale]] = []
    n = 0
    for hour, count in enumerate(per_hour):
        sales = []
        for _ in range(count):
            merchant = rng.choices(merchants, popularity)[0]
            pool = local[merchant] if rng.random() < LOCAL_SHOPPING else city.users
            n += 1
            ref = f"{city.cast.tag}-{hour:02d}h-{n:05d}"
            sales.append(Sale(merchant, rng.choice(pool), amount(rng), ref))
        day.append(sales)
    return day


class Till:
    """A merchant's bot: sends the merchant's payments and refunds."""

    def __init__(self, client: MemberClient, merchant: str, component: str, tally: Tally) -> None:
        self.client, self.merchant, self.component, self.tally = (
            client,
            merchant,
            component,
            tally,
        )
        self.window = asyncio.Semaphore(IN_FLIGHT)

    async def _send(self, what: str, build: Callable[[], Awaitable[Iq]]) -> Iq:
        for attempt in range(TRIES):
            try:
                async with self.window:
                    return await build()
            except IqTimeout:
                self.tally.repeats += 1
                if attempt == TRIES - 1:
                    raise DemoError(f"{what}: no answer after {TRIES} tries") from None
        raise AssertionError("unreachable")

    async def pay(self, sale: Sale) -> None:
        """Report a payment; add what the component answered."""
        answer = await self._send(
            f"payment {sale.ref}",
            lambda: self.client.dist.pay(
                self.component, sale.ref, sale.payer, sale.amount, CURRENCY, timeout=TIMEOUT
            ),
        )
        self.tally.payments += 1
        self.tally.paid += sale.amount
        self.tally.add(answer)

    async def refund(self, sale: Sale, part: int) -> None:
        """Refund ``part`` of a payment; add the (negative) shares answered."""
        ref = f"{sale.ref}-refund"
        answer = await self._send(
            f"refund {ref}",
            lambda: self.client.dist.refund(self.component, ref, sale.ref, part, timeout=TIMEOUT),
        )
        self.tally.refunds += 1
        self.tally.refunded += part
        self.tally.add(answer)


async def run_day(servers: Servers, city: City, payments: int, rng: random.Random) -> Tally:
    """Log the bots in and trade for a day; return what they were told."""
    component = servers.config.xmpp.component
    tally = Tally()
    clients = await asyncio.gather(
        *(servers.login(bot, city.cast.password) for bot in city.bots.values())
    )
    tills = {
        merchant: Till(client, merchant, component, tally)
        for merchant, client in zip(city.bots, clients, strict=True)
    }
    try:
        day = plan_day(city, payments, rng)
        paid: list[Sale] = []
        step = Progress("payments", payments)
        for hour, sales in enumerate(day):
            refunds = _pick_refunds(paid, len(sales), rng)
            await asyncio.gather(
                *(tills[s.merchant].pay(s) for s in sales),
                *(tills[s.merchant].refund(s, part) for s, part in refunds),
            )
            paid.extend(sales)
            step.advance(
                len(sales),
                note=f"{hour:02d}:00-{hour:02d}:59  {tally.refunds} refunds  "
                f"volume {money(tally.paid - tally.refunded)}",
            )
        step.done()
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return tally


def _pick_refunds(paid: list[Sale], this_hour: int, rng: random.Random) -> list[tuple[Sale, int]]:
    """Some earlier payments to refund now (each one once), in full or in part."""
    count = min(len(paid), round(this_hour * REFUND_SHARE + rng.random() - 0.5))
    chosen = []
    for _ in range(max(count, 0)):
        sale = paid.pop(rng.randrange(len(paid)))
        part = sale.amount if rng.random() < 0.5 else max(1, sale.amount * rng.randint(1, 9) // 10)
        chosen.append((sale, part))
    return chosen


def money(minor: int) -> str:
    """An amount in fen as yuan: ``¥1,234.50``."""
    sign = "-" if minor < 0 else ""
    return f"{sign}¥{abs(minor) // 100:,}.{abs(minor) % 100:02d}"
