"""The uncertainty band: border distances and candidate districts near a border.

A small made-up country with exact outlines shows the rules to the metre; the
shipped data shows them on real places (a station on a three-district corner,
a pier off the coast, one place in three coordinate systems).
"""

from __future__ import annotations

import numpy as np
import pytest
from geopy.distance import geodesic
from shapely.geometry import Polygon

from imserver.geo import Region, Resolver
from imserver.geo.boundaries import Boundaries, _geodesic_km
from imserver.geo.crs import wgs84_to_bd09, wgs84_to_gcj02

# Two districts share the parallel lat 0.5 (south S, north N, lon 0..1); inside N lies
# the enclave E (lat 0.7..0.8, lon 0.4..0.6), a hole of N.
KM_PER_DEG_LAT = geodesic((0.0, 0.5), (1.0, 0.5)).km / 1.0
HOLE = [(0.4, 0.7), (0.6, 0.7), (0.6, 0.8), (0.4, 0.8)]


@pytest.fixture(scope="module")
def land() -> Resolver:
    regions = [
        Region("X", "Land", 1, None, 0.5, 0.5, None),
        Region("X1", "Land City", 2, "X", 0.5, 0.5, None),
        Region("X11", "South", 3, "X1", 0.25, 0.5, None),
        Region("X12", "North", 3, "X1", 0.75, 0.5, None),
        Region("X13", "Enclave", 3, "X1", 0.75, 0.5, None),
    ]
    south = Polygon([(0, 0), (1, 0), (1, 0.5), (0, 0.5)])
    north = Polygon([(0, 0.5), (1, 0.5), (1, 1), (0, 1)], [HOLE])
    enclave = Polygon(HOLE)
    geoms = np.array([south, north, enclave], dtype=object)
    return Resolver(regions, Boundaries(["X11", "X12", "X13"], geoms))


def _km_lat(deg: float) -> float:
    return deg * KM_PER_DEG_LAT


def test_around_lists_the_band_and_the_nearest_other_within_reach(land: Resolver) -> None:
    bounds = land.boundaries()
    far = bounds.around(0.25, 0.5, 0.5, 30.0)
    assert [code for code, _ in far] == ["X11", "X12"]
    assert far[0][1] == 0.0 and far[1][1] == pytest.approx(_km_lat(0.25), rel=0.01)
    assert bounds.around(0.25, 0.5, 0.5, 5.0) == [("X11", 0.0)]  # the other is beyond reach
    # In the enclave: all three within a wide band, nearest first.
    wide = bounds.around(0.71, 0.5, 30.0, 30.0)
    assert [code for code, _ in wide] == ["X13", "X12", "X11"]
    assert bounds.nearest_point("X11", 0.71, 0.5) == pytest.approx((0.5, 0.5))
    assert bounds.nearest_point("X13", 0.71, 0.5) == (0.71, 0.5)
    with pytest.raises(ValueError, match="finite"):
        bounds.around(0.25, 0.5, -1.0, 5.0)


@pytest.mark.parametrize("km", [0.05, 0.5, 5.0, 40.0, 120.0])
@pytest.mark.parametrize("lat", [18.0, 31.0, 45.0, 53.0])
def test_border_distances_agree_with_the_geodesic(lat: float, km: float) -> None:
    # Diagonal offsets of about ``km``: the tangent-plane figure (up to 50 km) and
    # geopy's geodesic (beyond) both within 0.2 m of geopy's geodesic.
    deg = km / 111.0 / 1.4
    other = (lat + deg, 110.0 + deg)
    assert _geodesic_km(lat, 110.0, *other) == pytest.approx(
        geodesic((lat, 110.0), other).km, abs=0.0002
    )


def test_both_sides_of_a_border_inside_the_band(land: Resolver) -> None:
    south = land.resolve_point(0.499, 0.5, band_km=0.5)
    north = land.resolve_point(0.501, 0.5, band_km=0.5)
    assert (south.code, north.code) == ("X11", "X12")
    for got, other in ((south, "X12"), (north, "X11")):
        assert got.uncertain and got.band_km == 0.5
        assert got.border_km == pytest.approx(_km_lat(0.001), abs=0.002)
        assert [c.code for c in got.candidates] == [got.code, other]
        first, second = got.candidates
        assert first.km == 0.0 and (first.lat, first.lon) == (got.point or (0, 0))
        assert second.km == pytest.approx(got.border_km)
        # The map point of the other district is on the border, straight across.
        assert (second.lat, second.lon) == pytest.approx((0.5, 0.5))


def test_outside_the_band_the_answer_is_confident(land: Resolver) -> None:
    got = land.resolve_point(0.49, 0.5, band_km=0.5)
    assert got.code == "X11" and not got.uncertain and got.candidates == ()
    assert got.border_km == pytest.approx(_km_lat(0.01), abs=0.01)
    # A wider band asks about the same point.
    assert land.resolve_point(0.49, 0.5, band_km=1.5).uncertain


def test_exactly_on_the_border_both_districts_are_candidates_at_zero(land: Resolver) -> None:
    got = land.resolve_point(0.5, 0.5, band_km=0.5)
    assert got.code == "X11"  # on a shared border the smaller code wins, deterministically
    assert got.uncertain and got.border_km == 0.0
    assert [(c.code, c.km) for c in got.candidates] == [("X11", 0.0), ("X12", 0.0)]


def test_an_enclave_and_the_land_around_it(land: Resolver) -> None:
    inside = land.resolve_point(0.75, 0.5, band_km=0.5)
    assert inside.code == "X13" and not inside.uncertain
    assert inside.border_km == pytest.approx(_km_lat(0.05), rel=0.01)  # to the hole's edge
    around = land.resolve_point(0.702, 0.5, band_km=0.5)  # in the enclave, near its edge
    assert around.code == "X13" and [c.code for c in around.candidates] == ["X13", "X12"]
    outside = land.resolve_point(0.698, 0.5, band_km=0.5)  # in the land around it
    assert outside.code == "X12" and [c.code for c in outside.candidates] == ["X12", "X13"]


def test_off_the_coast_the_band_is_measured_from_the_nearest_district(land: Resolver) -> None:
    # East of the coast where the border meets it: 222 m from North, 249 m from South.
    got = land.resolve_point(0.501, 1.002, band_km=0.1)
    assert (got.code, got.how) == ("X12", "nearest")
    assert [c.code for c in got.candidates] == ["X12", "X11"]
    assert got.candidates[0].km == pytest.approx(0.222, abs=0.002)
    assert got.border_km == pytest.approx(0.249, abs=0.002)
    # Farther along the coast the other district is far: confident.
    far = land.resolve_point(0.9, 1.002, band_km=0.1)
    assert (far.code, far.how, far.uncertain) == ("X12", "nearest", False)


def test_no_other_district_within_reach_reports_none(land: Resolver) -> None:
    got = land.resolve_point(0.25, 0.5, reach_km=5.0)
    assert got.border_km is None and not got.uncertain
    assert land.resolve_point(0.25, 0.5, reach_km=30.0).border_km == pytest.approx(
        _km_lat(0.25), rel=0.01
    )


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_band_and_reach_must_be_finite_distances(land: Resolver, bad: float) -> None:
    with pytest.raises(ValueError, match="band_km"):
        land.resolve_point(0.25, 0.5, band_km=bad)
    with pytest.raises(ValueError, match="reach_km"):
        land.resolve_point(0.25, 0.5, reach_km=bad)


def test_codes_and_addresses_report_no_border(land: Resolver) -> None:
    got = land.resolve_code("X11")
    assert (got.point, got.border_km, got.candidates) == (None, None, ())


# -- the shipped data -----------------------------------------------------------------

WEST_STATION = (39.8946, 116.3220)  # 北京西站: 丰台区 (110106), where three districts meet
PIER_TIP = (36.0578, 120.3158)  # 青岛 栈桥 回澜阁, outside every polygon


def test_a_station_where_three_districts_meet(resolver: Resolver) -> None:
    got = resolver.resolve_point(*WEST_STATION)
    assert got.code == "110102"  # the generalised outlines put it in 西城区 ...
    assert got.uncertain  # ... but not silently: 丰台区 is a candidate
    assert [c.code for c in got.candidates] == ["110102", "110108", "110106"]
    assert [c.full_name for c in got.candidates][2] == "北京市丰台区"


@pytest.mark.parametrize(
    "convert",
    [None, wgs84_to_gcj02, wgs84_to_bd09],
    ids=["wgs84", "gcj02", "bd09"],
)
def test_the_same_place_in_three_coordinate_systems(resolver: Resolver, convert: object) -> None:
    crs = {None: "wgs84", wgs84_to_gcj02: "gcj02", wgs84_to_bd09: "bd09"}[convert]  # type: ignore[index]
    lat, lon = convert(*WEST_STATION) if callable(convert) else WEST_STATION
    got = resolver.resolve_point(lat, lon, crs=crs)  # type: ignore[arg-type]
    base = resolver.resolve_point(*WEST_STATION)
    assert [c.code for c in got.candidates] == [c.code for c in base.candidates]
    for mine, theirs in zip(got.candidates, base.candidates, strict=True):
        assert mine.km == pytest.approx(theirs.km, abs=0.005)  # the inverses: metres


def test_a_pier_off_the_coast(resolver: Resolver) -> None:
    got = resolver.resolve_point(*PIER_TIP)
    assert (got.code, got.how) == ("370202", "nearest")
    assert got.border_km is not None and got.border_km > 0.5
    assert not got.uncertain
