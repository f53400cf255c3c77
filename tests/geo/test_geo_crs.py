"""Coordinate system conversions."""

from __future__ import annotations

import pytest
from geopy.distance import geodesic
from hypothesis import given, settings
from hypothesis import strategies as st

from imserver.geo.crs import (
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    out_of_china,
    to_wgs84,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)

china_lat = st.floats(min_value=3.9, max_value=53.6)
china_lon = st.floats(min_value=73.5, max_value=135.1)


def test_forward_formulas_match_the_published_values() -> None:
    # Worked example of the widely used coordTransform library (lon, lat
    # there; lat, lon here): the same public formulas give the same digits.
    assert wgs84_to_gcj02(39.915, 116.404) == pytest.approx(
        (39.91640428150164, 116.41024449916938), abs=1e-12
    )
    assert gcj02_to_bd09(39.915, 116.404) == pytest.approx(
        (39.92133699351021, 116.41036949371029), abs=1e-12
    )


def test_inverses_agree_with_the_published_approximations() -> None:
    # The library's one-step inverses are good to ~1e-6 degree; ours iterate
    # to the exact inverse, so they differ by less than that.
    assert gcj02_to_wgs84(39.915, 116.404) == pytest.approx(
        (39.91359571849836, 116.39775550083061), abs=2e-6
    )
    assert bd09_to_gcj02(39.915, 116.404) == pytest.approx(
        (39.90865673957631, 116.39762729119315), abs=2e-6
    )


@settings(max_examples=300, deadline=None)
@given(china_lat, china_lon)
def test_gcj02_round_trip_under_a_metre(lat: float, lon: float) -> None:
    back = gcj02_to_wgs84(*wgs84_to_gcj02(lat, lon))
    assert geodesic((lat, lon), back).m < 0.01


@settings(max_examples=300, deadline=None)
@given(china_lat, china_lon)
def test_bd09_round_trip_under_a_metre(lat: float, lon: float) -> None:
    assert geodesic((lat, lon), bd09_to_wgs84(*wgs84_to_bd09(lat, lon))).m < 0.01
    assert geodesic((lat, lon), bd09_to_gcj02(*gcj02_to_bd09(lat, lon))).m < 0.01


def test_offsets_are_the_expected_size_in_china() -> None:
    # Tiananmen: GCJ-02 moves a point a few hundred metres, BD-09 about a km.
    wgs = (39.9087, 116.3975)
    assert 100 < geodesic(wgs, wgs84_to_gcj02(*wgs)).m < 1000
    assert 500 < geodesic(wgs, wgs84_to_bd09(*wgs)).m < 2000


def test_no_gcj_offset_outside_china() -> None:
    assert out_of_china(48.8584, 2.2945)
    assert wgs84_to_gcj02(48.8584, 2.2945) == (48.8584, 2.2945)
    assert gcj02_to_wgs84(48.8584, 2.2945) == (48.8584, 2.2945)
    assert not out_of_china(22.54, 113.93)


def test_to_wgs84_dispatch() -> None:
    wgs = (22.5405, 113.9345)
    assert to_wgs84(*wgs, "wgs84") == wgs
    assert geodesic(wgs, to_wgs84(*wgs84_to_gcj02(*wgs), "gcj02")).m < 0.01
    assert geodesic(wgs, to_wgs84(*wgs84_to_bd09(*wgs), "bd09")).m < 0.01
    with pytest.raises(ValueError, match="unknown coordinate system"):
        to_wgs84(*wgs, "utm")  # type: ignore[arg-type]
