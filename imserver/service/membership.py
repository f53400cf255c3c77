"""Joining the network and reading chains; merchants and agents (admin only)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from imserver.domain import chains
from imserver.domain.invites import invite_code
from imserver.domain.jids import domain_of
from imserver.domain.rulenumbers import make_rule_number, role_letter
from imserver.service import federation
from imserver.service.authz import ADMIN, BOT, FOREIGN, NONMEMBER, Actor, Capability, resolve_actor
from imserver.service.batching import GroupCommit
from imserver.service.context import Context
from imserver.service.errors import (
    ServiceError,
    bad_request,
    conflict,
    forbidden,
    not_acceptable,
    not_found,
)
from imserver.service.inputs import parse_jid
from imserver.service.policies import current_policy
from imserver.service.views import ChainView, MemberView, member_view
from imserver.store import audit, bots, members, regions, repair
from imserver.store.db import Conn
from imserver.store.records import MemberRecord, RegionRecord

log = logging.getLogger(__name__)
MAX_NAME = 200
USER_ROLE = "user"  # what registration makes (merchants and agents are made by admins)


@dataclass(frozen=True)
class Location:
    """Where a merchant does business: exactly one of region, point or address."""

    region: str | None = None
    lat: float | None = None
    lon: float | None = None
    crs: str = "wgs84"
    address: str | None = None
    # The district the sender accepts for a point near a border (one of the candidates
    # a refusal named); None: place it only where the data is sure.
    accept: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where a location placed a merchant: the region code and the text stored with it.

    ``choice`` is set when the point lay within the uncertainty band and the sender
    chose among the candidates: what the audit log records of that choice.
    """

    code: str
    text: str
    choice: dict[str, Any] | None = None


async def find_referrer(conn: Conn, ctx: Context, ref_jid: str) -> MemberRecord:
    """The member named as a referrer, whatever its status; a JID that was never a member
    gets item-not-found, one whose member was deleted (erased) not-acceptable."""
    ref = await members.get_by_jid(conn, ref_jid)
    if ref is None:
        if await members.is_erased(conn, ctx.erased_hash(ref_jid)):
            raise not_acceptable(f"referrer {ref_jid} has left the network")
        raise not_found(f"referrer {ref_jid} is not a member")
    return ref


async def refuse_bot(conn: Conn, jid: str) -> None:
    """A bot JID reports payments for its merchant and is never a member itself (linking
    a bot refuses a member's JID the same way)."""
    if await bots.merchant_of(conn, jid) is not None:
        raise conflict(f"{jid} is linked as a merchant's bot: unlink it first")


@dataclass(frozen=True)
class _Joining:
    """A registration request that passed the checks needing no database."""

    sender: str
    # The referrer's normalised JID (not the sender); with an invite code, the JID of the
    # code's member once the batch has read it (None: no member has that code).
    referrer: str | None
    code: str | None = None  # the invite code (rule number) the newcomer named


@dataclass
class _Newcomer:
    """A registration of the batch that passed every check: written with the batch."""

    index: int  # its place in the batch
    jid: str
    # Its referrer: a stored member, or the place in the batch's newcomers of one who
    # registered earlier in the same batch.
    referrer: MemberRecord | int
    home: RegionRecord
    record: MemberRecord | None = None  # once its id and rule number are taken
    upline: list[int] | None = None


def _refuse_member(sender: str, member: MemberRecord) -> ServiceError:
    """The refusal of a sender that is (or was, and was terminated) a member already."""
    if member.status == "terminated":
        # Only deletion frees a JID (it then joins as a new member).
        return conflict(
            f"{sender}'s membership ({member.rule_number}) was terminated: it cannot join again"
        )
    return conflict(f"{sender} is already a member ({member.rule_number})")


class Membership:
    """Registration, chains, merchants and agents.

    Registrations go through one writer per process (group commit, like payments): the
    requests that arrive together are checked one by one, in order, against what the
    batch read in a few statements, and written by a few set-based statements in one
    transaction; each gets its own answer after the commit.
    """

    def __init__(self, ctx: Context, resolver: RegionResolver | None = None) -> None:
        self.ctx = ctx
        self.resolver = resolver
        self.writer: GroupCommit[_Joining, MemberView] = GroupCommit(
            ctx.db,
            self._register_batch,
            name="registrations",
            cap=ctx.config.registrations.batch_max,
        )

    async def close(self) -> None:
        """Stop the registration writer (the batch in flight finishes first)."""
        await self.writer.close()
        if self.writer.batches:
            log.info("registrations: %d in %d batches", self.writer.items, self.writer.batches)

    async def register(self, sender: str, referrer: str | None) -> MemberView:
        """Join through a referrer, named by JID or by its invite code (its rule number);
        the chains are computed and stored before the answer."""
        if not referrer:
            raise bad_request("say who referred you: referrer='their JID or invite code'")
        code = invite_code(referrer)
        if code is not None:
            return await self.writer.submit(_Joining(sender, None, code))
        if "@" not in referrer:
            raise bad_request(
                f"referrer {referrer[:40]!r} is neither a JID (user@domain) nor an invite "
                "code (a rule number such as 440305-U00000123)"
            )
        ref_jid = parse_jid(referrer, "referrer")
        if ref_jid == sender:
            raise bad_request("you cannot refer yourself")
        return await self.writer.submit(_Joining(sender, ref_jid))

    def _may_join(self, sender: str, is_bot: bool, gate: federation.Gate) -> bool:
        """``resolve_actor(sender).may("register")`` for a sender that is no member, from
        what the batch read (kept in step with ``authz.resolve_actor``)."""
        kinds = {ADMIN} if sender in self.ctx.config.admins else set()
        if gate.blocked(sender):
            kinds.add(FOREIGN)
        if is_bot:
            kinds.add(BOT)
        elif FOREIGN not in kinds:
            kinds.add(NONMEMBER)
        return Actor(sender, frozenset(kinds)).may(Capability.REGISTER)

    def _join_refusal(self, sender: str, is_bot: bool, gate: federation.Gate) -> ServiceError:
        """Why ``sender`` may not join (``_may_join`` said no), and what would do."""
        if is_bot:
            return forbidden(
                f"{sender} is a merchant's bot, which cannot be a member; "
                "join from a personal JID, or have the merchant unlink it first"
            )
        if gate.blocked(sender):
            return forbidden(f"members of {domain_of(sender)} may not join this network")
        return forbidden(f"{sender} may not join this network")

    async def _register_batch(
        self, conn: Conn, batch: Sequence[_Joining]
    ) -> list[MemberView | ServiceError]:
        """Answer a batch of registrations in one transaction (see ``GroupCommit``).

        Each request is checked in the protocol's order (already a member, may not join,
        unknown referrer, referrer ended, unknown region) against the database as read
        at the start of the batch plus the registrations before it in the batch: the
        same JID twice is a member the second time, and a newcomer may refer the next.
        """
        batch = await self._name_invited(conn, batch)
        senders = {j.sender for j in batch}
        gate = await federation.gate(conn, senders, self.ctx.config, self.ctx.clock())
        named = {j.referrer for j in batch if j.referrer is not None}
        stored = await members.by_jids(conn, senders | named)
        bots = await members.bots_among(conn, senders - stored.keys())
        hashes = {self.ctx.erased_hash(r): r for r in named - stored.keys()}
        erased = {hashes[h] for h in await members.erased_among(conn, hashes)}
        lines = await self._lock_referrers(conn, stored, named)
        found = await regions.reachable(
            conn, {stored[r].region_code for r in named if r in stored and stored[r].active}
        )
        out: list[MemberView | ServiceError | None] = [None] * len(batch)
        newcomers: list[_Newcomer] = []
        joined: dict[str, int] = {}  # JID -> its place in newcomers
        repeats: list[tuple[int, int]] = []  # (place in the batch, place in newcomers)
        for i, j in enumerate(batch):
            try:
                if j.sender in joined:
                    repeats.append((i, joined[j.sender]))
                    continue
                newcomer = self._check(i, j, stored, bots, erased, joined, newcomers, found, gate)
                newcomers.append(newcomer)
                joined[j.sender] = len(newcomers) - 1
            except ServiceError as exc:
                out[i] = exc
        if newcomers:
            await self._write(conn, newcomers, lines, found)
            await gate.save(conn)
        for n in newcomers:
            assert n.record is not None
            ref = n.referrer if isinstance(n.referrer, MemberRecord) else newcomers[n.referrer]
            out[n.index] = member_view(n.record, ref.jid)
        for i, place in repeats:
            record = newcomers[place].record
            assert record is not None
            out[i] = _refuse_member(record.jid, record)
        assert all(o is not None for o in out)
        return out  # type: ignore[return-value]

    @staticmethod
    async def _name_invited(conn: Conn, batch: Sequence[_Joining]) -> list[_Joining]:
        """The batch with the referrer of each invite code filled in: the JID of the
        code's member, whatever its status (a deleted member's is its pseudonym)."""
        codes = {j.code for j in batch if j.code is not None}
        if not codes:
            return list(batch)
        owners = await members.jids_of_rule_numbers(conn, codes)
        return [
            _Joining(j.sender, owners.get(j.code), j.code) if j.code is not None else j
            for j in batch
        ]

    async def _lock_referrers(
        self, conn: Conn, stored: dict[str, MemberRecord], named: set[str]
    ) -> dict[int, list[int]]:
        """Lock the stored lines of the active referrers (PostgreSQL; see store.repair),
        put the referrers as they are under the locks into ``stored``, and return each
        one's stored upline by id."""
        active = {m.id: m for r in named if (m := stored.get(r)) is not None and m.active}
        if len(active) == 1:
            # One line, the usual batch: the lock a registration alone has always taken
            # (the seam that tests/test_repair.py orders a repair against).
            ((ref_id, ref),) = active.items()
            ref, above = await repair.lock_line(conn, ref_id, as_read=ref)
            locked, lines = {ref_id: ref}, {ref_id: above}
        else:
            lines = await members.uplines_of(conn, active)
            locked = await members.lock_lines(conn, active, lines)
        for r in named:
            m = stored.get(r)
            if m is not None and m.id in locked:
                # Under the JID as named: a deletion committed meanwhile renamed the row.
                stored[r] = locked[m.id]
        return lines

    def _check(
        self,
        index: int,
        j: _Joining,
        stored: dict[str, MemberRecord],
        bots: set[str],
        erased: set[str],
        joined: dict[str, int],
        newcomers: list[_Newcomer],
        found: dict[str, RegionRecord],
        gate: federation.Gate,
    ) -> _Newcomer:
        """Every check of one registration, in the protocol's order; a newcomer or the
        refusal."""
        member = stored.get(j.sender)
        if member is not None:
            raise _refuse_member(j.sender, member)
        if not self._may_join(j.sender, j.sender in bots, gate):
            raise self._join_refusal(j.sender, j.sender in bots, gate)
        if j.referrer is None:
            raise not_found(f"invite {j.code} is no member's: check the code")
        if j.referrer in joined:  # registered earlier in this batch: active, and live
            place = joined[j.referrer]
            gate.admit(j.sender, j.referrer, j.code is not None)
            return _Newcomer(index, j.sender, place, newcomers[place].home)
        ref = stored.get(j.referrer)
        if ref is None:
            if j.referrer in erased:
                raise not_acceptable(f"referrer {j.referrer} has left the network")
            raise not_found(f"referrer {j.referrer} is not a member")
        if not ref.active:
            if j.code is not None:
                # Never the JID: the code does not reveal it, and a deleted one is erased.
                raise not_acceptable(
                    f"invite {j.code} registers nobody: its member was {ref.status}"
                )
            raise not_acceptable(f"referrer {j.referrer} is {ref.status}")
        # A referrer whose region code was retired since: the newcomer lands on the
        # successor (the referrer keeps its rule number and its code).
        home = regions.live_in(found, ref.region_code)
        if home is None:
            raise bad_request(f"unknown region {ref.region_code}")
        # Last: a refusal for any other reason does not count against the domain.
        gate.admit(j.sender, ref.jid, j.code is not None)
        return _Newcomer(index, j.sender, ref, home)

    async def _write(
        self,
        conn: Conn,
        newcomers: list[_Newcomer],
        lines: dict[int, list[int]],
        found: dict[str, RegionRecord],
    ) -> None:
        """Number the newcomers and store them with their uplines and agency chains.

        ``lines`` holds the stored upline of each stored referrer, ``found`` the regions
        read for the batch (``regions.reachable``).
        """
        home_lines = {n.home.code: regions.line_in(found, n.home) for n in newcomers}
        codes = sorted({r.code for line in home_lines.values() for r in line})
        agents = await members.agents_of(conn, codes, shared=True)
        agency = {
            code: [
                (chains.SCOPE_LEVELS[link.scope], link.region, link.agent_id)
                for link in chains.agency_chain([(r.code, r.level) for r in line], agents)
            ]
            for code, line in home_lines.items()
        }
        # One counter update per region for the whole batch, the regions in code order
        # (two processes' batches then lock their counters in the same order).
        letter = role_letter(USER_ROLE)
        wanted = Counter(n.home.code for n in newcomers)
        next_seq: dict[str, int] = {}
        for code in sorted(wanted):
            last = await members.take_rule_seqs(conn, code, letter, wanted[code])
            next_seq[code] = last - wanted[code] + 1
        ids = await members.new_member_ids(conn, len(newcomers))
        now = self.ctx.clock()
        upline_rows: list[tuple[int, int, int]] = []
        agency_rows: list[tuple[int, int, str, int | None]] = []
        for n, member_id in zip(newcomers, ids, strict=True):
            if isinstance(n.referrer, MemberRecord):
                ref_id, above = n.referrer.id, lines[n.referrer.id]
            else:
                first = newcomers[n.referrer]  # earlier in the batch: numbered already
                assert first.record is not None and first.upline is not None
                ref_id, above = first.record.id, first.upline
            code = n.home.code
            seq, next_seq[code] = next_seq[code], next_seq[code] + 1
            n.record = MemberRecord(
                member_id, n.jid, make_rule_number(code, USER_ROLE, seq), USER_ROLE, code,
                ref_id, "active", None, now,
            )  # fmt: skip
            n.upline = chains.upline_below(ref_id, above)
            upline_rows.extend((member_id, lvl, a) for lvl, a in enumerate(n.upline, 1))
            agency_rows.extend((member_id, *link) for link in agency[code])
        await members.insert_members(conn, [n.record for n in newcomers if n.record])
        await members.insert_uplines(conn, upline_rows)
        await members.insert_agency_links(conn, agency_rows)

    async def _create(
        self,
        conn: Conn,
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

    async def _store_agency(self, conn: Conn, member_id: int, region: RegionRecord) -> None:
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

        async def use_case(conn: Conn) -> ChainView:
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
        placement = await self._resolve_location(location)
        region_code, location_text = placement.code, placement.text

        async def use_case(conn: Conn) -> MemberView:
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
                details={
                    "region": region.code,
                    "name": name,
                    "location": stored_location,
                    **({"choice": placement.choice} if placement.choice else {}),
                },
            )
            return member_view(member, ref.jid if ref else None)

        return await self.ctx.db.transaction(use_case)

    async def _resolve_location(self, location: Location) -> Placement:
        if location.region is not None:
            if not location.region.isdigit() or len(location.region) > 12:
                raise bad_request(f"region {location.region[:20]!r} is not a region code")
            if location.accept is not None:
                raise bad_request("accept='…' goes with coordinates or an address, not a region")
            return Placement(location.region, f"region:{location.region}")
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

        async def use_case(conn: Conn) -> MemberView:
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

    async def resolve(self, location: Location) -> Placement:
        """Where the location places a merchant (not-acceptable when a person must choose)."""
        ...
