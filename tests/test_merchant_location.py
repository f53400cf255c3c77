"""Merchant locations as coordinates and addresses, end to end on both databases.

A real Prosody, the component with the shipped geography, an admin client sending the
`merchant` IQ of docs/protocol.md with `<location lat lon [crs]/>` or `<location address/>`.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.geo.crs import wgs84_to_bd09, wgs84_to_gcj02
from imserver.store.models import Member
from tests.conftest import Service
from tests.support.clients import expect_error
from tests.support.network import add_merchant, build_network, chain_of, member_of

# 深圳 南山区 科技园 (the docs/protocol.md example), WGS-84.
KEJIYUAN = (22.5405, 113.9345)


async def stored_location(service: Service, jid: str) -> str | None:
    """The location text stored with a member."""

    async def read(conn: AsyncConnection) -> str | None:
        row = (await conn.execute(select(Member.location).where(Member.jid == jid))).first()
        return row[0] if row else None

    return await service.app.db.transaction(read)


async def error_text(coro: Any, condition: str = "bad-request") -> str:
    """The human text of the stanza error that ``coro`` must fail with."""
    return str((await expect_error(coro, condition))["error"]["text"])


def _deg(value: float) -> str:
    return f"{value:.7f}"


async def test_coordinates_resolve_to_the_district_and_its_agents(service: Service) -> None:
    net = await build_network(service)
    admin = await service.admin()
    shop = service.new_jid("shop")
    lat, lon = KEJIYUAN
    answer = member_of(
        await add_merchant(admin, service.jid, shop, location={"lat": str(lat), "lon": str(lon)})
    )
    assert answer["region"] == "440305"
    assert answer["rule-number"].startswith("440305-M")
    chain = chain_of(await admin.dist.chain(service.jid, shop))
    assert chain["agents"] == [
        ("district", "440305", net.district_agent.bare),
        ("city", "440300", net.city_agent.bare),
        ("province", "440000", net.province_agent.bare),
    ]
    text = await stored_location(service, shop)
    assert text == "point 22.5405,113.9345 wgs84 -> 440305 广东省深圳市南山区 (point)"


@pytest.mark.parametrize(
    ("crs", "convert"),
    [("gcj02", wgs84_to_gcj02), ("GCJ-02", wgs84_to_gcj02), ("bd09", wgs84_to_bd09)],
)
async def test_gcj02_and_bd09_coordinates(service: Service, crs: str, convert: Any) -> None:
    admin = await service.admin()
    lat, lon = convert(*KEJIYUAN)
    shop = service.new_jid("shop")
    answer = member_of(
        await add_merchant(
            admin,
            service.jid,
            shop,
            location={"lat": _deg(lat), "lon": _deg(lon), "crs": crs},
        )
    )
    assert answer["region"] == "440305"
    text = await stored_location(service, shop)
    assert text is not None and f" {crs.lower().replace('-', '')} -> 440305 " in text


async def test_gcj02_offset_matters_near_a_border(service: Service) -> None:
    """The same numbers read as WGS-84 or as GCJ-02 land ~500 m apart: crs is honoured."""
    admin = await service.admin()
    # In WGS-84 this point is in 福田区 (440304), a few hundred metres east of the 南山区
    # border; read as GCJ-02 it converts ~500 m west (Shenzhen's offset), into 南山区.
    got = {}
    for crs in ("wgs84", "gcj02"):
        answer = await add_merchant(
            admin,
            service.jid,
            service.new_jid("shop"),
            location={"lat": "22.533", "lon": "113.995", "crs": crs},
        )
        got[crs] = member_of(answer)["region"]
    assert got == {"wgs84": "440304", "gcj02": "440305"}


async def test_address_resolves_top_down(service: Service) -> None:
    admin = await service.admin()
    shop = service.new_jid("shop")
    answer = member_of(
        await add_merchant(
            admin, service.jid, shop, location={"address": "广东省深圳市南山区科技园"}
        )
    )
    assert answer["region"] == "440305"
    text = await stored_location(service, shop)
    assert text is not None
    assert text.startswith("address 广东省深圳市南山区科技园 -> 440305 广东省深圳市南山区 (address")

    # The same district name under another city is another region.
    shop2 = service.new_jid("shop")
    answer = member_of(
        await add_merchant(admin, service.jid, shop2, location={"address": "鹤岗市南山区"})
    )
    assert answer["region"] == "230404"


async def test_ambiguous_district_name_is_refused_with_candidates(service: Service) -> None:
    admin = await service.admin()
    shop = service.new_jid("shop")
    text = await error_text(add_merchant(admin, service.jid, shop, location={"address": "南山区"}))
    assert "ambiguous" in text
    assert "230404" in text and "440305" in text
    assert "黑龙江省鹤岗市南山区" in text and "广东省深圳市南山区" in text
    # Nothing was written: the JID is still free.
    await add_merchant(admin, service.jid, shop, location={"region": "440305"})


async def test_unknown_address_is_refused(service: Service) -> None:
    admin = await service.admin()
    text = await error_text(
        add_merchant(admin, service.jid, service.new_jid("shop"), location={"address": "火星基地"})
    )
    assert "no known region" in text


async def test_far_at_sea_is_refused(service: Service) -> None:
    admin = await service.admin()
    # The middle of the South China Sea, east of the Paracels.
    text = await error_text(
        add_merchant(
            admin, service.jid, service.new_jid("shop"), location={"lat": "15.0", "lon": "116.0"}
        )
    )
    assert "km from the nearest district" in text and "limit 5 km" in text


@pytest.mark.parametrize(
    ("location", "needle"),
    [
        ({"lat": "abc", "lon": "113.9"}, "decimal degrees"),
        ({"lat": "22.5"}, "decimal degrees"),
        ({"lat": "nan", "lon": "113.9"}, "finite"),
        ({"lat": "inf", "lon": "113.9"}, "finite"),
        ({"lat": "91", "lon": "113.9"}, "out of range"),
        ({"lat": "22.5", "lon": "-181"}, "out of range"),
        ({"lat": "22.54", "lon": "113.93", "crs": "utm"}, "coordinate system"),
        ({"lat": "22.54", "lon": "113.93", "address": "深圳市"}, "exactly one"),
        ({"address": "   "}, "empty"),
        ({"address": "深圳" * 150}, "at most 200"),
    ],
)
async def test_malformed_locations_are_bad_requests(
    service: Service, location: dict[str, str], needle: str
) -> None:
    admin = await service.admin()
    text = await error_text(
        add_merchant(admin, service.jid, service.new_jid("shop"), location=location)
    )
    assert needle in text, text
