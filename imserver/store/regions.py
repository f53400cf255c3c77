"""The region table: load, look up, walk to the root."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from sqlalchemy import (
    SmallInteger,
    String,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import upsert
from imserver.store.models import AgencyLink, Agent, Member, Region
from imserver.store.records import RegionRecord

MAX_SUCCESSOR_HOPS = 10
MAX_LINE = 6  # a region and its ancestors: more means a cycle in the data


# Built once (see store.prebuilt): a registration reads a region line on every call.
_GET = select(
    Region.code, Region.name, Region.level, Region.parent_code, Region.successor_code
).where(Region.code == bindparam("code"))


async def get(conn: AsyncConnection, code: str) -> RegionRecord | None:
    """The region with this code, whatever its state."""
    row = (await conn.execute(_GET, {"code": code})).first()
    return RegionRecord(*row) if row else None


async def live(conn: AsyncConnection, code: str) -> RegionRecord | None:
    """The region, or its successor when the code was retired (chains follow successors)."""
    region = await get(conn, code)
    hops = 0
    while region is not None and region.successor_code and hops < MAX_SUCCESSOR_HOPS:
        region = await get(conn, region.successor_code)
        hops += 1
    return region


# Every region reachable from the given codes through successors and parents: what
# ``live`` and ``line_of`` would read for each of them, in one statement for a whole
# registration batch. UNION (not UNION ALL) ends the walk even on a cycle in the data.
_ROW = (Region.code, Region.name, Region.level, Region.parent_code, Region.successor_code)
_WALK = (
    select(*_ROW)
    .where(Region.code.in_(bindparam("codes", expanding=True)))
    .cte("walk", recursive=True)
)
_NEXT = Region.__table__.alias("next_region")
_WALK = _WALK.union(
    select(*(_NEXT.c[c.key] for c in _ROW)).join(
        _WALK, or_(_NEXT.c.code == _WALK.c.parent_code, _NEXT.c.code == _WALK.c.successor_code)
    )
)
_REACHABLE = select(_WALK)


async def reachable(conn: AsyncConnection, codes: Collection[str]) -> dict[str, RegionRecord]:
    """These regions and every one reachable from them by successors and parents, by code:
    enough for ``live_in`` and ``line_in`` of each code (one statement)."""
    if not codes:
        return {}
    rows = await conn.execute(_REACHABLE, {"codes": sorted(codes)})
    return {row[0]: RegionRecord(*row) for row in rows}


def live_in(found: Mapping[str, RegionRecord], code: str) -> RegionRecord | None:
    """``live``, over regions already read (``reachable``)."""
    region = found.get(code)
    hops = 0
    while region is not None and region.successor_code and hops < MAX_SUCCESSOR_HOPS:
        region = found.get(region.successor_code)
        hops += 1
    return region


def line_in(found: Mapping[str, RegionRecord], region: RegionRecord) -> list[RegionRecord]:
    """``line_of``, over regions already read (``reachable``)."""
    out = [region]
    current = region.parent_code
    while current is not None and len(out) < MAX_LINE:
        parent = found.get(current)
        if parent is None:
            break
        out.append(parent)
        current = parent.parent_code
    return out


async def line(conn: AsyncConnection, code: str) -> list[RegionRecord]:
    """The region and its ancestors, the region first."""
    region = await get(conn, code)
    return await line_of(conn, region) if region is not None else []


async def line_of(conn: AsyncConnection, region: RegionRecord) -> list[RegionRecord]:
    """A region already read and its ancestors, the region first."""
    out = [region]
    current = region.parent_code
    while current is not None and len(out) < MAX_LINE:
        parent = await get(conn, current)
        if parent is None:
            break
        out.append(parent)
        current = parent.parent_code
    return out


async def count(conn: AsyncConnection) -> int:
    """How many regions are loaded."""
    return int((await conn.execute(select(func.count()).select_from(Region))).scalar_one())


async def upsert_many(conn: AsyncConnection, rows: Iterable[dict[str, object]]) -> int:
    """Insert or update regions by code (members keep pointing at their codes)."""
    batch = list(rows)
    if not batch:
        return 0
    for i in range(0, len(batch), 500):
        stmt = upsert(conn, Region).values(batch[i : i + 500])
        excluded = stmt.excluded
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[Region.code],
                set_={
                    "name": excluded.name,
                    "level": excluded.level,
                    "parent_code": excluded.parent_code,
                    "lat_e6": excluded.lat_e6,
                    "lon_e6": excluded.lon_e6,
                    "successor_code": excluded.successor_code,
                },
            )
        )
    return len(batch)


async def clear(conn: AsyncConnection) -> None:
    """Remove every region (only for an empty database)."""
    await conn.execute(delete(Region))


# --- A new data set over a populated database (region codes retired, regions moved) ----

RegionShape = tuple[int, str | None, str | None]  # level, parent code, successor code


async def shapes(conn: AsyncConnection) -> dict[str, RegionShape]:
    """Every region's level, parent and successor, by code (a few thousand rows)."""
    stmt = select(Region.code, Region.level, Region.parent_code, Region.successor_code)
    return {code: (level, parent, succ) for code, level, parent, succ in await conn.execute(stmt)}


async def member_region_codes(conn: AsyncConnection) -> set[str]:
    """The region codes that members were issued with (one per rule-number prefix)."""
    return set((await conn.execute(select(Member.region_code).distinct())).scalars())


async def codes_linked_to_retired(conn: AsyncConnection) -> set[str]:
    """Region codes of members whose stored agency chain names a retired region."""
    stmt = (
        select(Member.region_code)
        .distinct()
        .join(AgencyLink, AgencyLink.member_id == Member.id)
        .join(Region, Region.code == AgencyLink.region_code)
        .where(Region.successor_code.is_not(None))
    )
    return set((await conn.execute(stmt)).scalars())


async def agents_by_region(conn: AsyncConnection) -> dict[str, int]:
    """The active agent of every region that has one."""
    stmt = select(Agent.region_code, Agent.member_id)
    return {code: int(mid) for code, mid in await conn.execute(stmt)}


async def move_agent(conn: AsyncConnection, from_code: str, to_code: str) -> None:
    """Re-key a region's agent row to another region (the agent and its date stay)."""
    await conn.execute(
        update(Agent).where(Agent.region_code == from_code).values(region_code=to_code)
    )


async def relink_agency(
    conn: AsyncConnection,
    member_codes: Sequence[str],
    links: Sequence[tuple[int, str, int | None]],
) -> int:
    """Replace the agency chain of every member issued in ``member_codes`` (set-based).

    ``links`` is the new chain as (scope level, region code, agent id or None), the same
    for all of them; returns how many members were re-linked.
    """
    in_codes = select(Member.id).where(Member.region_code.in_(member_codes))
    await conn.execute(delete(AgencyLink).where(AgencyLink.member_id.in_(in_codes)))
    for level, code, agent_id in links:
        # Typed casts: PostgreSQL cannot infer the type of a bare parameter in a SELECT list.
        rows = select(
            Member.id,
            cast(literal(level), SmallInteger),
            cast(literal(code), String(12)),
            cast(literal(agent_id) if agent_id is not None else null(), Member.id.type),
        ).where(Member.region_code.in_(member_codes))
        await conn.execute(
            insert(AgencyLink).from_select(
                [
                    AgencyLink.member_id,
                    AgencyLink.scope_level,
                    AgencyLink.region_code,
                    AgencyLink.agent_id,
                ],
                rows,
            )
        )
    count = select(func.count()).select_from(Member).where(Member.region_code.in_(member_codes))
    return int((await conn.execute(count)).scalar_one())
