"""A newer region data set over a populated database, through the real service.

Retired codes (a renumbering, a merger) and a region moved under another parent: chains
follow the successor's line, rule numbers keep the code they were issued with, newcomers
at a retired code land on the successor, and nobody is lost.  Both databases, each on a
fresh database of its own (the shared session service keeps the shipped data).
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.config import load_config
from imserver.geo.regions import RegionDataError, default_regions_path, load_regions_csv
from imserver.service.context import Context
from imserver.service.errors import ServiceError
from imserver.service.membership import Location, Membership
from imserver.service.policies import seed_policy
from imserver.service.regions import load_regions
from imserver.service.registry import Services
from imserver.store.db import Database
from imserver.store.migrate import upgrade
from imserver.store.models import Member
from tests.conftest import BACKENDS, _drop_pg_database, _fresh_pg_database

ADMIN = "admin@localhost"
REPO = Path(__file__).parents[1]


@dataclass
class World:
    services: Services
    tmp: Path

    @property
    def membership(self) -> Membership:
        return self.services.membership

    async def agents(self, jid: str) -> list[tuple[int, str, str | None]]:
        view = await self.membership.chain(ADMIN, jid)
        return [(a.scope_level, a.region_code, a.agent_jid) for a in view.agents]

    async def member_count(self) -> int:
        async def count(conn: AsyncConnection) -> int:
            return int((await conn.execute(select(func.count()).select_from(Member))).scalar_one())

        return await self.services.ctx.db.transaction(count)


@pytest.fixture(params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """A fresh, migrated database with the shipped regions and the real services."""
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'regions.sqlite3'}"
    else:
        pg_name, url = await _fresh_pg_database()
    await asyncio.to_thread(upgrade, url)
    config = load_config(
        REPO / "config.toml",
        env={"IMSERVER_DATABASE__URL": url, "IMSERVER_ADMINS": f'["{ADMIN}"]'},
    )
    db = Database(url)
    ctx = Context(db, config)
    await load_regions(ctx, load_regions_csv())
    await seed_policy(ctx)
    try:
        yield World(Services.build(ctx), tmp_path)
    finally:
        await db.dispose()
        if pg_name:
            await _drop_pg_database(pg_name)


def modified_csv(tmp: Path) -> Path:
    """The shipped table with three changes, as an operator would load it.

    - 440307 龙岗区 is renumbered 440399 (a new row; the old one names it as successor);
    - 440308 盐田区 merges into 440305 南山区;
    - 440306 宝安区 moves under a new city 449900.
    """
    with default_regions_path().open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    out = []
    for row in body:
        code = row[0]
        if code == "440307":
            out.append([*row[:6], "440399"])
            out.append(["440399", "龙岗区", "3", "440300", row[4], row[5], ""])
        elif code == "440308":
            out.append([*row[:6], "440305"])
        elif code == "440306":
            out.append([code, row[1], row[2], "449900", row[4], row[5], row[6]])
            out.append(["449900", "测试市", "2", "440000", row[4], row[5], ""])
        else:
            out.append(row)
    path = tmp / "regions-new.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([header, *out])
    return path


async def test_new_data_set_chains_follow_successors(world: World) -> None:
    m = world.membership
    # Agents: 龙岗 (will be renumbered), 盐田 (will merge), 南山 (merge target), 深圳.
    longgang = await m.assign_agent(ADMIN, "ag-longgang@localhost", "440307")
    await m.assign_agent(ADMIN, "ag-yantian@localhost", "440308")
    await m.assign_agent(ADMIN, "ag-nanshan@localhost", "440305")
    await m.assign_agent(ADMIN, "ag-shenzhen@localhost", "440300")
    shop = await m.add_merchant(ADMIN, "shop-lg@localhost", "LG", None, Location(region="440307"))
    user = await m.register("user-lg@localhost", "shop-lg@localhost")
    shop_yt = await m.add_merchant(
        ADMIN, "shop-yt@localhost", "YT", None, Location(region="440308")
    )
    shop_ba = await m.add_merchant(
        ADMIN, "shop-ba@localhost", "BA", None, Location(region="440306")
    )
    before = await world.member_count()
    assert await world.agents("user-lg@localhost") == [
        (3, "440307", "ag-longgang@localhost"),
        (2, "440300", "ag-shenzhen@localhost"),
        (1, "440000", None),
    ]

    report = await load_regions(world.services.ctx, load_regions_csv(modified_csv(world.tmp)))
    # The renumbered region carries its agent; the merger keeps the target's own agent.
    assert report.agents_moved == (("440307", "440399"),)
    assert report.agents_left == ("440308",)
    assert report.members_relinked >= 5

    assert await world.member_count() == before
    for who in ("shop-lg@localhost", "user-lg@localhost", longgang.jid):
        assert await world.agents(who) == [
            (3, "440399", "ag-longgang@localhost"),
            (2, "440300", "ag-shenzhen@localhost"),
            (1, "440000", None),
        ], who
    assert await world.agents("shop-yt@localhost") == [
        (3, "440305", "ag-nanshan@localhost"),
        (2, "440300", "ag-shenzhen@localhost"),
        (1, "440000", None),
    ]
    assert await world.agents("shop-ba@localhost") == [
        (3, "440306", None),
        (2, "449900", None),
        (1, "440000", None),
    ]
    # Rule numbers and the member's own region keep the code they were issued with.
    for view, code in ((shop, "440307"), (user, "440307"), (shop_yt, "440308")):
        now = (await m.chain(ADMIN, view.jid)).member
        assert now.rule_number == view.rule_number and now.rule_number.startswith(code)
        assert now.region == code
    assert shop_ba.rule_number.startswith("440306-M")

    # Newcomers at a retired code land on the successor, with its rule numbers.
    newshop = await m.add_merchant(
        ADMIN, "shop-new@localhost", "New", None, Location(region="440307")
    )
    assert newshop.region == "440399" and newshop.rule_number == "440399-M00000001"
    newuser = await m.register("user-new@localhost", "shop-lg@localhost")
    assert newuser.region == "440399" and newuser.rule_number.startswith("440399-U")
    assert (await world.agents("user-new@localhost"))[0] == (3, "440399", "ag-longgang@localhost")
    with pytest.raises(ServiceError, match="retired"):
        await m.assign_agent(ADMIN, "someone@localhost", "440307")

    # Loading the same data set again changes nothing.
    again = await load_regions(world.services.ctx, load_regions_csv(modified_csv(world.tmp)))
    assert (again.members_relinked, again.agents_moved) == (0, ())


async def test_merchant_by_coordinates_in_a_retired_district(world: World) -> None:
    """The geography knows 440307; the database says it was replaced: the DB wins."""
    await load_regions(world.services.ctx, load_regions_csv(modified_csv(world.tmp)))
    view = await world.membership.add_merchant(
        ADMIN, "shop-pt@localhost", "PT", None, Location(lat=22.7209, lon=114.2470)
    )
    assert view.region == "440399"

    async def location(conn: AsyncConnection) -> str | None:
        stmt = select(Member.location).where(Member.jid == "shop-pt@localhost")
        return (await conn.execute(stmt)).scalar_one()

    text = await world.services.ctx.db.transaction(location)
    assert text is not None and text.endswith("440307 was replaced by 440399"), text


def test_csv_without_successor_column(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_text(
        "code,name,level,parent,lat,lon\n"
        "A1,Alpha,1,,1.0,2.0\n"
        "A11,Alpha City,2,A1,1.0,2.0\n"
        "A111,Alpha District,3,A11,1.0,2.0\n",
        encoding="utf-8",
    )
    regions = load_regions_csv(path)
    assert [(r.code, r.successor) for r in regions] == [
        ("A1", None),
        ("A11", None),
        ("A111", None),
    ]
    path.write_text("code,name,level,parent,lat,lon\nA1,Alpha,1,,1.0,2.0,\n", encoding="utf-8")
    with pytest.raises(RegionDataError, match="expected 6 fields"):
        load_regions_csv(path)
