"""The region table: load, look up, walk to the root."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import upsert
from imserver.store.models import Region
from imserver.store.records import RegionRecord

MAX_SUCCESSOR_HOPS = 10


async def get(conn: AsyncConnection, code: str) -> RegionRecord | None:
    """The region with this code, whatever its state."""
    row = (
        await conn.execute(
            select(
                Region.code, Region.name, Region.level, Region.parent_code, Region.successor_code
            ).where(Region.code == code)
        )
    ).first()
    return RegionRecord(*row) if row else None


async def live(conn: AsyncConnection, code: str) -> RegionRecord | None:
    """The region, or its successor when the code was retired (chains follow successors)."""
    region = await get(conn, code)
    hops = 0
    while region is not None and region.successor_code and hops < MAX_SUCCESSOR_HOPS:
        region = await get(conn, region.successor_code)
        hops += 1
    return region


async def line(conn: AsyncConnection, code: str) -> list[RegionRecord]:
    """The region and its ancestors, the region first."""
    out: list[RegionRecord] = []
    current: str | None = code
    while current is not None and len(out) < 6:
        region = await get(conn, current)
        if region is None:
            break
        out.append(region)
        current = region.parent_code
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
