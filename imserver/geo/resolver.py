"""Resolve a location (code, point or address) to a live region.

A :class:`Resolver` answers with a :class:`Resolved`: the live code (after
following successors), its name and level, the chain from the province down
and how it was found.  Everything a user can get wrong raises a
:class:`~imserver.geo.errors.ResolveError` whose message can be sent back
as is.

The region table is small and indexed eagerly; the boundary polygons are
loaded on the first point lookup (about 0.1 s) unless given.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

from .address import AddressMatcher
from .boundaries import Boundaries, BoundaryDataError, default_boundaries
from .crs import CRS, to_wgs84
from .errors import InvalidPoint, PointOutOfRange, ResolveError, UnknownRegion
from .index import RegionIndex, is_structural_name
from .regions import Region, default_regions

__all__ = [
    "DEFAULT_BAND_KM",
    "DEFAULT_REACH_KM",
    "Candidate",
    "How",
    "Resolved",
    "Resolver",
    "default_resolver",
]

How = Literal["code", "point", "nearest", "address", "geocoder"]
ChainLink = tuple[str, str, int]

_CRS_NAMES: tuple[CRS, ...] = ("wgs84", "gcj02", "bd09")
# Within this many km of another district's polygon a point's district is uncertain:
# the shipped outlines are generalised (see data/README.md, "How far the outlines can
# be off"), so the border may really run on the other side of the point.
DEFAULT_BAND_KM = 0.5
# How far the distance to the nearest other district is looked for; beyond it a
# resolution reports no border distance (None): the point is far inside its district.
DEFAULT_REACH_KM = 10.0


@dataclass(frozen=True)
class Candidate:
    """A district a point may lie in: its live code, full name and distance.

    ``km`` is the geodesic distance from the point to the district's polygon
    (0.0 for the one that holds it); ``lat``/``lon`` (WGS-84) is the point of
    that polygon nearest to the point resolved (the point itself for the one
    that holds it): where to look on a map.
    """

    code: str
    full_name: str
    km: float
    lat: float
    lon: float


@dataclass(frozen=True)
class Resolved:
    """A resolved location.

    ``chain`` lists ``(code, name, level)`` from the province down to the
    region itself (a tuple, so that the whole value is immutable and
    hashable).  ``how`` says which path found it; ``note`` explains anything
    a user should hear (a retired code followed, a point off the coast, a
    city without districts), else is empty.

    A resolved point also says how sure it is: ``point`` is the WGS-84
    point resolved; ``border_km`` the geodesic distance to the nearest polygon
    of another district (None when there is none within the reach searched,
    and for codes and offline addresses); ``band_km`` the uncertainty band it
    was judged with; and ``candidates``, non-empty only inside the band, the
    districts it may lie in, this one first, each with its distance.
    """

    code: str
    name: str
    level: int
    chain: tuple[ChainLink, ...]
    how: How
    note: str = ""
    point: tuple[float, float] | None = None
    border_km: float | None = None
    band_km: float | None = None
    candidates: tuple[Candidate, ...] = ()

    @property
    def uncertain(self) -> bool:
        """True when the point lies within the band of another district's border."""
        return len(self.candidates) > 1

    @property
    def full_name(self) -> str:
        """Names from the province down, e.g. 广东省深圳市南山区."""
        parts: list[str] = []
        for code, name, _ in self.chain:
            if (is_structural_name(name) and code != self.code) or (parts and parts[-1] == name):
                continue
            parts.append(name)
        return "".join(parts)

    def code_at(self, level: int) -> str | None:
        """Code of this region's ancestor (or itself) at ``level``, or None."""
        return next((code for code, _, lvl in self.chain if lvl == level), None)


class Resolver:
    """Resolves codes, points and addresses against one region table."""

    def __init__(
        self,
        regions: Iterable[Region],
        boundaries: Boundaries | Callable[[], Boundaries] | None = None,
    ) -> None:
        """Index ``regions``; ``boundaries`` is an instance, a loader, or None.

        ``None`` means the shipped boundaries, loaded on the first point
        lookup.  Boundary codes must all be regions of the table: checked
        when the boundaries are first used.
        """
        self._index = RegionIndex(regions)
        self._address = AddressMatcher(self._index)
        if isinstance(boundaries, Boundaries):
            self._boundaries: Boundaries | None = boundaries
            self._check_boundaries(boundaries)
            self._loader: Callable[[], Boundaries] = lambda: boundaries
        else:
            self._boundaries = None
            self._loader = boundaries or default_boundaries
        self._lock = threading.Lock()

    @property
    def index(self) -> RegionIndex:
        """The region index (for listing or looking up regions)."""
        return self._index

    def boundaries(self) -> Boundaries:
        """The boundary set, loading it on first use."""
        if self._boundaries is None:
            with self._lock:
                if self._boundaries is None:
                    loaded = self._loader()
                    self._check_boundaries(loaded)
                    self._boundaries = loaded
        return self._boundaries

    def _check_boundaries(self, boundaries: Boundaries) -> None:
        missing = [c for c in boundaries.codes if c not in self._index]
        if missing:
            raise BoundaryDataError(
                f"{len(missing)} boundary codes are not in the region table, e.g. {missing[:5]}"
            )

    # -- results -----------------------------------------------------------

    def _resolved(self, code: str, how: How, notes: list[str]) -> Resolved:
        region = self._index.live(code)
        if region is None:
            raise UnknownRegion(code)
        if region.code != code:
            notes.insert(0, f"{code} was replaced by {region.code}")
        chain = tuple((r.code, r.name, r.level) for r in self._index.chain(region.code))
        return Resolved(
            code=region.code,
            name=region.name,
            level=region.level,
            chain=chain,
            how=how,
            note="; ".join(n for n in notes if n),
        )

    # -- the three ways in -------------------------------------------------

    def resolve_code(self, code: str) -> Resolved:
        """Resolve a region code, following successors of retired codes.

        A 12-digit statistical code ending in six zeros (440305000000) is
        accepted for its 6-digit division code.
        """
        text = str(code).strip()
        if len(text) == 12 and text.isdigit() and text.endswith("000000"):
            text = text[:6]
        if text not in self._index:
            raise UnknownRegion(text)
        return self._resolved(text, "code", [])

    def resolve_point(
        self,
        lat: float,
        lon: float,
        crs: CRS = "wgs84",
        max_km: float = 5.0,
        band_km: float = DEFAULT_BAND_KM,
        reach_km: float = DEFAULT_REACH_KM,
    ) -> Resolved:
        """Resolve coordinates to the district containing them.

        ``crs`` names the system the coordinates are in (WGS-84, GCJ-02 as
        used by Amap/Tencent, BD-09 as used by Baidu).  A point inside no
        polygon (just off a coast, on a pier) goes to the nearest district
        within ``max_km`` geodesic kilometres; farther out it is refused
        with :class:`PointOutOfRange`.

        The answer reports the distance to the nearest other district (up to
        ``reach_km``); when another district's polygon is within ``band_km``
        of the point (for a point outside every polygon: within ``band_km``
        of the distance to the nearest one), the answer is uncertain and
        lists the candidates.
        """
        for name, km in (("band_km", band_km), ("reach_km", reach_km)):
            if not (km >= 0 and math.isfinite(km)):
                raise ValueError(f"{name} must be a finite distance >= 0, got {km}")
        if crs not in _CRS_NAMES:
            raise InvalidPoint(f"unknown coordinate system {crs!r}; use wgs84, gcj02 or bd09")
        try:
            lat_f, lon_f = float(lat), float(lon)
        except (TypeError, ValueError):
            raise InvalidPoint(f"coordinates must be numbers, got {lat!r},{lon!r}") from None
        if not (math.isfinite(lat_f) and math.isfinite(lon_f)):
            raise InvalidPoint(f"coordinates must be finite numbers, got {lat},{lon}")
        if not (-90.0 <= lat_f <= 90.0 and -180.0 <= lon_f <= 180.0):
            raise InvalidPoint(
                f"coordinates out of range: {lat},{lon} (lat -90..90, lon -180..180)"
            )
        if not (max_km >= 0 and math.isfinite(max_km)):
            raise ValueError(f"max_km must be a finite distance >= 0, got {max_km}")
        wlat, wlon = to_wgs84(lat_f, lon_f, crs)
        bounds = self.boundaries()
        notes: list[str] = []
        # One search answers both questions: the district holding the point (listed
        # first at 0 km; on a shared border the smaller code, as ``lookup`` picks) and
        # the districts near it.
        near = bounds.around(wlat, wlon, band_km, reach_km)
        how: How = "point"
        if near and near[0][1] == 0.0:
            code = near[0][0]
        else:
            found = bounds.nearest(wlat, wlon, max_km)
            if found is None:
                far = bounds.nearest(wlat, wlon, math.inf)
                raise PointOutOfRange(
                    lat_f, lon_f, far[1] if far else None, max_km, far[0] if far else None
                )
            code, km = found
            how = "nearest"
            notes.append(
                f"the point is {km:.1f} km outside {self._index.full_name(code)}, "
                f"the nearest district (limit {max_km:g} km)"
            )
            # Off the coast the band is measured from the nearest district: another
            # as near, give or take the band, is as likely.
            near = bounds.around(wlat, wlon, km + band_km, max(reach_km, km + band_km))
        resolved = self._near_borders(
            self._resolved(code, how, notes), (wlat, wlon, bounds), near, band_km
        )
        if resolved.level < 3:
            # Cities without districts (东莞) and areas the boundary data does
            # not divide (澳门, Taiwan's cities) resolve above district level.
            if any(c.successor is None for c in self._index.children(resolved.code)):
                extra = f"the boundary data has no district-level division of {resolved.full_name}"
            else:
                extra = f"{resolved.full_name} has no districts"
            note = f"{resolved.note}; {extra}" if resolved.note else extra
            resolved = replace(resolved, note=note)
        return resolved

    def _near_borders(
        self,
        resolved: Resolved,
        where: tuple[float, float, Boundaries],
        around: list[tuple[str, float]],
        band_km: float,
    ) -> Resolved:
        """``resolved`` with its border distance and, inside the band, its candidates.

        ``around`` is what ``Boundaries.around`` found near the point ``where``
        (lat, lon and the boundaries searched).
        """
        lat, lon, bounds = where
        near: dict[str, float] = {}
        polygon_of: dict[str, str] = {}  # live code -> the boundary code measured
        own_km = around[0][1] if around else 0.0
        for code, km in around:
            live = self._index.live(code)
            if live is not None and km < near.get(live.code, math.inf):
                near[live.code] = km
                polygon_of[live.code] = code
        own_km = near.pop(resolved.code, own_km)
        border_km = min(near.values(), default=None)
        inside = sorted((km, code) for code, km in near.items() if km - own_km <= band_km)
        candidates: tuple[Candidate, ...] = ()
        if inside:
            candidates = tuple(
                Candidate(
                    code,
                    self._index.full_name(code),
                    km,
                    *bounds.nearest_point(polygon_of.get(code, code), lat, lon),
                )
                for km, code in [(own_km, resolved.code), *inside]
            )
        return replace(
            resolved,
            point=(lat, lon),
            border_km=border_km,
            band_km=band_km,
            candidates=candidates,
        )

    def resolve_address(self, text: str) -> Resolved:
        """Resolve an address offline by the region names it contains.

        Raises UnknownAddress when no region is named and AmbiguousAddress
        when the names fit several regions equally (a district name alone
        that exists in several cities).
        """
        if not text or not text.strip():
            raise ResolveError("the address is empty")
        match = self._address.match(text)
        return self._resolved(match.code, "address", [match.note])


@lru_cache(maxsize=1)
def _default_resolver() -> Resolver:
    return Resolver(default_regions())


_default_lock = threading.Lock()


def default_resolver() -> Resolver:
    """A resolver over the shipped data, built on first call and cached."""
    with _default_lock:
        return _default_resolver()
