"""Point resolution measured against real places (tests/geo/data/places.csv).

Every place is a landmark, railway station, airport or campus with the
district code it officially belongs to and the source of its coordinates
(see ``geo_places``).  Every place is counted.  A place is *near a border*
when the shipped polygon of some district other than its own lies within
``NEAR_BORDER_KM`` of its coordinates (geodesic distance from the point to
that polygon, ``Boundaries.around``): there the generalised outlines and a
coordinate recalled to a few hundred metres can both put it on the wrong
side, so near-border places are reported as a figure of their own, with the
tiers of issue 14 (1 km or more, 300 m to 1 km, under 300 m).

The uncertainty band is scored too: a place the resolver is unsure of must have its
right district among the candidates, and one it is sure of must be right.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from geo_places import Place

from imserver.geo.boundaries import Boundaries
from imserver.geo.errors import ResolveError
from imserver.geo.resolver import DEFAULT_BAND_KM, Resolver

MAINLAND_PROVINCES = {
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
    "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
    "65",
}  # fmt: skip
NEAR_BORDER_KM = 1.0
TIERS = (("1km_or_more", NEAR_BORDER_KM), ("300m_to_1km", 0.3), ("under_300m", 0.0))


def km_to_other_district(place: Place, resolver: Resolver, boundaries: Boundaries) -> float:
    """Geodesic km from the place to the nearest polygon of a district other than its own.

    ``inf`` when none is within ``NEAR_BORDER_KM``; 0.0 when the point lies
    inside another district's polygon.
    """
    near = boundaries.around(place.lat, place.lon, NEAR_BORDER_KM, NEAR_BORDER_KM)
    others = [km for code, km in near if _live(resolver, code) != place.code]
    return min(others, default=float("inf"))


def _live(resolver: Resolver, code: str) -> str | None:
    region = resolver.index.live(code)
    return region.code if region else None


def _tier(km: float) -> str:
    return next(name for name, floor in TIERS if km >= floor)


def test_places_cover_every_mainland_province(places: list[Place], resolver: Resolver) -> None:
    assert len(places) >= 150
    assert len({p.name for p in places}) == len(places), "duplicate place names"
    per_province = Counter(p.code[:2] for p in places)
    assert set(per_province) == MAINLAND_PROVINCES
    assert min(per_province.values()) >= 3, per_province
    for place in places:
        region = resolver.index.get(place.code)
        assert region is not None and region.successor is None, place


def test_every_place_names_the_source_of_its_coordinates(places: list[Place]) -> None:
    sources = Counter(p.source.split(":")[0].split(",")[0] for p in places)
    assert all(p.source.strip() for p in places)
    # The packaged sources name the record they were taken from.
    for place in places:
        if place.source.startswith("airportsdata"):
            assert place.source.rsplit(" ", 1)[-1].startswith("Z"), place
    assert sources["recalled from public maps"] < len(places), sources


def test_places_include_near_border_ones(
    places: list[Place], resolver: Resolver, boundaries: Boundaries
) -> None:
    tiers = Counter(_tier(km_to_other_district(p, resolver, boundaries)) for p in places)
    assert tiers["300m_to_1km"] + tiers["under_300m"] >= 30, tiers


def test_district_and_province_accuracy(
    places: list[Place],
    resolver: Resolver,
    boundaries: Boundaries,
    capsys: pytest.CaptureFixture[str],
) -> None:
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    province_ok = asked = 0
    misses: list[str] = []
    band_wrong: list[str] = []
    hows: Counter[str] = Counter()
    for place in places:
        code: str | None
        province: str | None
        try:
            got = resolver.resolve_point(place.lat, place.lon)
            code, province, how = got.code, got.chain[0][0], got.how
            asked += got.uncertain
            # Inside the band the right district is among the candidates; outside it
            # the answer is confident, so it must be right.
            if got.uncertain and place.code not in [c.code for c in got.candidates]:
                band_wrong.append(f"{place.name}: {place.code} not among {got.candidates}")
            if not got.uncertain and got.code != place.code:
                band_wrong.append(f"{place.name}: confident {got.code}, is {place.code}")
        except ResolveError as exc:
            code, province, how = None, None, f"error: {exc}"
        hows[how] += 1
        province_ok += province == resolver.index.chain(place.code)[0].code
        km = km_to_other_district(place, resolver, boundaries)
        tier = _tier(km)
        total[tier] += 1
        right[tier] += code == place.code
        if code != place.code:
            own = boundaries.around(place.lat, place.lon, NEAR_BORDER_KM, NEAR_BORDER_KM)
            own_km = min((k for c, k in own if _live(resolver, c) == place.code), default=None)
            outside = "more than 1" if own_km is None else f"{own_km:.2f}"
            misses.append(
                f"{place.name} expected {place.code} got {code} "
                f"({outside} km outside the polygon of {place.code})"
            )
    near = [name for name, floor in TIERS if floor < NEAR_BORDER_KM]
    near_total, near_right = sum(total[t] for t in near), sum(right[t] for t in near)
    all_right = sum(right.values())
    figures = {
        "places": len(places),
        "district_accuracy_all": f"{all_right}/{len(places)} = {all_right / len(places):.4f}",
        f"near_border_under_{NEAR_BORDER_KM:g}km": f"{near_right}/{near_total}",
        "by_km_to_other_district": {t: f"{right[t]}/{total[t]}" for t, _ in TIERS},
        "province_accuracy": f"{province_ok}/{len(places)}",
        f"asked_within_{DEFAULT_BAND_KM:g}km_band": f"{asked}/{len(places)}",
        "wrong_by_the_band": band_wrong,
        "how": dict(hows),
        "misses": misses,
    }
    with capsys.disabled():
        print("\ngeo accuracy:", json.dumps(figures, ensure_ascii=False, indent=1))
    assert province_ok == len(places)
    assert band_wrong == []
    far = TIERS[0][0]
    assert right[far] / total[far] >= 0.99, misses
    assert all_right / len(places) >= 0.95, misses
