"""Loading the region data set into the database."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.geo.regions import Region
from imserver.service.context import Context
from imserver.store import regions


def _micro(deg: float) -> int:
    return round(deg * 1_000_000)


async def load_regions(ctx: Context, data: Sequence[Region]) -> int:
    """Insert or update every region by code in one transaction; members are untouched."""
    rows: list[dict[str, object]] = [
        {
            "code": r.code,
            "name": r.name,
            "level": r.level,
            "parent_code": r.parent,
            "lat_e6": _micro(r.lat),
            "lon_e6": _micro(r.lon),
            "successor_code": r.successor,
        }
        for r in data
    ]

    async def use_case(conn: AsyncConnection) -> int:
        return await regions.upsert_many(conn, rows)

    return await ctx.db.transaction(use_case)


async def region_count(ctx: Context) -> int:
    """How many regions the database holds."""
    return await ctx.db.transaction(regions.count)
