"""Chain repair, reassignment and erasure as set-based SQL.

Every statement here is driven by an index on the member being changed
(``uplines.ancestor_id``, ``uplines`` primary key, ``members.referrer_id``,
``agency_links.agent_id``), so its cost grows with the number of chains that change,
never with the size of the network, and no unrelated row is rewritten.

Invariants kept (and relied on):
- only active members have stored uplines, and a stored upline holds only active
  members (nearest first, at most ``MAX_LEVELS`` levels);
- an active member's ``referrer_id`` is its stored level 1 (or NULL for a root).

Locking (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises every writer anyway):
a use case that changes a member's place locks the member's stored upline FOR SHARE,
farthest ancestor first, and then the member itself FOR NO KEY UPDATE; a registration locks
the referrer's upline the same way and then the referrer FOR SHARE. Everyone locks
top-down along the tree, so a repair and a registration under the same line queue
behind each other instead of deadlocking, and whoever comes second sees the first
one's committed chains (or, having read them before waiting, retries).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from imserver.domain.policy import MAX_LEVELS
from imserver.store.db import Retry
from imserver.store.dialect import ids_in, takes_row_locks
from imserver.store.members import get_by_id, upline_ids
from imserver.store.models import (
    ERASURE,
    AgencyLink,
    Agent,
    Base,
    Bot,
    Member,
    OutboxMessage,
    Upline,
)
from imserver.store.records import MemberRecord


def erasure_columns(rule: str) -> tuple[Column[Any], ...]:
    """Every column of the schema that declares ``rule`` (``models.erased``), in a stable
    order: erasure rewrites exactly what the models declare, nothing is looked up by name."""
    return tuple(
        column
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if column.info.get(ERASURE) == rule
    )


PSEUDONYM_DOMAIN = "erased.invalid"  # RFC 2606: no real JID can ever be in it


@dataclass(frozen=True)
class Repaired:
    """What one removal or move changed."""

    chains: int  # stored uplines rewritten (members whose chain ran through the member)
    children: int  # direct referrals re-attached
    vacated: tuple[str, ...] = ()  # regions whose agent level became vacant


def pseudonym(member_id: int) -> str:
    """The JID that replaces a deleted member's JID: unique, stable, never a real JID."""
    return f"erased-{member_id}@{PSEUDONYM_DOMAIN}"


# -- locking -------------------------------------------------------------------------------


# PostgreSQL only (SQLite has nothing to lock), built once. Rows lock in ORDER BY order
# (the sort runs below the lock): the line farthest first.
_LINE = bindparam("line", type_=ARRAY(BigInteger))
_LOCK_LINE = (
    select(Member.id)
    .where(Member.id == any_(_LINE))
    .order_by(func.array_position(_LINE, Member.id).desc())
    .with_for_update(read=True)
)
_LOCK_MEMBER = select(Member.id).where(Member.id == bindparam("member_id"))
_LOCK_SHARED = _LOCK_MEMBER.with_for_update(read=True)
_LOCK_NO_KEY = _LOCK_MEMBER.with_for_update(key_share=True)


async def lock_line(
    conn: AsyncConnection,
    member_id: int,
    *,
    exclusive: bool = False,
    as_read: MemberRecord | None = None,
) -> tuple[MemberRecord, list[int]]:
    """Lock a member's stored upline FOR SHARE (farthest first), then the member itself.

    The member is locked FOR SHARE, or FOR NO KEY UPDATE when ``exclusive`` (it is about
    to change place; NO KEY so that foreign-key checks of rows being inserted elsewhere,
    which take KEY SHARE, never wait for it and so cannot close a deadlock). Returns the
    member and its stored upline as they are under the locks; raises ``Retry`` when the
    upline changed between reading and locking it (a repair or move committed meanwhile),
    so the use case starts again on fresh data. On SQLite the transaction already holds
    the database's write lock: nothing to lock, nothing can change, so ``as_read`` (the
    member as this transaction read it) is returned as it is when given.
    """
    before = await upline_ids(conn, member_id)
    if not takes_row_locks(conn):
        member = as_read if as_read is not None else await get_by_id(conn, member_id)
        if member is None:
            raise LookupError(f"member {member_id} vanished")
        return member, before
    if before:
        await conn.execute(_LOCK_LINE, {"line": before})
    await conn.execute(_LOCK_NO_KEY if exclusive else _LOCK_SHARED, {"member_id": member_id})
    member = await get_by_id(conn, member_id)
    if member is None:
        raise LookupError(f"member {member_id} vanished")
    if await upline_ids(conn, member_id) != before:
        raise Retry()
    return member, before


async def ancestor_line(conn: AsyncConnection, member_id: int) -> list[int]:
    """The whole live ancestor line of a member (not only the stored levels), nearest first.

    A recursive CTE over ``members.referrer_id``; ``UNION`` (not ``UNION ALL``) stops even
    on corrupt data with a cycle. Its cost is the depth of the line.
    """
    line = (
        select(Member.referrer_id.label("id"), literal(1).label("depth"))
        .where(Member.id == member_id, Member.referrer_id.is_not(None))
        .cte("line", recursive=True)
    )
    parent = aliased(Member)
    line = line.union(
        select(parent.referrer_id, line.c.depth + 1)
        .join(line, parent.id == line.c.id)
        .where(parent.referrer_id.is_not(None))
    )
    rows = await conn.execute(select(line.c.id, line.c.depth).order_by(line.c.depth))
    seen: list[int] = []
    for ancestor, _depth in rows:
        if ancestor in seen:
            break
        seen.append(int(ancestor))
    return seen


# -- chains --------------------------------------------------------------------------------


async def _count_through(conn: AsyncConnection, member_id: int) -> int:
    stmt = select(func.count()).select_from(Upline).where(Upline.ancestor_id == member_id)
    return int((await conn.execute(stmt)).scalar_one())


async def _delete_levels_beyond(conn: AsyncConnection, pivot: int) -> None:
    """For every member M with ``pivot`` at level k: delete M's stored levels above k."""
    at = aliased(Upline)
    through = exists().where(
        and_(at.member_id == Upline.member_id, at.ancestor_id == pivot, at.level < Upline.level)
    )
    at_pivot = aliased(Upline)
    members_through = select(at_pivot.member_id).where(at_pivot.ancestor_id == pivot)
    selected = ids_in(conn, Upline.member_id, members_through)
    await conn.execute(delete(Upline).where(selected, through))


async def _graft(conn: AsyncConnection, pivot: int, source: int, shift: int) -> None:
    """For every M with ``pivot`` at level k, store ``source``'s level j at level k+j+shift.

    ``shift`` is -1 when the pivot's place is taken by the line above it (removal) and 0
    when the line is appended below the pivot (move). Rows at or below the capped level
    only; one INSERT … SELECT.
    """
    below = aliased(Upline)
    line = aliased(Upline)
    level = below.level + line.level + shift
    min_line_level = 2 if shift < 0 else 1
    stmt = insert(Upline).from_select(
        ["member_id", "level", "ancestor_id"],
        select(below.member_id, level, line.ancestor_id)
        .join(line, line.member_id == literal(source))
        .where(
            below.ancestor_id == pivot,
            line.level >= min_line_level,
            level <= MAX_LEVELS,
        ),
    )
    await conn.execute(stmt)


async def remove_from_chains(conn: AsyncConnection, member: MemberRecord) -> Repaired:
    """Take a member out of every live chain; its place goes to its own stored upline.

    For each stored row (M, k, X): M's levels >= k become X's upline, shifted to start at
    k (cut at MAX_LEVELS); X's direct referrals get X's level 1 as their live referrer
    (or become roots); X's own stored upline is dropped; the regions X was agent of become
    vacant. The caller holds ``lock_line(..., exclusive=True)`` on X.
    """
    x = member.id
    upline = await upline_ids(conn, x)
    chains = await _count_through(conn, x)
    if chains:
        await _delete_levels_beyond(conn, x)
        await _graft(conn, x, x, -1)
        if upline:
            await conn.execute(
                update(Upline).where(Upline.ancestor_id == x).values(ancestor_id=upline[0])
            )
        else:
            await conn.execute(delete(Upline).where(Upline.ancestor_id == x))
    await conn.execute(delete(Upline).where(Upline.member_id == x))
    children = (
        await conn.execute(
            update(Member)
            .where(Member.referrer_id == x, Member.status == "active")
            .values(referrer_id=upline[0] if upline else literal(None))
        )
    ).rowcount
    vacated = await vacate_agencies(conn, x)
    return Repaired(chains, children, vacated)


async def vacate_agencies(conn: AsyncConnection, agent_id: int) -> tuple[str, ...]:
    """Leave every region level this member was agent of vacant (set-based)."""
    regions = tuple(
        sorted(
            (
                await conn.execute(
                    delete(Agent).where(Agent.member_id == agent_id).returning(Agent.region_code)
                )
            ).scalars()
        )
    )
    # After the agents rows: a registration reading an agent holds FOR SHARE on its row,
    # so deleting it first waits for such registrations, and the update below sees them.
    await conn.execute(
        update(AgencyLink).where(AgencyLink.agent_id == agent_id).values(agent_id=literal(None))
    )
    return regions


async def move_under(
    conn: AsyncConnection, member_id: int, new_referrer_id: int, new_upline: Sequence[int]
) -> Repaired:
    """Put a member (and so its whole downline) under another referrer.

    ``new_upline`` is the member's new stored upline (the new referrer first). Every
    member M with the moved member at level k gets its levels above k from it.
    """
    chains = await _count_through(conn, member_id)
    if chains:
        await _delete_levels_beyond(conn, member_id)
    await conn.execute(delete(Upline).where(Upline.member_id == member_id))
    if new_upline:
        await conn.execute(
            insert(Upline),
            [
                {"member_id": member_id, "level": i, "ancestor_id": a}
                for i, a in enumerate(new_upline[:MAX_LEVELS], 1)
            ],
        )
    if chains:
        await _graft(conn, member_id, member_id, 0)
    await conn.execute(
        update(Member).where(Member.id == member_id).values(referrer_id=new_referrer_id)
    )
    return Repaired(chains + 1, 0)


# -- status and erasure --------------------------------------------------------------------


async def mark_ended(conn: AsyncConnection, member_id: int, status: str, now: datetime) -> None:
    """Set a member's final status and the time its service ended (kept when already set)."""
    await conn.execute(
        update(Member)
        .where(Member.id == member_id)
        .values(status=status, ended_at=func.coalesce(Member.ended_at, now))
    )


async def erase(
    conn: AsyncConnection, member: MemberRecord, erased_hash: str, now: datetime
) -> str:
    """Replace a member's JID by a pseudonym everywhere and drop its personal fields.

    What each column holds is declared with the models (``models.erased``): ``members.jid``
    becomes the pseudonym and ``erased_hash`` keeps a keyed hash of the old JID (so a
    deleted referrer is told apart from an unknown one); the member's ``drop`` fields go;
    every ``jid`` column holding the JID, every whole JSON string in a ``json`` column and
    every occurrence in a ``text`` column is rewritten to the pseudonym. Unsent
    notifications to the member are dropped and its bot links end. Amounts are never
    touched. Returns the pseudonym.
    """
    alias = pseudonym(member.id)
    jid = member.jid
    dropped = {c.name: literal(None) for c in erasure_columns("drop") if c.table is _MEMBERS}
    await conn.execute(
        update(Member)
        .where(Member.id == member.id)
        .values(
            jid=alias,
            erased_hash=erased_hash,
            status="deleted",
            ended_at=func.coalesce(Member.ended_at, now),
            **dropped,
        )
    )
    # A deleted member is never messaged again; what was queued for it is settled.
    await conn.execute(
        update(OutboxMessage)
        .where(OutboxMessage.recipient == jid, OutboxMessage.sent_at.is_(None))
        .values(sent_at=now)
    )
    await conn.execute(delete(Bot).where(Bot.merchant_id == member.id))
    for col in erasure_columns("jid"):
        await conn.execute(update(col.table).where(col == jid).values({col.name: alias}))
    # Free text and JSON have no index on a JID inside them: one scan of these tables per
    # deletion (the audit log and withdrawals grow at admin rate, the outbox with earnings).
    # Erasure is rare; the repair itself never scans.
    for col in erasure_columns("text"):
        await _replace_inside(conn, col, jid, alias)
    # Writers may or may not escape non-ASCII: look for the JID as both JSON spellings.
    for quoted in sorted({json.dumps(jid, ensure_ascii=False), json.dumps(jid)}):
        for col in erasure_columns("json"):
            await _replace_inside(conn, col, quoted, json.dumps(alias))
    return alias


async def _replace_inside(conn: AsyncConnection, col: Column[Any], old: str, new: str) -> None:
    pattern = "%" + old.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    await conn.execute(
        update(col.table)
        .where(col.like(pattern, escape="\\"))
        .values({col.name: func.replace(col, old, new)})
    )


_MEMBERS = Member.__table__


__all__ = [
    "Repaired",
    "ancestor_line",
    "erase",
    "erasure_columns",
    "lock_line",
    "mark_ended",
    "move_under",
    "pseudonym",
    "remove_from_chains",
    "vacate_agencies",
]
