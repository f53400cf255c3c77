"""Seed the demo's city by the protocol: agents, merchants placed by coordinates and by
address, a bot for each merchant, and users joining through merchants and each other.

Every member is made by a request that a real client sends through Prosody: the admin
assigns agents, creates merchants and links their bots; each user logs in and sends its
own ``<register/>``. Accounts are written as Prosody files first (``write_accounts``).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from imserver.demo.city import AREAS, SHOPS, Shop
from imserver.demo.client import MemberClient
from imserver.demo.servers import DemoError, Servers
from imserver.devserver.accounts import write_accounts
from imserver.progress import Progress

# Users log in this many at a time to join; each wave joins only through members of
# earlier waves, so that a referrer is always a member already.
WAVE = 24
# Of the users, this share joins through a merchant; the rest through another user.
THROUGH_MERCHANT = 0.3


@dataclass(frozen=True)
class Cast:
    """Names of the run's accounts: ``<role>.<tag>@<domain>``, one password for all."""

    tag: str
    domain: str
    password: str

    def jid(self, local: str) -> str:
        """The JID of one of the run's accounts."""
        return f"{local}.{self.tag}@{self.domain}"


@dataclass
class City:
    """What the seeding made: who is who, and where."""

    cast: Cast
    agents: dict[str, str] = field(default_factory=dict)  # region code -> agent JID
    merchants: dict[str, Shop] = field(default_factory=dict)  # merchant JID -> its shop
    bots: dict[str, str] = field(default_factory=dict)  # merchant JID -> bot JID
    users: list[str] = field(default_factory=list)  # in joining order
    referrer: dict[str, str] = field(default_factory=dict)  # user JID -> referrer JID
    region: dict[str, str] = field(default_factory=dict)  # member JID -> region code

    def users_in(self, district: str) -> list[str]:
        """The users whose region is ``district``."""
        return [u for u in self.users if self.region.get(u) == district]


def plan_users(merchants: list[str], count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(user local part, referrer) for ``count`` users, referrers from earlier waves."""
    users: list[str] = []
    plan: list[tuple[str, str]] = []
    for i in range(count):
        earlier = users[: (i // WAVE) * WAVE]
        if not earlier or rng.random() < THROUGH_MERCHANT:
            referrer = rng.choice(merchants)
        else:
            referrer = rng.choice(earlier)
        local = f"user{i + 1:04d}"
        plan.append((local, referrer))
        users.append(local)
    return plan


async def seed(
    servers: Servers, admin: MemberClient, cast: Cast, users: int, rng: random.Random
) -> City:
    """Build the city through the component; return who is who."""
    component = servers.config.xmpp.component
    city = City(cast)
    agent_locals = {a.code: f"{a.name.lower()}-agent" for a in AREAS}
    bot_locals = {shop.local: f"{shop.local}-till" for shop in SHOPS}
    merchant_locals = [shop.local for shop in SHOPS]
    plan = plan_users(merchant_locals, users, rng)
    locals_ = [*agent_locals.values(), *merchant_locals, *bot_locals.values()]
    locals_ += [local for local, _ in plan]
    write_accounts(
        servers.data_path, cast.domain, [f"{x}.{cast.tag}" for x in locals_], cast.password
    )

    step = Progress("agents", len(AREAS))
    for area in AREAS:
        jid = cast.jid(agent_locals[area.code])
        await admin.dist.agent(component, jid, area.code, timeout=30)
        city.agents[area.code] = jid
        step.advance(note=f"{area.scope} {area.code} {area.name}")
    step.done()

    step = Progress("merchants", len(SHOPS))
    for shop in SHOPS:
        jid = cast.jid(shop.local)
        where = shop.location
        location = (
            {"address": where.address}
            if where.address is not None
            else {"lat": f"{where.lat:.6f}", "lon": f"{where.lon:.6f}"}
        )
        answer = await admin.dist.merchant(component, jid, shop.name, location, timeout=30)
        region = answer["member"]["region"]
        if region != shop.district:
            raise DemoError(f"{shop.name} at {shop.describe()} landed in {region}")
        city.merchants[jid] = shop
        city.region[jid] = region
        bot = cast.jid(bot_locals[shop.local])
        await admin.dist.bot(component, bot, jid, timeout=30)
        city.bots[jid] = bot
        step.advance(note=f"{shop.name} -> {region}")
    step.done()

    by_local = {shop.local: cast.jid(shop.local) for shop in SHOPS}
    step = Progress("users join", len(plan))
    for start in range(0, len(plan), WAVE):
        wave = [
            (cast.jid(local), by_local.get(ref) or cast.jid(ref))
            for local, ref in plan[start : start + WAVE]
        ]
        regions = await asyncio.gather(*(_join(servers, cast, u, r) for u, r in wave))
        for (user, ref), region in zip(wave, regions, strict=True):
            city.users.append(user)
            city.referrer[user] = ref
            city.region[user] = region
        step.advance(len(wave))
    step.done()
    return city


async def _join(servers: Servers, cast: Cast, user: str, referrer: str) -> str:
    """Log ``user`` in, join through ``referrer``, log out; the region it got."""
    client = await servers.login(user, cast.password)
    try:
        answer = await client.dist.register(servers.config.xmpp.component, referrer, timeout=30)
        return str(answer["member"]["region"])
    finally:
        await client.close()
