"""Conversions between the coordinate systems used by Chinese map services.

* WGS-84: GPS, OpenStreetMap, the shipped boundaries (CGCS2000, which agrees
  with WGS-84 to a few centimetres).
* GCJ-02: the obfuscated system that Chinese law requires of published maps
  (Amap/高德, Tencent, Google Maps inside China).
* BD-09: Baidu's further offset of GCJ-02.

The forward transforms are the well-known public formulas.  Neither has a
closed-form inverse, so the inverses solve ``forward(x) == y`` by fixed-point
iteration; the offsets vary slowly (well under 1e-3 per degree), so each step
gains several digits and the result is far below a metre off after a handful
of steps.

All functions take and return ``(lat, lon)`` in decimal degrees, latitude
first like the rest of :mod:`imserver.geo`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

__all__ = [
    "CRS",
    "bd09_to_gcj02",
    "bd09_to_wgs84",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "out_of_china",
    "to_wgs84",
    "wgs84_to_bd09",
    "wgs84_to_gcj02",
]

CRS = Literal["wgs84", "gcj02", "bd09"]

# Krasovsky 1940 ellipsoid, as used by the GCJ-02 formulas.
_A = 6378245.0
_EE = 0.00669342162296594323
_X_PI = math.pi * 3000.0 / 180.0

# Stop iterating once forward(estimate) is within this many degrees of the
# target (1e-9 degree is about 0.1 mm).
_TOLERANCE_DEG = 1e-9
_MAX_ITERATIONS = 30

_Forward = Callable[[float, float], tuple[float, float]]


def out_of_china(lat: float, lon: float) -> bool:
    """Return True where GCJ-02 applies no offset (the formulas' own box)."""
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _transform_lat(x: float, y: float) -> float:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return ret


def _transform_lon(x: float, y: float) -> float:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return ret


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """Convert WGS-84 to GCJ-02 (identity outside China's box)."""
    if out_of_china(lat, lon):
        return lat, lon
    dlat = _transform_lat(lon - 105.0, lat - 35.0)
    dlon = _transform_lon(lon - 105.0, lat - 35.0)
    radlat = lat / 180.0 * math.pi
    magic = 1.0 - _EE * math.sin(radlat) ** 2
    sqrtmagic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrtmagic) * math.pi)
    dlon = (dlon * 180.0) / (_A / sqrtmagic * math.cos(radlat) * math.pi)
    return lat + dlat, lon + dlon


def gcj02_to_bd09(lat: float, lon: float) -> tuple[float, float]:
    """Convert GCJ-02 to BD-09 (Baidu's published forward formula)."""
    z = math.sqrt(lon * lon + lat * lat) + 0.00002 * math.sin(lat * _X_PI)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * _X_PI)
    return z * math.sin(theta) + 0.006, z * math.cos(theta) + 0.0065


def wgs84_to_bd09(lat: float, lon: float) -> tuple[float, float]:
    """Convert WGS-84 to BD-09."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lat, lon))


def _bd09_to_gcj02_approx(lat: float, lon: float) -> tuple[float, float]:
    # The commonly published inverse: good to about 1e-6 degree, used as the
    # starting point of the exact iteration below.
    x = lon - 0.0065
    y = lat - 0.006
    z = math.sqrt(x * x + y * y) - 0.00002 * math.sin(y * _X_PI)
    theta = math.atan2(y, x) - 0.000003 * math.cos(x * _X_PI)
    return z * math.sin(theta), z * math.cos(theta)


def _invert(
    forward: _Forward, lat: float, lon: float, start: tuple[float, float]
) -> tuple[float, float]:
    """Solve forward(result) == (lat, lon) by fixed-point iteration from start."""
    est_lat, est_lon = start
    for _ in range(_MAX_ITERATIONS):
        f_lat, f_lon = forward(est_lat, est_lon)
        d_lat, d_lon = f_lat - lat, f_lon - lon
        if abs(d_lat) < _TOLERANCE_DEG and abs(d_lon) < _TOLERANCE_DEG:
            break
        est_lat -= d_lat
        est_lon -= d_lon
    return est_lat, est_lon


def gcj02_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """Convert GCJ-02 to WGS-84 by iterating the forward formula (< 1 mm)."""
    if out_of_china(lat, lon):
        return lat, lon
    return _invert(wgs84_to_gcj02, lat, lon, (lat, lon))


def bd09_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """Convert BD-09 to GCJ-02 by iterating the forward formula."""
    return _invert(gcj02_to_bd09, lat, lon, _bd09_to_gcj02_approx(lat, lon))


def bd09_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """Convert BD-09 to WGS-84."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lat, lon))


def to_wgs84(lat: float, lon: float, crs: CRS) -> tuple[float, float]:
    """Convert a point given in ``crs`` to WGS-84.

    Raises ValueError for an unknown coordinate system name.
    """
    if crs == "wgs84":
        return lat, lon
    if crs == "gcj02":
        return gcj02_to_wgs84(lat, lon)
    if crs == "bd09":
        return bd09_to_wgs84(lat, lon)
    raise ValueError(f"unknown coordinate system {crs!r} (use wgs84, gcj02 or bd09)")
