"""The Resolver: codes, points in three coordinate systems, errors."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
from shapely.geometry import Polygon

from imserver.geo import (
    InvalidPoint,
    PointOutOfRange,
    Region,
    ResolveError,
    Resolver,
    UnknownRegion,
)
from imserver.geo.boundaries import Boundaries, BoundaryDataError
from imserver.geo.crs import wgs84_to_bd09, wgs84_to_gcj02

KEJIYUAN = (22.5405, 113.9345)  # 深圳 南山 科技园, WGS-84
PIER_TIP = (36.0578, 120.3158)  # 青岛 栈桥 回澜阁


def test_resolve_code(resolver: Resolver) -> None:
    got = resolver.resolve_code("440305")
    assert (got.code, got.name, got.level, got.how, got.note) == (
        "440305",
        "南山区",
        3,
        "code",
        "",
    )
    assert got.chain == (("440000", "广东省", 1), ("440300", "深圳市", 2), ("440305", "南山区", 3))
    assert got.full_name == "广东省深圳市南山区"
    assert got.code_at(1) == "440000" and got.code_at(2) == "440300"
    assert resolver.resolve_code(" 440305000000 ").code == "440305"
    assert resolver.resolve_code("440000").chain == (("440000", "广东省", 1),)


def test_retired_code_follows_successor(resolver: Resolver) -> None:
    got = resolver.resolve_code("540422")
    assert got.code == "540481" and got.name == "米林市"
    assert "540422 was replaced by 540481" in got.note
    assert got.chain[-1] == ("540481", "米林市", 3)


def test_unknown_code(resolver: Resolver) -> None:
    with pytest.raises(UnknownRegion, match="unknown region code '999999'"):
        resolver.resolve_code("999999")


def test_resolved_is_frozen_and_hashable(resolver: Resolver) -> None:
    got = resolver.resolve_code("440305")
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.code = "x"  # type: ignore[misc]
    assert hash(got) == hash(resolver.resolve_code("440305"))


@pytest.mark.parametrize("crs", ["wgs84", "gcj02", "bd09"])
def test_point_in_each_crs(resolver: Resolver, crs: str) -> None:
    lat, lon = KEJIYUAN
    if crs == "gcj02":
        lat, lon = wgs84_to_gcj02(lat, lon)
    elif crs == "bd09":
        lat, lon = wgs84_to_bd09(lat, lon)
    got = resolver.resolve_point(lat, lon, crs=crs)  # type: ignore[arg-type]
    assert (got.code, got.how) == ("440305", "point")


def test_crs_matters_near_a_border(resolver: Resolver) -> None:
    """A BD-09 point read as WGS-84 lands about a kilometre off: the CRS is used."""
    lat, lon = 22.5480, 113.9950  # 南山/福田 area; find a point where it changes
    moved = 0
    for dlat in np.linspace(-0.02, 0.02, 9):
        for dlon in np.linspace(-0.02, 0.02, 9):
            p = (lat + dlat, lon + dlon)
            bd = wgs84_to_bd09(*p)
            right = resolver.resolve_point(*bd, crs="bd09").code
            assert right == resolver.resolve_point(*p).code
            moved += resolver.resolve_point(*bd).code != right
    assert moved > 0


def test_point_off_the_coast_goes_to_the_nearest_district(resolver: Resolver) -> None:
    got = resolver.resolve_point(*PIER_TIP)
    assert (got.code, got.how) == ("370202", "nearest")
    assert "km outside 山东省青岛市市南区" in got.note


def test_point_far_at_sea_is_refused_with_the_distance(resolver: Resolver) -> None:
    with pytest.raises(PointOutOfRange) as info:
        resolver.resolve_point(35.5, 123.5)
    err = info.value
    assert err.km is not None and err.km > 100 and err.max_km == 5.0
    assert str(err).startswith("point 35.5,123.5 is ")
    assert str(err).endswith(" km from the nearest district (limit 5 km)")
    with pytest.raises(PointOutOfRange, match=r"point 12\.3,45\.6 is \d+ km"):
        resolver.resolve_point(12.3, 45.6)


def test_max_km_bounds_the_nearest_search(resolver: Resolver) -> None:
    with pytest.raises(PointOutOfRange, match=r"limit 0\.05 km"):
        resolver.resolve_point(*PIER_TIP, max_km=0.05)
    assert resolver.resolve_point(*PIER_TIP, max_km=1).code == "370202"
    with pytest.raises(ValueError):
        resolver.resolve_point(*PIER_TIP, max_km=-1)


def test_city_without_districts_by_point(resolver: Resolver) -> None:
    got = resolver.resolve_point(23.0210, 113.7520)  # 东莞市政府
    assert (got.code, got.level) == ("441900", 2)
    assert "has no districts" in got.note


def test_retired_boundary_code_resolves_live(resolver: Resolver) -> None:
    got = resolver.resolve_point(29.2150, 94.2130)  # 米林: boundary code 540422
    assert got.code == "540481" and "540422 was replaced by 540481" in got.note


def test_taiwan_resolves_to_its_city(resolver: Resolver) -> None:
    got = resolver.resolve_point(25.0330, 121.5654)  # 台北 101
    assert got.code == "710100" and got.level == 2
    assert got.chain[0] == ("710000", "台湾省", 1)


@pytest.mark.parametrize(
    ("lat", "lon", "crs", "words"),
    [
        (math.nan, 113.9, "wgs84", "finite"),
        (22.5, math.inf, "wgs84", "finite"),
        (95.0, 113.9, "wgs84", "out of range"),
        (22.5, 200.0, "wgs84", "out of range"),
        (22.5, 113.9, "utm", "unknown coordinate system"),
        ("north", 113.9, "wgs84", "must be numbers"),
    ],
)
def test_invalid_points(resolver: Resolver, lat: object, lon: float, crs: str, words: str) -> None:
    with pytest.raises(InvalidPoint, match=words):
        resolver.resolve_point(lat, lon, crs=crs)  # type: ignore[arg-type]


def test_all_failures_are_resolve_errors_and_value_errors(resolver: Resolver) -> None:
    calls: list[Callable[[], object]] = [
        lambda: resolver.resolve_code("nope"),
        lambda: resolver.resolve_point(35.5, 123.5),
        lambda: resolver.resolve_address("南山区"),
        lambda: resolver.resolve_address("火星"),
        lambda: resolver.resolve_address("   "),
    ]
    for call in calls:
        with pytest.raises(ResolveError) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert str(info.value)


def _country() -> tuple[list[Region], Boundaries]:
    regions = [
        Region("A", "Alpha", 1, None, 0.5, 0.5, None),
        Region("A1", "Alpha City", 2, "A", 0.5, 0.5, None),
        Region("A11", "Old Town", 3, "A1", 0.25, 0.5, "A12"),
        Region("A12", "New Town", 3, "A1", 0.25, 0.5, None),
        Region("A13", "Hill Town", 3, "A1", 0.75, 0.5, None),
    ]
    south = Polygon([(0, 0), (1, 0), (1, 0.5), (0, 0.5)])
    north = Polygon([(0, 0.5), (1, 0.5), (1, 1), (0, 1)])
    return regions, Boundaries(["A11", "A13"], np.array([south, north], dtype=object))


def test_another_country(tmp_path: object) -> None:
    regions, bounds = _country()
    resolver = Resolver(regions, bounds)
    got = resolver.resolve_point(0.25, 0.5)
    assert got.code == "A12" and "A11 was replaced by A12" in got.note
    assert resolver.resolve_point(0.75, 0.5).code == "A13"
    assert resolver.resolve_point(1.01, 0.5).how == "nearest"
    assert resolver.resolve_address("Alpha City, Hill Town").code == "A13"


def test_boundaries_must_match_the_table() -> None:
    regions, _ = _country()
    tri = Polygon([(0, 0), (1, 0), (1, 1)])
    stray = Boundaries(["ZZ"], np.array([tri], dtype=object))
    with pytest.raises(BoundaryDataError, match="not in the region table"):
        Resolver(regions, stray)
    lazy = Resolver(regions, lambda: stray)  # checked on first use
    with pytest.raises(BoundaryDataError):
        lazy.resolve_point(0.5, 0.5)
