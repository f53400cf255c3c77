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
from tests.support.clients import NS, expect_error
from tests.support.commands import adhoc_start, adhoc_submit, form_fields, result_values, say
from tests.support.network import add_merchant, build_network, chain_of, member_of
from tests.test_repair import audit_entries

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


def candidates_of(refusal: Any) -> list[dict[str, str]]:
    """The ``<region/>`` candidates of a not-acceptable answer, as attribute dicts."""
    found = refusal["error"].xml.find(f"{{{NS}}}candidates")
    assert found is not None, refusal
    return [dict(el.attrib) for el in found.findall(f"{{{NS}}}region")]


# 北京西站: the shipped polygons put it in 西城区, 114 m from 海淀区 and 206 m from 丰台区,
# the district it belongs to.
WEST_STATION = {"lat": "39.8946", "lon": "116.3220"}
WEST_CANDIDATES = ["110102", "110108", "110106"]


async def merchant_added(service: Service, jid: str) -> dict[str, Any] | None:
    """The merchant.add audit entry of ``jid`` (newest first), or None."""
    admin = await service.admin()
    found = [
        e
        for e in await audit_entries(admin, service)
        if e.get("action") == "merchant.add" and e.get("target") == jid
    ]
    return found[0] if found else None


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
    # In WGS-84 this point is in 福田区 (440304), 536 m east of the 南山区 border (outside
    # the 0.5 km band); read as GCJ-02 it converts ~500 m west (Shenzhen's offset), into
    # 南山区 but 33 m from that border: a person must say which.
    where = {"lat": "22.533", "lon": "113.995"}
    answer = await add_merchant(
        admin, service.jid, service.new_jid("shop"), location={**where, "crs": "wgs84"}
    )
    assert member_of(answer)["region"] == "440304"
    gcj = {**where, "crs": "gcj02"}
    refused = await expect_error(
        add_merchant(admin, service.jid, service.new_jid("shop"), location=gcj),
        "not-acceptable",
    )
    assert [c["code"] for c in candidates_of(refused)] == ["440305", "440304"]
    answer = await add_merchant(
        admin, service.jid, service.new_jid("shop"), location={**gcj, "accept": "440305"}
    )
    assert member_of(answer)["region"] == "440305"


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
        ({"region": "440305", "accept": "440305"}, "accept='…' goes with coordinates"),
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


async def test_near_a_border_the_merchant_iq_asks_and_records_the_choice(
    service: Service,
) -> None:
    await build_network(service)
    admin = await service.admin()
    shop = service.new_jid("shop")
    refused = await expect_error(
        add_merchant(admin, service.jid, shop, location=WEST_STATION), "not-acceptable"
    )
    text = refused["error"]["text"]
    assert "within 0.50 km of a district border" in text and "110106 北京市丰台区" in text
    listed = candidates_of(refused)
    assert [c["code"] for c in listed] == WEST_CANDIDATES
    assert [c["km"] for c in listed] == ["0.000", "0.114", "0.206"]
    fengtai = listed[2]
    assert fengtai["name"] == "北京市丰台区"
    assert fengtai["geo"].startswith("geo:39.89") and "," in fengtai["geo"]
    lat, lon = fengtai["geo"][4:].split(",")
    assert fengtai["osm"] == (
        f"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"
    )
    assert await stored_location(service, shop) is None  # nothing written
    assert await merchant_added(service, shop) is None

    # A district that is not a candidate is refused the same way.
    again = await expect_error(
        add_merchant(admin, service.jid, shop, location={**WEST_STATION, "accept": "110105"}),
        "not-acceptable",
    )
    assert "'110105' is not one of the districts" in again["error"]["text"]
    assert [c["code"] for c in candidates_of(again)] == WEST_CANDIDATES

    answer = member_of(
        await add_merchant(
            admin, service.jid, shop, location={**WEST_STATION, "accept": "110106"}
        )
    )
    assert answer["region"] == "110106" and answer["rule-number"].startswith("110106-M")
    text = await stored_location(service, shop)
    assert text is not None and text.endswith(
        "near a border, 110106 北京市丰台区 chosen among 110102, 110108, 110106"
    )
    entry = await merchant_added(service, shop)
    assert entry is not None and entry["actor"] == admin.bare
    assert entry["details"]["region"] == "110106"
    assert entry["details"]["choice"] == {
        "accepted": "110106",
        "band_km": 0.5,
        "candidates": [
            {"code": "110102", "km": 0.0},
            {"code": "110108", "km": 0.114},
            {"code": "110106", "km": 0.206},
        ],
    }


async def test_near_a_border_the_admin_chooses_by_chat(service: Service) -> None:
    await build_network(service)
    admin = await service.admin()
    shop = service.new_jid("shop")
    where = f"{WEST_STATION['lat']},{WEST_STATION['lon']}"
    question = await say(admin, service.jid, f"merchant {shop} 'Station Cafe' {where}")
    assert question.startswith("Not added yet:"), question
    assert "1. 110102 北京市西城区 (0.00 km)" in question
    assert "3. 110106 北京市丰台区 (0.21 km)" in question
    assert "110106: geo:39.89" in question and "https://www.openstreetmap.org/?mlat=" in question
    assert await merchant_added(service, shop) is None
    answer = await say(admin, service.jid, "3")
    assert answer.startswith("Merchant added: 110106-M"), answer
    entry = await merchant_added(service, shop)
    assert entry is not None and entry["details"]["choice"]["accepted"] == "110106"

    # By code, and anything else cancels without adding.
    shop2 = service.new_jid("shop")
    await say(admin, service.jid, f"merchant {shop2} Kiosk {where}")
    assert (await say(admin, service.jid, "110108")).startswith("Merchant added: 110108-M")
    shop3 = service.new_jid("shop")
    await say(admin, service.jid, f"merchant {shop3} Kiosk {where}")
    assert (await say(admin, service.jid, "no")).startswith("Cancelled")
    assert await merchant_added(service, shop3) is None


@pytest.mark.parametrize("elsewhere", [False, True], ids=["same-process", "restored"])
async def test_near_a_border_the_admin_chooses_in_the_form(
    service: Service, elsewhere: bool
) -> None:
    await build_network(service)
    admin = await service.admin()
    shop = service.new_jid("shop")
    step = await adhoc_start(admin, service.jid, "add-merchant")
    where = f"{WEST_STATION['lat']},{WEST_STATION['lon']}"
    values = {"jid": shop, "name": "Station Cafe", "location": where}
    choose = await adhoc_submit(admin, service.jid, step, values, action="next")
    assert form_fields(choose) == {"district": ("list-single", True)}
    form = choose["command"]["form"]
    options = [o["value"] for o in form.get_fields()["district"]["options"]]
    assert options == WEST_CANDIDATES
    assert "geo:39.89" in form["instructions"] and "openstreetmap.org" in form["instructions"]
    assert await merchant_added(service, shop) is None
    if elsewhere:
        # The answer reaches a process that does not hold the session (another one
        # behind the same component name, or this one restarted): rebuilt from the
        # database, the choice step still works.
        del service.app.component.plugin["xep_0050"].sessions[choose["command"]["sessionid"]]
    done = await adhoc_submit(admin, service.jid, choose, {"district": "110106"})
    assert result_values(done)["Rule number"].startswith("110106-M")
    entry = await merchant_added(service, shop)
    assert entry is not None and entry["details"]["choice"]["accepted"] == "110106"
