"""Geography: the region data set and location resolution.

Regions are administrative divisions in three levels (province, city,
district) identified by code; the shipped data set is China's (see
``data/README.md``).  A location resolves to a live region by code, by
coordinates (WGS-84, GCJ-02 or BD-09, through the shipped district
boundaries) or by address (an optional online geocoder, else an offline
match of region names).

Importing this package reads no file: the data loads on first use.  It
depends on shapely, geopy and numpy only, nothing else of imserver.
"""

from __future__ import annotations

from .errors import (
    AmbiguousAddress,
    InvalidPoint,
    PointOutOfRange,
    ResolveError,
    UnknownAddress,
    UnknownRegion,
)
from .regions import (
    Region,
    RegionDataError,
    default_regions,
    default_regions_path,
    load_regions_csv,
)
from .resolver import Resolved, Resolver, default_resolver

__all__ = [
    "AmbiguousAddress",
    "InvalidPoint",
    "PointOutOfRange",
    "Region",
    "RegionDataError",
    "ResolveError",
    "Resolved",
    "Resolver",
    "UnknownAddress",
    "UnknownRegion",
    "default_regions",
    "default_regions_path",
    "default_resolver",
    "load_regions_csv",
]
