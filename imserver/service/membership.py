"""Joining the network and reading chains; merchants and agents (admin only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.domain import chains
from imserver.domain.jids import InvalidJid, normalize_jid
from imserver.domain.rulenumbers import make_rule_number, role_letter
from imserver.service.authz import Actor, Capability, resolve_actor
from imserver.service.context import Context
from imserver.service.errors import (
    bad_request,
    conflict,
    forbidden,
    not_acceptable,
    not_found,
)
from imserver.service.policies import current_policy
from imserver.service.views import ChainView, MemberView, member_view
from imserver.store import audit, bots, members, regions, repair
from imserver.store.records import MemberRecord, RegionRecord

MAX_NAME = 200


@dataclass(frozen=True)
class Location:
    """Where a merchant does business: exactly one of region, point or address."""

    region: str | None = None
    lat: float | None = None
    lon: float | None = None
    crs: str = "wgs84"
    address: str | None = None


def parse_jid(raw: str | None, what: str) -> str:
    """A normalised bare JID from a payload attribute, or bad-request naming it."""
    if not raw:
        raise bad_request(f"{what} is missing")
    try:
        return normalize_jid(raw)
    except InvalidJid as exc:
        raise bad_request(f"{what}: {exc}") from None


async def find_referrer(conn: AsyncConnection, ctx: Context, ref_jid: str) -> MemberRecord:
    """The member named as a referrer, whatever its status; a JID that was never a member
    gets item-not-found, one whose member was deleted (erased) not-acceptable."""
    ref = await members.get_by_jid(conn, ref_jid)
    if ref is None:
        if await members.is_erased(conn, ctx.erased_hash(ref_jid)):
            raise not_acceptable(f"referrer {ref_jid} has left the network")
        raise not_found(f"referrer {ref_jid} is not a member")
    return ref


async def refuse_bot(conn: AsyncConnection, jid: str) -> None:
    """A bot JID reports payments for its merchant and is never a member itself (linking
    a bot refuses a member's JID the same way)."""
    if await bots.merchant_of(conn, jid) is not None:
        raise conflict(f"{jid} is linked as a merchant's bot: unlink it first")


class Membership:
    """Registration, chains, merchants and agents."""

    def __init__(self, ctx: Context, resolver: RegionResolver | None = None) -> None:
        self.ctx = ctx
        self.resolver = resolver

    async def register(self, sender: str, referrer: str | None) -> MemberView:
        """Join through a referrer; the chains are computed and stored before the answer."""
        if not referrer:
            raise bad_request("say who referred you: referrer='their JID'")
        ref_jid = parse_jid(referrer, "referrer")
        if ref_jid == sender:
            raise bad_request("you cannot refer yourself")

        async def use_case(conn: AsyncConnection) -> MemberView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            if actor.member is not None:
                if actor.member.status == "terminated":
                    # Only deletion frees a JID (it then joins as a new member).
                    raise conflict(
                        f"{sender}'s membership ({actor.member.rule_number}) was terminated:"
                        " it cannot join again"
                    )
                raise conflict(f"{sender} is already a member ({actor.member.rule_number})")
            if not actor.may(Capability.REGISTER):
                raise forbidden(f"{sender} may not join this network")
            ref = await find_referrer(conn, self.ctx, ref_jid)
            above: list[int] = []
            if ref.active:
                # The referrer's line top-down, then the referrer, FOR SHARE: a repair of
                # that line waits for us, or we retry on its result (see store.repair).
                ref, above = await repair.lock_line(conn, ref.id, as_read=ref)
            if not ref.active:
                raise not_acceptable(f"referrer {ref_jid} is {ref.status}")
            # A referrer whose region code was retired since: the newcomer lands on the
            # successor (the referrer keeps its rule number and its code).
            home = await regions.live(conn, ref.region_code)
            if home is None:
                raise bad_request(f"unknown region {ref.region_code}")
            member = await self._create(conn, sender, "user", home, (ref, above))
            return member_view(member, ref.jid)

        return await self.ctx.db.transaction(use_case)

    async def _create(
        self,
        conn: AsyncConnection,
        jid: str,
        role: str,
        region: RegionRecord,
        referrer: tuple[MemberRecord, list[int]] | None,
        *,
        name: str | None = None,
        location: str | None = None,
    ) -> MemberRecord:
        """Insert a member with its rule number, upline and agency chain.

        ``region`` is live (``regions.live``); ``referrer`` is the referrer and its stored
        upline as ``repair.lock_line`` returned them.
        """
        now = self.ctx.clock()
        seq = await members.next_rule_seq(conn, region.code, role_letter(role))
        rule_number = make_rule_number(region.code, role, seq)
        created = await members.insert_member(
            conn,
            jid=jid,
            rule_number=rule_number,
            role=role,
            region_code=region.code,
            referrer_id=referrer[0].id if referrer else None,
            now=now,
            name=name,
            location=location,
        )
        if referrer is not None:
            ref, above = referrer
            await members.insert_upline(conn, created.id, chains.upline_below(ref.id, above))
        await self._store_agency(conn, created.id, region)
        return created

    async def _store_agency(
        self, conn: AsyncConnection, member_id: int, region: RegionRecord
    ) -> None:
        line = await regions.line_of(conn, region)
        agents = await members.agents_of(conn, [r.code for r in line], shared=True)
        links = chains.agency_chain([(r.code, r.level) for r in line], agents)
        await members.insert_agency(
            conn,
            member_id,
            [(chains.SCOPE_LEVELS[link.scope], link.region, link.agent_id) for link in links],
        )

    async def chain(self, sender: str, jid: str | None) -> ChainView:
        """A member and its chains; own chain for members, any for admins and its agents."""
        target = parse_jid(jid, "jid") if jid else sender

        async def use_case(conn: AsyncConnection) -> ChainView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            if target == sender and not actor.is_admin:
                actor.require(Capability.CHAIN_OWN)
            elif not actor.may(Capability.CHAIN_ANY) and not actor.may(Capability.CHAIN_REGION):
                raise forbidden("only admins and the member's agents may read another chain")
            member = await members.get_by_jid(conn, target)
            if member is None:
                raise not_found(f"{target} is not a member")
            agency = await members.agency_view(conn, member.id)
            if not actor.may(Capability.CHAIN_ANY) and target != sender:
                self._require_agent_of(actor, [a.region_code for a in agency])
            policy = await current_policy(conn)
            upline = await members.upline_view(conn, member.id, policy.policy.levels)
            referrer = upline[0].jid if upline else None
            return ChainView(member_view(member, referrer), upline, agency)

        return await self.ctx.db.transaction(use_case)

    @staticmethod
    def _require_agent_of(actor: Actor, region_codes: list[str]) -> None:
        if not set(actor.agent_regions) & set(region_codes):
            raise forbidden("you are not an agent of that member's region")

    async def add_merchant(
        self,
        sender: str,
        jid: str | None,
        name: str | None,
        referrer: str | None,
        location: Location,
    ) -> MemberView:
        """An admin adds a merchant at a business location (resolved to its region)."""
        merchant_jid = parse_jid(jid, "jid")
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise bad_request(f"name is required: printable text of at most {MAX_NAME} characters")
        ref_jid = parse_jid(referrer, "referrer") if referrer else None
        if ref_jid == merchant_jid:
            raise bad_request("a merchant cannot refer itself")
        region_code, location_text = await self._resolve_location(location)

        async def use_case(conn: AsyncConnection) -> MemberView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.MERCHANT_CREATE)
            existing = await members.get_by_jid(conn, merchant_jid)
            if existing is not None:
                raise conflict(f"{merchant_jid} is already a member ({existing.rule_number})")
            await refuse_bot(conn, merchant_jid)
            ref = None
            above: list[int] = []
            if ref_jid:
                ref = await find_referrer(conn, self.ctx, ref_jid)
                if ref.active:
                    ref, above = await repair.lock_line(conn, ref.id, as_read=ref)
                if not ref.active:
                    raise not_acceptable(f"referrer {ref_jid} is {ref.status}")
            region = await regions.live(conn, region_code)
            if region is None:
                raise bad_request(f"unknown region {region_code}")
            stored_location = location_text
            if region.code != region_code:
                # The loaded data set retired that code: record the step taken.
                stored_location = f"{location_text}; {region_code} was replaced by {region.code}"
            member = await self._create(
                conn,
                merchant_jid,
                "merchant",
                region,
                (ref, above) if ref is not None else None,
                name=name,
                location=stored_location[:400],
            )
            await audit.record(
                conn,
                at=self.ctx.clock(),
                actor=sender,
                action="merchant.add",
                target=merchant_jid,
                details={"region": region.code, "name": name, "location": stored_location},
            )
            return member_view(member, ref.jid if ref else None)

        return await self.ctx.db.transaction(use_case)

    async def _resolve_location(self, location: Location) -> tuple[str, str]:
        if location.region is not None:
            if not location.region.isdigit() or len(location.region) > 12:
                raise bad_request(f"region {location.region[:20]!r} is not a region code")
            return location.region, f"region:{location.region}"
        if self.resolver is None:
            raise bad_request("only <location region='…'/> is supported by this server")
        return await self.resolver.resolve(location)

    async def assign_agent(
        self, sender: str, jid: str | None, region_code: str | None
    ) -> MemberView:
        """Make a JID the agent of a region, replacing the previous one; chains follow."""
        agent_jid = parse_jid(jid, "jid")
        if not region_code or not region_code.isdigit() or len(region_code) > 12:
            raise bad_request("region must be a region code")

        async def use_case(conn: AsyncConnection) -> MemberView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.AGENT_ASSIGN)
            region = await regions.get(conn, region_code)
            if region is None:
                raise not_found(f"unknown region {region_code}")
            if region.successor_code:
                raise bad_request(f"region {region_code} was retired: use {region.successor_code}")
            if region.level not in chains.SCOPES:
                raise bad_request(f"region {region_code} has no agent level")
            member = await members.get_by_jid(conn, agent_jid, lock=True)
            if member is None:
                await refuse_bot(conn, agent_jid)
                member = await self._create(conn, agent_jid, "agent", region, None)
            elif not member.active:
                raise not_acceptable(f"{agent_jid} is {member.status}")
            previous = await members.set_agent(conn, region.code, member.id, self.ctx.clock())
            changed = await members.point_agency_at(conn, region.code, member.id)
            await audit.record(
                conn,
                at=self.ctx.clock(),
                actor=sender,
                action="agent.assign",
                target=agent_jid,
                details={"region": region.code, "replaced": previous, "chains": changed},
            )
            referrer = await members.upline_view(conn, member.id, 1)
            return member_view(member, referrer[0].jid if referrer else None)

        return await self.ctx.db.transaction(use_case)


class RegionResolver(Protocol):
    """Turns a coordinate or address location into a region code (see imserver.geo)."""

    async def resolve(self, location: Location) -> tuple[str, str]:
        """Return (region code, a text to store as the merchant's location)."""
        ...
