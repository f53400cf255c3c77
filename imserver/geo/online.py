"""Optional online geocoding of addresses through geopy.

Where the operator configures a geocoder (a provider name such as
``nominatim``, the service URL and a timeout), an address is first sent to
it; the coordinates it returns go through :meth:`Resolver.resolve_point`
(WGS-84, as Nominatim-style services answer).  Any failure of the service
(timeout, connection refused, HTTP error, unparsable answer, no result, a
result far from every district) is logged as a warning and the address falls
back to the offline name match, so a flaky geocoder never blocks a
registration.  Nothing here touches the network until an address is
geocoded.

geopy's geocoders are blocking; :func:`geocode_address` runs the request in a
worker thread so the event loop keeps serving other stanzas.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from dataclasses import replace
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlsplit

from geopy.exc import GeocoderNotFound, GeopyError
from geopy.geocoders import get_geocoder_for_service

from .errors import ResolveError
from .resolver import DEFAULT_BAND_KM, DEFAULT_REACH_KM, Resolved, Resolver, default_resolver

__all__ = [
    "Geocoder",
    "geocode_address",
    "geocode_address_sync",
    "make_geocoder",
]

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "imserver-geo/0.1"


class Geocoder(Protocol):
    """The part of a geopy geocoder this module uses."""

    def geocode(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """Return a geopy Location (or None) for ``query``."""
        ...


def make_geocoder(
    provider: str, url: str, timeout: float, user_agent: str = DEFAULT_USER_AGENT
) -> Geocoder:
    """Build a geopy geocoder for ``provider`` served at ``url``.

    ``provider`` is a geopy service name whose class can be pointed at a
    host (``nominatim``, ``photon``, ``pelias`` …); ``url`` is its base,
    e.g. ``https://nominatim.example.org`` or ``http://127.0.0.1:8080/osm``
    (a path prefix is kept).  ``timeout`` is in seconds.  Raises ValueError
    for an unknown provider, a provider that cannot be given a URL, or a bad
    URL or timeout.
    """
    try:
        cls = get_geocoder_for_service(provider.strip().lower())
    except GeocoderNotFound:
        raise ValueError(f"unknown geocoder provider {provider!r}") from None
    params = inspect.signature(cls.__init__).parameters
    if "domain" not in params or "scheme" not in params:
        raise ValueError(f"geocoder provider {provider!r} cannot be pointed at a URL")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"geocoder URL must be http(s)://host[:port][/path], got {url!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"geocoder timeout must be > 0 seconds, got {timeout}")
    # geopy builds "{scheme}://{domain}{path}", so a path prefix can ride
    # along in `domain`.
    domain = parts.netloc + parts.path.rstrip("/")
    try:
        geocoder: Geocoder = cls(
            domain=domain, scheme=parts.scheme, timeout=timeout, user_agent=user_agent
        )
    except (TypeError, GeopyError) as exc:
        # e.g. a provider that also needs an API key
        raise ValueError(f"geocoder provider {provider!r} cannot be set up: {exc}") from exc
    return geocoder


def geocode_address_sync(
    text: str,
    geocoder: Geocoder | None,
    resolver: Resolver | None = None,
    *,
    max_km: float = 5.0,
    band_km: float = DEFAULT_BAND_KM,
    reach_km: float = DEFAULT_REACH_KM,
) -> Resolved:
    """Resolve an address, online first when ``geocoder`` is set (blocking).

    Falls back to :meth:`Resolver.resolve_address` when there is no
    geocoder or it fails; offline errors (unknown, ambiguous) propagate.
    The geocoder's point is resolved with ``max_km``, ``band_km`` and
    ``reach_km`` as :meth:`Resolver.resolve_point` takes them.
    """
    resolver = resolver or default_resolver()
    if geocoder is not None and text and text.strip():
        online = _try_online(text, geocoder, resolver, (max_km, band_km, reach_km))
        if online is not None:
            return online
    return resolver.resolve_address(text)


async def geocode_address(
    text: str,
    geocoder: Geocoder | None,
    resolver: Resolver | None = None,
    *,
    max_km: float = 5.0,
    band_km: float = DEFAULT_BAND_KM,
    reach_km: float = DEFAULT_REACH_KM,
) -> Resolved:
    """Async form of :func:`geocode_address_sync`: the blocking work runs in a thread."""
    return await asyncio.to_thread(
        partial(
            geocode_address_sync,
            max_km=max_km,
            band_km=band_km,
            reach_km=reach_km,
        ),
        text,
        geocoder,
        resolver,
    )


def _try_online(
    text: str, geocoder: Geocoder, resolver: Resolver, limits: tuple[float, float, float]
) -> Resolved | None:
    name = type(geocoder).__name__
    try:
        location = geocoder.geocode(text.strip(), exactly_one=True)
    except (GeopyError, OSError, ValueError) as exc:
        # OSError/ValueError: geopy wraps most transport errors, but not all
        # of an adapter's, and a broken answer can surface as ValueError.
        log.warning("geocoder %s failed for %r (%s); using offline match", name, text, exc)
        return None
    if location is None:
        log.warning("geocoder %s found nothing for %r; using offline match", name, text)
        return None
    try:
        lat, lon = float(location.latitude), float(location.longitude)
        resolved = resolver.resolve_point(lat, lon, "wgs84", *limits)
    except (ResolveError, TypeError, ValueError, AttributeError) as exc:
        log.warning(
            "geocoder %s answer for %r not usable (%s); using offline match", name, text, exc
        )
        return None
    note = f"geocoded to {lat:.6f},{lon:.6f}"
    if resolved.note:
        note = f"{note}; {resolved.note}"
    return replace(resolved, how="geocoder", note=note)
