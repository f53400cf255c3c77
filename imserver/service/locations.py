"""Merchant locations: coordinates and addresses resolved to a region with imserver.geo.

:class:`Locations` is the service's :class:`~imserver.service.membership.RegionResolver`.
It is built once per process (``Services.build``) over the shipped region table and
district boundaries; the boundaries and their spatial index load on the first lookup, in
a worker thread, like every lookup after it, so the event loop never waits on shapely or
on an online geocoder.  Every failure a sender can cause becomes ``bad-request`` whose
text is the geography's own explanation (ambiguous names with their candidates, a point
at sea with its distance, a malformed coordinate).

The region code found here is a code of the shipped data set; the membership use case
then follows the database's successors (an operator may have loaded a newer data set),
so the database stays the authority on which code is live.

Near a border the data cannot tell: a point within the uncertainty band (``[geo]
band_km``) of another district's polygon is refused with :class:`NearBorder`
(``not-acceptable``) naming the candidate districts with their distances and map links,
unless the location names the district the sender accepts (``accept``), which must be
one of them.  A person decides; the choice goes to the audit log with the candidates.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any, Final

from imserver.config import GeoConfig
from imserver.geo.crs import CRS
from imserver.geo.errors import ResolveError
from imserver.geo.online import Geocoder, geocode_address, geocode_address_sync, make_geocoder
from imserver.geo.resolver import (
    DEFAULT_BAND_KM,
    DEFAULT_REACH_KM,
    Candidate,
    Resolved,
    Resolver,
    default_resolver,
)
from imserver.service.errors import ServiceError, bad_request, not_acceptable
from imserver.service.membership import Location, Placement

__all__ = [
    "MAX_ADDRESS",
    "Locations",
    "NearBorder",
    "describe",
    "geo_uri",
    "normalize_crs",
    "osm_url",
    "resolved_json",
]

# An address longer than this is not an address; it also keeps the stored text bounded.
MAX_ADDRESS: Final = 200
# members.location is String(400).
MAX_LOCATION_TEXT: Final = 400

_CRS_ALIASES: Final[dict[str, CRS]] = {
    "wgs84": "wgs84",
    "wgs-84": "wgs84",
    "epsg:4326": "wgs84",
    "gcj02": "gcj02",
    "gcj-02": "gcj02",
    "bd09": "bd09",
    "bd-09": "bd09",
}


def normalize_crs(raw: str | None) -> CRS:
    """The coordinate system named by a ``crs`` attribute (WGS-84 when absent)."""
    if raw is None or not raw.strip():
        return "wgs84"
    crs = _CRS_ALIASES.get(raw.strip().lower())
    if crs is None:
        raise bad_request(f"unknown coordinate system {raw[:20]!r}: use wgs84, gcj02 or bd09")
    return crs


def _check_point(lat: float | None, lon: float | None) -> tuple[float, float]:
    if lat is None or lon is None:
        raise bad_request("coordinates need both lat='…' and lon='…'")
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise bad_request("lat and lon must be finite decimal degrees")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise bad_request(f"coordinates out of range: {lat:g},{lon:g} (lat -90..90, lon -180..180)")
    return lat, lon


def _check_address(raw: str | None) -> str:
    text = " ".join((raw or "").split())
    if not text:
        raise bad_request("the address is empty")
    if len(text) > MAX_ADDRESS or not text.isprintable():
        raise bad_request(f"an address is printable text of at most {MAX_ADDRESS} characters")
    return text


def _deg(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def describe(location: Location, resolved: Resolved) -> str:
    """The text stored as a merchant's location: what was given and how it resolved.

    e.g. ``point 22.5405,113.9345 wgs84 -> 440305 广东省深圳市南山区 (point)``.
    """
    if location.address is not None:
        given = f"address {_check_address(location.address)}"
    elif location.lat is not None and location.lon is not None:
        given = f"point {_deg(location.lat)},{_deg(location.lon)} {normalize_crs(location.crs)}"
    else:
        given = f"region {location.region}"
    how = resolved.how if not resolved.note else f"{resolved.how}; {resolved.note}"
    text = f"{given} -> {resolved.code} {resolved.full_name} ({how})"
    # Cut the explanation, never what was given: the address is bounded above.
    return text if len(text) <= MAX_LOCATION_TEXT else text[: MAX_LOCATION_TEXT - 2] + "…)"


def _km(km: float) -> str:
    return f"{km:.2f}"


def geo_uri(lat: float, lon: float) -> str:
    """An RFC 5870 ``geo:`` URI of a WGS-84 point (what map apps open)."""
    return f"geo:{_deg(lat)},{_deg(lon)}"


def osm_url(lat: float, lon: float) -> str:
    """The OpenStreetMap page of a WGS-84 point, with a marker, zoomed to streets."""
    la, lo = _deg(lat), _deg(lon)
    return f"https://www.openstreetmap.org/?mlat={la}&mlon={lo}#map=17/{la}/{lo}"


def candidate_json(candidate: Candidate) -> dict[str, Any]:
    """One candidate district as plain JSON data, with its map links."""
    return {
        "code": candidate.code,
        "full_name": candidate.full_name,
        "km": round(candidate.km, 3),
        "geo": geo_uri(candidate.lat, candidate.lon),
        "osm": osm_url(candidate.lat, candidate.lon),
    }


def resolved_json(resolved: Resolved) -> dict[str, Any]:
    """A resolved region as plain JSON data (the ``imserver regions resolve`` answer)."""
    data: dict[str, Any] = {
        "code": resolved.code,
        "name": resolved.name,
        "level": resolved.level,
        "full_name": resolved.full_name,
        "chain": [{"code": c, "name": n, "level": lvl} for c, n, lvl in resolved.chain],
        "how": resolved.how,
        "note": resolved.note,
    }
    if resolved.point is not None:
        data["border_km"] = None if resolved.border_km is None else round(resolved.border_km, 3)
        data["band_km"] = resolved.band_km
        data["uncertain"] = resolved.uncertain
        data["candidates"] = [candidate_json(c) for c in resolved.candidates]
    return data


class NearBorder(ServiceError):
    """``not-acceptable``: the point lies within the band of another district's border.

    ``resolved`` holds the point, the candidates and their distances; the XMPP layer
    adds them to the error, the chat and form front-ends offer them as a choice.
    """

    def __init__(self, resolved: Resolved, text: str) -> None:
        super().__init__("not-acceptable", text)
        self.resolved = resolved


def _listed(resolved: Resolved) -> str:
    return ", ".join(f"{c.code} {c.full_name} ({_km(c.km)} km)" for c in resolved.candidates)


def place(location: Location, resolved: Resolved) -> Placement:
    """Where a resolved location places a merchant, or the refusal a person must answer.

    Inside the band the location must name the district it accepts, one of the
    candidates; outside it, ``accept`` (if given) must be the district the data found.
    """
    accept = location.accept
    text = describe(location, resolved)
    if not resolved.uncertain:
        if accept is not None and accept != resolved.code:
            where = (
                f"more than {_km(resolved.band_km or 0)} km from any other district"
                if resolved.point is not None
                else "by its names"
            )
            raise not_acceptable(
                f"the location lies in {resolved.code} {resolved.full_name}, {where}; "
                f"accept={accept[:12]!r} does not match it"
            )
        return Placement(resolved.code, text)
    codes = [c.code for c in resolved.candidates]
    band = _km(resolved.band_km or 0)
    if accept is None:
        raise NearBorder(
            resolved,
            f"the point lies within {band} km of a district border, so the data cannot "
            f"tell its district: {_listed(resolved)}; choose one with accept='code'",
        )
    if accept not in codes:
        raise NearBorder(
            resolved,
            f"accept={accept[:12]!r} is not one of the districts the point may lie in: "
            f"{_listed(resolved)}",
        )
    choice = {
        "accepted": accept,
        "band_km": resolved.band_km,
        "candidates": [{"code": c.code, "km": round(c.km, 3)} for c in resolved.candidates],
    }
    chosen = next(c for c in resolved.candidates if c.code == accept)
    text = f"{text}; near a border, {accept} {chosen.full_name} chosen among {', '.join(codes)}"
    if len(text) > MAX_LOCATION_TEXT:
        text = text[: MAX_LOCATION_TEXT - 1] + "…"
    return Placement(accept, text, choice)


class Locations:
    """Resolves coordinates, addresses and region codes to a live region of the data set."""

    def __init__(
        self,
        resolver: Resolver | None = None,
        *,
        max_km: float = 5.0,
        geocoder: Geocoder | None = None,
        band_km: float = DEFAULT_BAND_KM,
        reach_km: float = DEFAULT_REACH_KM,
    ) -> None:
        """Use ``resolver`` (default: the shipped data) and an optional online geocoder."""
        self.resolver = resolver or default_resolver()
        self.max_km = max_km
        self.geocoder = geocoder
        self.band_km = band_km
        self.reach_km = reach_km

    @classmethod
    def from_config(cls, config: GeoConfig, resolver: Resolver | None = None) -> Locations:
        """Build from the ``[geo]`` section; a geocoder geopy cannot set up fails here, at start."""
        geocoder = None
        if config.geocoder_provider:
            try:
                geocoder = make_geocoder(
                    config.geocoder_provider, config.geocoder_url, config.geocoder_timeout
                )
            except ValueError as exc:
                raise ValueError(f"geo: {exc}") from exc
        return cls(
            resolver,
            max_km=config.max_km,
            geocoder=geocoder,
            band_km=config.band_km,
            reach_km=config.reach_km,
        )

    def preload(self) -> None:
        """Load the boundaries and their spatial index now (blocking, ~0.05 s)."""
        self.resolver.boundaries()

    def resolve_blocking(self, location: Location) -> Resolved:
        """Resolve a location (blocking: call it from a thread or a command line).

        Raises ServiceError (bad-request) with the reason when it cannot be resolved.
        """
        try:
            if location.address is not None:
                return geocode_address_sync(
                    _check_address(location.address),
                    self.geocoder,
                    self.resolver,
                    max_km=self.max_km,
                    band_km=self.band_km,
                    reach_km=self.reach_km,
                )
            if location.lat is not None or location.lon is not None:
                lat, lon = _check_point(location.lat, location.lon)
                return self.resolver.resolve_point(
                    lat, lon, normalize_crs(location.crs), self.max_km, self.band_km, self.reach_km
                )
            if location.region:
                return self.resolver.resolve_code(location.region)
        except ResolveError as exc:
            raise bad_request(str(exc)) from None
        raise bad_request("give exactly one of region='…', lat='…' lon='…', or address='…'")

    async def resolve(self, location: Location) -> Placement:
        """Region code and stored location text (the RegionResolver protocol).

        The lookup runs in a worker thread: the first one loads the boundaries, and an
        online geocoder blocks for up to its timeout.
        """
        if location.address is not None:
            # Validated here so that a bad address never reaches the geocoder's thread.
            text = _check_address(location.address)
            try:
                resolved = await geocode_address(
                    text,
                    self.geocoder,
                    self.resolver,
                    max_km=self.max_km,
                    band_km=self.band_km,
                    reach_km=self.reach_km,
                )
            except ResolveError as exc:
                raise bad_request(str(exc)) from None
        else:
            resolved = await asyncio.to_thread(self.resolve_blocking, location)
        return place(location, resolved)


_POINT = re.compile(
    r"\s*([-+]?[0-9.]+)\s*[,，\s]\s*([-+]?[0-9.]+)\s*(?:[,，\s]\s*(wgs84|gcj02|bd09)\s*)?",
    re.IGNORECASE,
)
_CODE = re.compile(r"\s*[0-9]{6}(?:[0-9]{6})?\s*")


def parse_query(text: str, crs: str | None = None) -> Location:
    """A location as a person types it: ``LAT,LON`` (with ``,CRS`` or ``crs``: wgs84,
    gcj02 or bd09), a region code, or an address. ValueError when ``crs`` is given for
    what is not a point."""
    point = _POINT.fullmatch(text)
    if point:
        lat, lon, named = point.groups()
        return Location(lat=float(lat), lon=float(lon), crs=(named or crs or "wgs84").lower())
    if crs:
        raise ValueError("--crs applies to coordinates (LAT,LON) only")
    if _CODE.fullmatch(text):
        return Location(region=text.strip())
    return Location(address=text)


def resolve_lines(locations: Locations, lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Resolve one query per line (``parse_query``), for operators importing a merchant
    list: one answer per non-blank line, in order, with its line number and the query;
    a line that cannot be resolved answers ``error`` with the reason. A blank line
    answers ``skipped``, so that no line passes without a word."""
    for number, raw in enumerate(lines, 1):
        query = raw.strip()
        answer: dict[str, Any] = {"line": number, "query": query}
        if not query:
            yield answer | {"skipped": "blank line"}
            continue
        try:
            answer |= resolved_json(locations.resolve_blocking(parse_query(query)))
        except ServiceError as exc:
            answer["error"] = exc.text
        except ValueError as exc:
            answer["error"] = str(exc)
        yield answer
