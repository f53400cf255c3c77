"""Members, rule numbers and stored chains."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Table,
    and_,
    any_,
    bindparam,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from imserver.store.db import Retry
from imserver.store.dialect import bulk_insert, for_update, reserve_ids, takes_row_locks, upsert
from imserver.store.models import AgencyLink, Agent, Bot, Member, Region, RuleCounter, Upline
from imserver.store.prebuilt import locked, per_dialect
from imserver.store.records import AgencyView, ChainMember, MemberRecord, PayerChain, UplineLink

_MEMBER_COLS = (
    Member.id,
    Member.jid,
    Member.rule_number,
    Member.role,
    Member.region_code,
    Member.referrer_id,
    Member.status,
    Member.name,
    Member.created_at,
)


# Built once: aliasing an entity adapts every column, which cost more than the query
# itself when done on each call (a payment reads the upline and the agency chain).
_ANCESTOR = aliased(Member, name="ancestor")
_AGENT = aliased(Member, name="agent")


def _record(row: Any) -> MemberRecord:
    return MemberRecord(*row)


# Built once, executed with a parameter dict (see store.prebuilt).
_BY_JID = select(*_MEMBER_COLS).where(Member.jid == bindparam("jid"))
_BY_ID = select(*_MEMBER_COLS).where(Member.id == bindparam("member_id"))
_BY_RULE_NUMBER = select(*_MEMBER_COLS).where(Member.rule_number == bindparam("rule_number"))
_ERASED = select(Member.id).where(Member.erased_hash == bindparam("erased_hash")).limit(1)
# No VALUES: the parameter dict names the columns (one compiled form for every call).
_INSERT_MEMBER = insert(Member).returning(*_MEMBER_COLS)
_UPLINE_IDS = (
    select(Upline.ancestor_id)
    .where(Upline.member_id == bindparam("member_id"))
    .order_by(Upline.level)
)
_INSERT_UPLINE = insert(Upline)
_INSERT_AGENCY = insert(AgencyLink)
_AGENTS_IN = select(Agent.region_code, Agent.member_id).where(
    Agent.region_code.in_(bindparam("codes", expanding=True))
)
_AGENTS_IN_SORTED = _AGENTS_IN.order_by(Agent.region_code)
_KEY_SHARE_REGIONS = (
    select(Region.code)
    .where(Region.code.in_(bindparam("codes", expanding=True)))
    .order_by(Region.code)
    .with_for_update(read=True, key_share=True)
)
_AGENT_REGIONS = select(Agent.region_code).where(Agent.member_id == bindparam("member_id"))


async def _one(conn: AsyncConnection, stmt: Any, params: dict[str, Any]) -> MemberRecord | None:
    row = (await conn.execute(stmt, params)).first()
    return _record(row) if row else None


async def get_by_jid(
    conn: AsyncConnection, jid: str, *, lock: bool = False, shared: bool = False
) -> MemberRecord | None:
    """The member whose bare JID is ``jid`` (locked for update, or shared, when asked)."""
    stmt = locked(conn, _BY_JID, shared=shared) if lock or shared else _BY_JID
    return await _one(conn, stmt, {"jid": jid})


async def get_by_id(
    conn: AsyncConnection, member_id: int, *, lock: bool = False
) -> MemberRecord | None:
    """The member with this id."""
    return await _one(conn, locked(conn, _BY_ID) if lock else _BY_ID, {"member_id": member_id})


async def get_by_rule_number(conn: AsyncConnection, rule_number: str) -> MemberRecord | None:
    """The member with this rule number."""
    return await _one(conn, _BY_RULE_NUMBER, {"rule_number": rule_number})


async def is_erased(conn: AsyncConnection, erased_hash: str) -> bool:
    """True when a deleted member once had the JID with this keyed hash."""
    return (await conn.execute(_ERASED, {"erased_hash": erased_hash})).first() is not None


async def next_rule_seq(conn: AsyncConnection, region: str, letter: str) -> int:
    """Take the next sequence number of a region and role; never handed out twice."""
    return await take_rule_seqs(conn, region, letter, 1)


async def insert_member(
    conn: AsyncConnection,
    *,
    jid: str,
    rule_number: str,
    role: str,
    region_code: str,
    referrer_id: int | None,
    now: datetime,
    name: str | None = None,
    location: str | None = None,
) -> MemberRecord:
    """Insert a new active member and return it as stored."""
    params = {
        "jid": jid,
        "rule_number": rule_number,
        "role": role,
        "region_code": region_code,
        "referrer_id": referrer_id,
        "original_referrer_id": referrer_id,
        "status": "active",
        "name": name,
        "location": location,
        "created_at": now,
    }
    return _record((await conn.execute(_INSERT_MEMBER, params)).one())


async def upline_ids(conn: AsyncConnection, member_id: int) -> list[int]:
    """The stored upline of a member, nearest first."""
    return list((await conn.execute(_UPLINE_IDS, {"member_id": member_id})).scalars())


async def insert_upline(conn: AsyncConnection, member_id: int, ancestors: Sequence[int]) -> None:
    """Store a new member's upline (nearest first)."""
    if ancestors:
        await conn.execute(
            _INSERT_UPLINE,
            [
                {"member_id": member_id, "level": i, "ancestor_id": a}
                for i, a in enumerate(ancestors, 1)
            ],
        )


async def upline_view(conn: AsyncConnection, member_id: int, levels: int) -> list[UplineLink]:
    """The stored upline with each ancestor's JID and rule number, up to ``levels``."""
    anc = _ANCESTOR
    stmt = (
        select(Upline.level, anc.id, anc.jid, anc.rule_number)
        .join(anc, anc.id == Upline.ancestor_id)
        .where(Upline.member_id == member_id, Upline.level <= levels)
        .order_by(Upline.level)
    )
    return [UplineLink(*row) for row in await conn.execute(stmt)]


async def insert_agency(
    conn: AsyncConnection, member_id: int, links: Sequence[tuple[int, str, int | None]]
) -> None:
    """Store a new member's agency chain: (scope level, region code, agent id or None)."""
    if links:
        await conn.execute(
            _INSERT_AGENCY,
            [
                {"member_id": member_id, "scope_level": lvl, "region_code": code, "agent_id": agent}
                for lvl, code, agent in links
            ],
        )


async def agency_view(conn: AsyncConnection, member_id: int) -> list[AgencyView]:
    """The stored agency chain with agents' JIDs, district first."""
    agent = _AGENT
    stmt = (
        select(AgencyLink.scope_level, AgencyLink.region_code, AgencyLink.agent_id, agent.jid)
        .outerjoin(agent, agent.id == AgencyLink.agent_id)
        .where(AgencyLink.member_id == member_id)
        .order_by(AgencyLink.scope_level.desc())
    )
    return [AgencyView(*row) for row in await conn.execute(stmt)]


async def agents_of(
    conn: AsyncConnection, region_codes: Sequence[str], *, shared: bool = False
) -> dict[str, int]:
    """The active agent of each of these regions that has one.

    ``shared`` locks the agents rows FOR SHARE: a registration storing them in a new chain
    keeps a concurrent termination of the agent from vacating the region behind its back.
    """
    codes = {"codes": list(region_codes)}
    if shared and takes_row_locks(conn):
        # KEY SHARE on the regions themselves (what the foreign keys of the new rows take
        # anyway): an agent assignment locks its region FOR UPDATE, so either it waits for
        # us or we wait for it and then read its agent, even where no agents row existed.
        await conn.execute(_KEY_SHARE_REGIONS, codes)
    stmt = locked(conn, _AGENTS_IN_SORTED, shared=True) if shared else _AGENTS_IN
    return {code: mid for code, mid in await conn.execute(stmt, codes)}


async def set_agent(
    conn: AsyncConnection, region_code: str, member_id: int, now: datetime
) -> int | None:
    """Make ``member_id`` the region's agent; return the agent it replaced, if any."""
    # The region row first: registrations in the region hold KEY SHARE on it while they
    # store its agent (see agents_of), so the chains updated after this see them all.
    await conn.execute(for_update(conn, select(Region.code).where(Region.code == region_code)))
    prev = (
        await conn.execute(
            for_update(conn, select(Agent.member_id).where(Agent.region_code == region_code))
        )
    ).scalar_one_or_none()
    stmt = upsert(conn, Agent).values(region_code=region_code, member_id=member_id, assigned_at=now)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[Agent.region_code],
            set_={"member_id": member_id, "assigned_at": now},
        )
    )
    return int(prev) if prev is not None else None


async def point_agency_at(conn: AsyncConnection, region_code: str, agent_id: int | None) -> int:
    """Set the agent of every stored agency link of a region (set-based); rows changed."""
    stmt = (
        update(AgencyLink)
        .where(
            and_(
                AgencyLink.region_code == region_code,
                AgencyLink.agent_id.is_distinct_from(agent_id),
            )
        )
        .values(agent_id=agent_id if agent_id is not None else literal(None))
    )
    return (await conn.execute(stmt)).rowcount


async def agent_regions_of(conn: AsyncConnection, member_id: int) -> list[str]:
    """The regions where this member is the active agent."""
    return list((await conn.execute(_AGENT_REGIONS, {"member_id": member_id})).scalars())


async def payer_chains(
    conn: AsyncConnection, jids: Sequence[str], levels: int
) -> dict[str, PayerChain]:
    """Payers by JID with their stored upline (up to ``levels``) and agency chain.

    Three statements for any number of payers; JIDs that are no member are left out.
    """
    if not jids:
        return {}
    found = {
        r.id: r
        for r in map(_record, await conn.execute(select(*_MEMBER_COLS).where(Member.jid.in_(jids))))
    }
    if not found:
        return {}
    ids = list(found)
    anc = _ANCESTOR
    uplines: dict[int, list[ChainMember]] = {i: [] for i in ids}
    stmt = (
        select(Upline.member_id, anc.id, anc.jid, anc.status)
        .join(anc, anc.id == Upline.ancestor_id)
        .where(Upline.member_id.in_(ids), Upline.level <= levels)
        .order_by(Upline.member_id, Upline.level)
    )
    for member_id, aid, ajid, status in await conn.execute(stmt):
        uplines[member_id].append(ChainMember(aid, ajid, status == "active"))
    agent = _AGENT
    agency: dict[int, list[tuple[int, ChainMember | None]]] = {i: [] for i in ids}
    agency_stmt = (
        select(AgencyLink.member_id, AgencyLink.scope_level, agent.id, agent.jid, agent.status)
        .outerjoin(agent, agent.id == AgencyLink.agent_id)
        .where(AgencyLink.member_id.in_(ids))
        .order_by(AgencyLink.member_id, AgencyLink.scope_level.desc())
    )
    for member_id, level, gid, gjid, status in await conn.execute(agency_stmt):
        who = ChainMember(gid, gjid, status == "active") if gid is not None else None
        agency[member_id].append((level, who))
    return {m.jid: PayerChain(m, tuple(uplines[i]), tuple(agency[i])) for i, m in found.items()}


# -- Registration batches (service.membership): a few statements for any number --------

_MEMBERS: Table = Member.__table__  # type: ignore[assignment]
_UPLINES: Table = Upline.__table__  # type: ignore[assignment]
_AGENCY: Table = AgencyLink.__table__  # type: ignore[assignment]
_MEMBER_INSERT = (
    "id", "jid", "rule_number", "role", "region_code", "referrer_id", "original_referrer_id",
    "status", "name", "location", "created_at",
)  # fmt: skip
_UPLINE_INSERT = ("member_id", "level", "ancestor_id")
_AGENCY_INSERT = ("member_id", "scope_level", "region_code", "agent_id")

_BY_JIDS = select(*_MEMBER_COLS).where(Member.jid.in_(bindparam("jids", expanding=True)))
_BY_IDS = select(*_MEMBER_COLS).where(Member.id.in_(bindparam("ids", expanding=True)))
_ERASED_AMONG = (
    select(Member.erased_hash)
    .where(Member.erased_hash.in_(bindparam("hashes", expanding=True)))
    .distinct()
)
_BOTS_AMONG = select(Bot.jid).where(Bot.jid.in_(bindparam("jids", expanding=True)))
_UPLINES_OF = (
    select(Upline.member_id, Upline.ancestor_id)
    .where(Upline.member_id.in_(bindparam("ids", expanding=True)))
    .order_by(Upline.member_id, Upline.level)
)
# PostgreSQL only (SQLite has nothing to lock). Rows lock in ORDER BY order: the order
# of the array.
_ORDER = bindparam("order", type_=ARRAY(BigInteger))
_LOCK_IN_ORDER = (
    select(Member.id)
    .where(Member.id == any_(_ORDER))
    .order_by(func.array_position(_ORDER, Member.id))
    .with_for_update(read=True)
)


async def by_jids(conn: AsyncConnection, jids: Collection[str]) -> dict[str, MemberRecord]:
    """The members among these bare JIDs, by JID (one statement)."""
    if not jids:
        return {}
    rows = await conn.execute(_BY_JIDS, {"jids": list(jids)})
    return {m.jid: m for m in map(_record, rows)}


async def jids_of_rule_numbers(
    conn: AsyncConnection, rule_numbers: Collection[str]
) -> dict[str, str]:
    """The JID of the member holding each of these rule numbers (invite codes)."""
    stmt = select(Member.rule_number, Member.jid).where(Member.rule_number.in_(rule_numbers))
    return {rule: jid for rule, jid in await conn.execute(stmt)}


async def by_ids(conn: AsyncConnection, ids: Collection[int]) -> dict[int, MemberRecord]:
    """The members with these ids, by id (one statement)."""
    if not ids:
        return {}
    rows = await conn.execute(_BY_IDS, {"ids": list(ids)})
    return {m.id: m for m in map(_record, rows)}


async def erased_among(conn: AsyncConnection, hashes: Collection[str]) -> set[str]:
    """The keyed JID hashes (``Context.erased_hash``) that a deleted member once had."""
    if not hashes:
        return set()
    found = (await conn.execute(_ERASED_AMONG, {"hashes": list(hashes)})).scalars()
    return {h for h in found if h is not None}


async def bots_among(conn: AsyncConnection, jids: Collection[str]) -> set[str]:
    """The JIDs among these that are linked as a merchant's bot (never members)."""
    if not jids:
        return set()
    return set((await conn.execute(_BOTS_AMONG, {"jids": list(jids)})).scalars())


async def uplines_of(conn: AsyncConnection, ids: Collection[int]) -> dict[int, list[int]]:
    """The stored upline of each of these members, nearest first ([] for a root)."""
    out: dict[int, list[int]] = {i: [] for i in ids}
    if out:
        for member_id, ancestor_id in await conn.execute(_UPLINES_OF, {"ids": list(out)}):
            out[member_id].append(ancestor_id)
    return out


async def lock_lines(
    conn: AsyncConnection, referrers: Mapping[int, MemberRecord], lines: Mapping[int, list[int]]
) -> dict[int, MemberRecord]:
    """``repair.lock_line`` for several referrers at once: their stored uplines and then
    themselves FOR SHARE, in one statement, and the referrers as they are under the locks.

    ``lines`` is each referrer's stored upline as read before (nearest first). The rows
    lock level by level from the farthest (every line's level 3, then 2, then 1, then
    the referrers), the top-down order in which a repair locks a line, so a repair and a
    registration under the same line queue instead of deadlocking. (Across two lines that
    a concurrent repair both touches, PostgreSQL may still find a deadlock: the batch then
    runs again, like any transaction that loses one.) Raises ``Retry`` when an upline
    changed before it was locked: a repair committed meanwhile. On SQLite the transaction
    holds the database's write lock already: nothing to lock, nothing can have changed.
    """
    if not takes_row_locks(conn) or not referrers:
        return dict(referrers)
    order: dict[int, None] = {}  # ordered and without repeats
    for level in range(max(map(len, lines.values()), default=0), 0, -1):
        for ref_id in sorted(lines):
            if len(lines[ref_id]) >= level:
                order.setdefault(lines[ref_id][level - 1])
    for ref_id in sorted(referrers):
        order.setdefault(ref_id)
    await conn.execute(_LOCK_IN_ORDER, {"order": list(order)})
    locked_refs = await by_ids(conn, list(referrers))
    if await uplines_of(conn, list(referrers)) != {i: lines[i] for i in referrers}:
        raise Retry()
    return locked_refs


async def take_rule_seqs(conn: AsyncConnection, region: str, letter: str, count: int) -> int:
    """Take ``count`` sequence numbers of a region and role at once; returns the last one
    (the numbers are the ``count`` up to it). Never handed out twice."""
    stmt = per_dialect(conn, _take_rule_seqs)
    params = {"p_region": region, "p_letter": letter, "p_count": count}
    return int((await conn.execute(stmt, params)).scalar_one())


def _take_rule_seqs(conn: AsyncConnection) -> Any:
    ins = upsert(conn, RuleCounter).values(
        region_code=bindparam("p_region"),
        letter=bindparam("p_letter"),
        last_seq=bindparam("p_count"),
    )
    return ins.on_conflict_do_update(
        index_elements=[RuleCounter.region_code, RuleCounter.letter],
        set_={"last_seq": RuleCounter.last_seq + ins.excluded.last_seq},
    ).returning(RuleCounter.last_seq)


async def new_member_ids(conn: AsyncConnection, count: int) -> list[int]:
    """Ids for ``count`` members about to be inserted (see ``dialect.reserve_ids``)."""
    return await reserve_ids(conn, _MEMBERS, count)


async def insert_members(conn: AsyncConnection, new: Sequence[MemberRecord]) -> None:
    """Insert new members as given (ids from ``new_member_ids``), in order: a member may
    name one inserted before it as its referrer. Their binding at registration is their
    referrer; they have no location."""
    await bulk_insert(
        conn,
        _MEMBERS,
        _MEMBER_INSERT,
        [
            (m.id, m.jid, m.rule_number, m.role, m.region_code, m.referrer_id, m.referrer_id,
             m.status, m.name, None, m.created_at)
            for m in new
        ],
    )  # fmt: skip


async def insert_uplines(conn: AsyncConnection, rows: Sequence[tuple[int, int, int]]) -> None:
    """Store new members' uplines: (member, level, ancestor) rows."""
    await bulk_insert(conn, _UPLINES, _UPLINE_INSERT, rows)


async def insert_agency_links(
    conn: AsyncConnection, rows: Sequence[tuple[int, int, str, int | None]]
) -> None:
    """Store new members' agency chains: (member, scope level, region code, agent) rows."""
    await bulk_insert(conn, _AGENCY, _AGENCY_INSERT, rows)


async def count_of_domain(conn: AsyncConnection, domain: str) -> int:
    """How many active members have a JID of ``domain`` (a scan: for rare admin actions)."""
    stmt = select(func.count()).where(
        Member.jid.endswith(f"@{domain}", autoescape=True), Member.status == "active"
    )
    return int((await conn.execute(stmt)).scalar_one())
