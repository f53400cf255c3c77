"""Point resolution measured against real places (tests/geo/data/places.csv).

Every place is a landmark, railway station, airport or campus with the
district code it officially belongs to.  The coordinates were recalled from
public maps; some of those publish GCJ-02, so a coordinate is good to about
half a kilometre, and a landmark is an area, not a point.  Where the expected
district's border passes closer to the coordinate than that band, the place
cannot tell a right boundary from a wrong coordinate: such places are
resolved and reported, but only places outside the band are scored against
the 99 % bar.  Province accuracy is scored on every place.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import shapely
from geo_places import Place
from geopy.distance import geodesic

from imserver.geo.boundaries import Boundaries
from imserver.geo.errors import ResolveError
from imserver.geo.resolver import Resolver

MAINLAND_PROVINCES = {
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
    "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
    "65",
}  # fmt: skip
BAND_KM = 0.5
NEAR_BORDER_KM = 2.0


def _km_to_border(place: Place, resolver: Resolver, boundaries: Boundaries) -> float:
    """Geodesic km from the place to the outline of its expected district."""
    point = shapely.Point(place.lon, place.lat)
    best = float("inf")
    for code in boundaries.codes:
        live = resolver.index.live(code)
        if live is None or live.code != place.code:
            continue
        outline = boundaries.geometry(code).boundary
        near = shapely.shortest_line(outline, point).coords[0]
        best = min(best, geodesic((place.lat, place.lon), (near[1], near[0])).km)
    return best


def test_places_cover_every_mainland_province(places: list[Place], resolver: Resolver) -> None:
    assert len(places) >= 150
    assert len({p.name for p in places}) == len(places), "duplicate place names"
    per_province = Counter(p.code[:2] for p in places)
    assert set(per_province) == MAINLAND_PROVINCES
    assert min(per_province.values()) >= 3, per_province
    for place in places:
        region = resolver.index.get(place.code)
        assert region is not None and region.successor is None, place


def test_places_include_near_border_ones(
    places: list[Place], resolver: Resolver, boundaries: Boundaries
) -> None:
    near = [p for p in places if _km_to_border(p, resolver, boundaries) < NEAR_BORDER_KM]
    assert len(near) >= 30, len(near)


def test_district_and_province_accuracy(
    places: list[Place],
    resolver: Resolver,
    boundaries: Boundaries,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scored = scored_ok = raw_ok = province_ok = near = 0
    misses: list[str] = []
    band: list[str] = []
    hows: Counter[str] = Counter()
    for place in places:
        code: str | None
        province: str | None
        how: str
        try:
            got = resolver.resolve_point(place.lat, place.lon)
            code, province, how = got.code, got.chain[0][0], got.how
        except ResolveError as exc:
            code, province, how = None, None, f"error: {exc}"
        hows[how] += 1
        expected_province = resolver.index.chain(place.code)[0].code
        province_ok += province == expected_province
        right = code == place.code
        raw_ok += right
        km = _km_to_border(place, resolver, boundaries)
        near += km < NEAR_BORDER_KM
        label = f"{place.name} expected {place.code} got {code} ({km:.2f} km from border)"
        if km < BAND_KM:
            band.append(("ok " if right else "MISS ") + label)
            continue
        scored += 1
        scored_ok += right
        if not right:
            misses.append(label)
    figures = {
        "places": len(places),
        "within_2km_of_border": near,
        "district_accuracy_scored": round(scored_ok / scored, 4),
        "scored": scored,
        "district_accuracy_all": round(raw_ok / len(places), 4),
        "province_accuracy": round(province_ok / len(places), 4),
        "how": dict(hows),
        "scored_misses": misses,
        f"within_{BAND_KM}km_band": band,
    }
    with capsys.disabled():
        print("\ngeo accuracy:", json.dumps(figures, ensure_ascii=False, indent=1))
    assert province_ok == len(places)
    assert scored_ok / scored >= 0.99, misses
    # Even counting the places whose coordinate is too coarse to judge, the
    # resolver agrees with the facts nearly everywhere.
    assert raw_ok / len(places) >= 0.95
