"""Thin read-only use cases of the human interface: who may run what, find a member,
region overview and members, statistics.

Each one resolves the sender and checks its capability (imserver.service.authz) in the
same transaction as the read, like every other use case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from imserver.domain.chains import SCOPES
from imserver.domain.rulenumbers import looks_like_rule_number
from imserver.service.authz import Capability, capabilities_of, resolve_actor
from imserver.service.context import Context
from imserver.service.errors import bad_request, forbidden, not_found
from imserver.service.inputs import parse_jid
from imserver.service.policies import current_policy
from imserver.service.views import MemberView, member_view
from imserver.store import members, regions, reports
from imserver.store.db import Conn
from imserver.store.records import AgencyView, MemberRecord, RegionRecord, UplineLink
from imserver.store.reports import SaleRecord

MAX_PAGE = 50
MAX_SALES = 200  # payments (and as many refunds) in one day's listing
# Per currency: (payments, amount paid, amount refunded), in minor units.
Volume = dict[str, tuple[int, int, int]]
MAX_CODE = 12


@dataclass(frozen=True)
class Access:
    """What a sender is and may do: the single source of command lists and checks."""

    jid: str
    kinds: frozenset[str]
    capabilities: frozenset[Capability]


@dataclass(frozen=True)
class MemberDetails:
    """A member found by an admin: its record, chains and position in the network."""

    member: MemberView
    joined: datetime
    upline: list[UplineLink] = field(default_factory=list)
    agents: list[AgencyView] = field(default_factory=list)
    direct_referrals: int = 0
    agent_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegionLevel:
    """One region in an overview: its agent (None when vacant) and active members."""

    code: str
    name: str
    scope: str  # province | city | district (or "level N" beyond the agency levels)
    agent: str | None
    members: int


@dataclass(frozen=True)
class RegionOverview:
    """A region, the line above it and the sub-regions below it."""

    region: RegionLevel
    above: list[RegionLevel]  # parent first, up to the province
    below: list[RegionLevel]  # direct sub-regions, by code
    volume: Volume = field(default_factory=dict)  # payments at the region's merchants

    @property
    def vacancies(self) -> int:
        """Vacant agent levels among the region, its line and its sub-regions."""
        return sum(1 for r in [self.region, *self.above, *self.below] if r.agent is None)


@dataclass(frozen=True)
class RegionEarnings:
    """What a region's agent earned from the region's members, and what they paid."""

    region: str
    agent: str | None
    earned: dict[str, tuple[int, int]]  # currency -> (payments, net earned)
    volume: dict[str, tuple[int, int, int]]  # currency -> (payments, paid, refunded)


@dataclass(frozen=True)
class MemberPage:
    """A page of a region's active members."""

    region: str
    members: list[MemberView]
    total: int
    offset: int


@dataclass(frozen=True)
class MerchantDay:
    """A merchant's payments and refunds of one UTC day, oldest first."""

    merchant: str
    day: date
    payments: list[SaleRecord]
    refunds: list[SaleRecord]
    truncated: bool  # more than MAX_SALES of either


@dataclass(frozen=True)
class Statistics:
    """Network-wide counts."""

    members: dict[tuple[str, str], int]  # (role, status) -> count
    agents: int
    bots: int
    policy_version: int
    volume: Volume = field(default_factory=dict)

    @property
    def active(self) -> int:
        """Active members, all roles."""
        return sum(n for (_role, status), n in self.members.items() if status == "active")


def _scope(level: int) -> str:
    return SCOPES.get(level, f"level {level}")


def _check_code(code: str | None) -> str:
    if not code or not code.isdigit() or len(code) > MAX_CODE:
        raise bad_request("region must be a region code (digits)")
    return code


class Queries:
    """Read-only use cases behind the chat and ad-hoc commands."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def access(self, sender: str) -> Access:
        """The kinds and capabilities of a sender (filters ``help`` and disco lists)."""

        async def use_case(conn: Conn) -> Access:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            return Access(sender, actor.kinds, capabilities_of(actor.kinds))

        return await self.ctx.db.transaction(use_case)

    async def require_any(self, sender: str, capabilities: frozenset[Capability]) -> Access:
        """The sender's access, or the error of a sender with none of the capabilities."""

        async def use_case(conn: Conn) -> Access:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            if capabilities:
                actor.require_any(capabilities)
            return Access(sender, actor.kinds, capabilities_of(actor.kinds))

        return await self.ctx.db.transaction(use_case)

    async def find_member(self, sender: str, query: str | None) -> MemberDetails:
        """An admin finds a member by bare JID or rule number."""
        text = (query or "").strip()
        if not text:
            raise bad_request("give a JID or a rule number")

        async def use_case(conn: Conn) -> MemberDetails:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.MEMBER_FIND)
            found: MemberRecord | None
            if looks_like_rule_number(text.upper()):
                found = await members.get_by_rule_number(conn, text.upper())
            else:
                found = await members.get_by_jid(conn, parse_jid(text, "jid"))
            if found is None:
                raise not_found(f"no member {text[:80]}")
            policy = await current_policy(conn)
            upline = await members.upline_view(conn, found.id, policy.policy.levels)
            return MemberDetails(
                member=member_view(found, upline[0].jid if upline else None),
                joined=found.created_at,
                upline=upline,
                agents=await members.agency_view(conn, found.id),
                direct_referrals=await reports.direct_referrals(conn, found.id),
                agent_of=tuple(sorted(await members.agent_regions_of(conn, found.id))),
            )

        return await self.ctx.db.transaction(use_case)

    async def region_overview(self, sender: str, code: str | None) -> RegionOverview:
        """An admin's view of a region: agents and vacancies at each level, members."""
        wanted = _check_code(code)

        async def use_case(conn: Conn) -> RegionOverview:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.REGION_VIEW)
            region = await regions.live(conn, wanted)
            if region is None:
                raise not_found(f"unknown region {wanted}")
            line = await regions.line(conn, region.code)
            below = await reports.children(conn, region.code)
            everything: list[RegionRecord] = [*line, *below]
            codes = [r.code for r in everything]
            agents = await reports.agent_jids(conn, codes)
            counts = await reports.active_members_in(conn, codes)

            def level(r: RegionRecord) -> RegionLevel:
                return RegionLevel(
                    r.code, r.name, _scope(r.level), agents.get(r.code), counts[r.code]
                )

            return RegionOverview(
                level(line[0]),
                [level(r) for r in line[1:]],
                [level(r) for r in below],
                await reports.payment_volume(conn, region.code),
            )

        return await self.ctx.db.transaction(use_case)

    async def region_members(self, sender: str, code: str | None, offset: int = 0) -> MemberPage:
        """A page of a region's members: admins any region, agents their own regions.

        An agent that names no region gets its first region; an agent of a city may
        list any district inside it.
        """
        if offset < 0:
            raise bad_request("offset must not be negative")
        wanted = _check_code(code) if code else None

        async def use_case(conn: Conn) -> MemberPage:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.REGION_MEMBERS)
            target = wanted
            if target is None:
                if not actor.agent_regions:
                    raise bad_request("name a region code")
                target = sorted(actor.agent_regions)[0]
            region = await regions.live(conn, target)
            if region is None:
                raise not_found(f"unknown region {target}")
            if not actor.is_admin:
                line = {r.code for r in await regions.line(conn, region.code)}
                if not line & set(actor.agent_regions):
                    raise forbidden("you are not an agent of that region")
            page, total = await reports.members_in(conn, region.code, limit=MAX_PAGE, offset=offset)
            views = [member_view(m, None) for m in page]
            return MemberPage(region.code, views, total, offset)

        return await self.ctx.db.transaction(use_case)

    async def region_earnings(self, sender: str, code: str | None) -> RegionEarnings:
        """An agent's earnings from a region's members (its own region by default) and
        the region's payment volume; admins may name any region (its current agent)."""
        wanted = _check_code(code) if code else None

        async def use_case(conn: Conn) -> RegionEarnings:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.REGION_MEMBERS)
            target = wanted or (sorted(actor.agent_regions)[0] if actor.agent_regions else None)
            if target is None:
                raise bad_request("name a region code")
            region = await regions.live(conn, target)
            if region is None:
                raise not_found(f"unknown region {target}")
            if actor.is_admin:
                agent_id = (await members.agents_of(conn, [region.code])).get(region.code)
            elif region.code in actor.agent_regions and actor.member is not None:
                agent_id = actor.member.id
            else:
                raise forbidden("you are not the agent of that region")
            agent = await members.get_by_id(conn, agent_id) if agent_id is not None else None
            earned = await reports.agent_earnings(conn, agent.id, region.code) if agent else {}
            volume = await reports.payment_volume(conn, region.code)
            return RegionEarnings(region.code, agent.jid if agent else None, earned, volume)

        return await self.ctx.db.transaction(use_case)

    async def statistics(self, sender: str) -> Statistics:
        """Network-wide counts, for admins."""

        async def use_case(conn: Conn) -> Statistics:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.STATS)
            policy = await current_policy(conn)
            return Statistics(
                members=await reports.members_by_role_status(conn),
                agents=await reports.agent_count(conn),
                bots=await reports.bot_count(conn),
                policy_version=policy.version,
                volume=await reports.payment_volume(conn),
            )

        return await self.ctx.db.transaction(use_case)

    async def merchant_sales(
        self, sender: str, day: str | None, merchant: str | None = None
    ) -> MerchantDay:
        """A merchant's payments and refunds of a UTC day (default: today).

        Merchants and their bots read their own; admins name any merchant.
        """
        try:
            wanted = date.fromisoformat(day) if day else self.ctx.clock().astimezone(UTC).date()
        except ValueError:
            raise bad_request("day must be a date: YYYY-MM-DD") from None
        merchant_jid = parse_jid(merchant, "merchant") if merchant else None
        start = datetime.combine(wanted, time(), tzinfo=UTC)

        async def use_case(conn: Conn) -> MerchantDay:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.MERCHANT_SALES)
            found: MemberRecord | None
            if merchant_jid is not None and actor.is_admin:
                found = await members.get_by_jid(conn, merchant_jid)
            elif merchant_jid is not None and merchant_jid != sender:
                raise forbidden("only admins may read another merchant's sales")
            elif actor.bot_of is not None and actor.member is None:
                found = await members.get_by_id(conn, actor.bot_of)
            else:
                found = actor.member
            if found is None or found.role != "merchant":
                raise not_found(f"{merchant_jid or sender} is not a merchant")
            payments, refunds = await reports.merchant_sales(
                conn, found.id, start, start + timedelta(days=1), limit=MAX_SALES + 1
            )
            truncated = len(payments) > MAX_SALES or len(refunds) > MAX_SALES
            return MerchantDay(
                found.jid, wanted, payments[:MAX_SALES], refunds[:MAX_SALES], truncated
            )

        return await self.ctx.db.transaction(use_case)
