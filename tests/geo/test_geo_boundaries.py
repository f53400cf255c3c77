"""District polygons: point lookup, nearest district, the file format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon

from imserver.geo.boundaries import (
    Boundaries,
    BoundaryDataError,
    default_boundaries_path,
    write_boundaries,
)

# 青岛栈桥: the pier runs ~440 m into Qingdao bay; its tip (回澜阁) is in the
# sea as far as the district polygons go.
PIER_TIP = (36.0578, 120.3158)
YELLOW_SEA = (35.5, 123.5)


def test_lookup_inside(boundaries: Boundaries) -> None:
    assert boundaries.lookup(22.5405, 113.9345) == "440305"  # 深圳 南山 科技园
    assert boundaries.lookup(39.9087, 116.3975) == "110101"  # 天安门
    assert boundaries.lookup(*YELLOW_SEA) is None
    assert boundaries.lookup(48.8584, 2.2945) is None  # Paris


def test_nearest_for_a_pier_just_off_the_coast(boundaries: Boundaries) -> None:
    assert boundaries.lookup(*PIER_TIP) is None
    near = boundaries.nearest(*PIER_TIP, max_km=5.0)
    assert near is not None
    code, km = near
    assert code == "370202"  # 青岛市市南区
    assert 0.05 < km < 1.0


def test_nearest_inside_is_zero(boundaries: Boundaries) -> None:
    assert boundaries.nearest(22.5405, 113.9345, 5.0) == ("440305", 0.0)


def test_nearest_refuses_far_at_sea(boundaries: Boundaries) -> None:
    assert boundaries.nearest(*YELLOW_SEA, max_km=5.0) is None
    far = boundaries.nearest(*YELLOW_SEA, max_km=math.inf)
    assert far is not None and far[1] > 100


def test_nearest_respects_the_bound(boundaries: Boundaries) -> None:
    near = boundaries.nearest(*PIER_TIP, max_km=5.0)
    assert near is not None
    assert boundaries.nearest(*PIER_TIP, max_km=near[1] * 0.9) is None
    assert boundaries.nearest(*PIER_TIP, max_km=near[1] * 1.1) == near


def test_bad_points(boundaries: Boundaries) -> None:
    for lat, lon in [(math.nan, 1.0), (91.0, 0.0), (0.0, 181.0), (math.inf, 0.0)]:
        with pytest.raises(ValueError):
            boundaries.lookup(lat, lon)
    with pytest.raises(ValueError):
        boundaries.nearest(1.0, 1.0, -1.0)


def test_file_round_trip_is_exact_and_reproducible(tmp_path: Path) -> None:
    square = Polygon([(100.0, 20.0), (100.5, 20.0), (100.5, 20.5), (100.0, 20.5)])
    holed = Polygon(
        [(101.0, 21.0), (102.0, 21.0), (102.0, 22.0), (101.0, 22.0)],
        [[(101.25, 21.25), (101.5, 21.25), (101.5, 21.5), (101.25, 21.5)]],
    )
    islands = MultiPolygon(
        [
            Polygon([(103.123456, 23.0), (103.2, 23.0), (103.2, 23.1)]),
            Polygon([(104.0, 24.0), (104.1, 24.0), (104.1, 24.1)]),
        ]
    )
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    write_boundaries(first, ["000101", "000102", "000103"], [square, holed, islands])
    write_boundaries(second, ["000101", "000102", "000103"], [square, holed, islands])
    assert first.read_bytes() == second.read_bytes()
    loaded = Boundaries.load(first)
    assert loaded.codes == ("000101", "000102", "000103")
    assert shapely.equals_exact(loaded.geometry("000103"), islands, tolerance=1e-9)
    assert loaded.geometry("000102").area == pytest.approx(holed.area)
    assert loaded.lookup(20.25, 100.25) == "000101"
    assert loaded.lookup(21.4, 101.4) is None  # in the hole
    assert loaded.lookup(21.1, 101.1) == "000102"


def test_writer_refuses_what_it_would_lose(tmp_path: Path) -> None:
    tri = Polygon([(100.0, 20.0), (100.5, 20.0), (100.5, 20.5)])
    with pytest.raises(ValueError, match="six decimals"):
        write_boundaries(tmp_path / "x.npz", ["1"], [shapely.affinity.translate(tri, 1e-8)])
    with pytest.raises(ValueError, match="polygons"):
        write_boundaries(tmp_path / "x.npz", ["1"], [tri.exterior])
    with pytest.raises(ValueError, match="differ in length"):
        write_boundaries(tmp_path / "x.npz", ["1", "2"], [tri])


def test_corrupt_or_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BoundaryDataError):
        Boundaries.load(bad)
    with pytest.raises(BoundaryDataError):
        Boundaries.load(tmp_path / "absent.npz")


def test_shipped_file_is_compact() -> None:
    size = default_boundaries_path().stat().st_size
    assert size < 5 * 1024 * 1024


def test_duplicate_codes_rejected() -> None:
    tri = Polygon([(100.0, 20.0), (100.5, 20.0), (100.5, 20.5)])
    with pytest.raises(BoundaryDataError):
        Boundaries(["1", "1"], np.array([tri, tri], dtype=object))
