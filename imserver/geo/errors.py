"""Errors of location resolution.

Every failure a user can cause is a :class:`ResolveError` (a ``ValueError``)
whose message is written to be sent back to that user as is: it says what
was asked and why it could not be answered, naming codes and full names.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousAddress",
    "InvalidPoint",
    "PointOutOfRange",
    "ResolveError",
    "UnknownAddress",
    "UnknownRegion",
]


class ResolveError(ValueError):
    """A location that cannot be resolved to a region; ``str()`` is user-facing."""


class UnknownRegion(ResolveError):
    """A region code that is not in the table."""

    def __init__(self, code: str) -> None:
        """Record the unknown ``code``."""
        super().__init__(f"unknown region code {code!r}")
        self.code = code


class InvalidPoint(ResolveError):
    """Coordinates that are not numbers in range, or an unknown CRS."""


class PointOutOfRange(ResolveError):
    """A point farther than the allowed distance from every district."""

    def __init__(
        self, lat: float, lon: float, km: float | None, max_km: float, nearest: str | None
    ) -> None:
        """Describe a point ``km`` from the nearest district ``nearest``."""
        where = f"{_fmt_deg(lat)},{_fmt_deg(lon)}"
        if km is None:
            text = f"point {where} is not near any district"
        else:
            text = (
                f"point {where} is {_fmt_km(km)} km from the nearest district (limit {max_km:g} km)"
            )
        super().__init__(text)
        self.lat, self.lon, self.km, self.max_km, self.nearest = lat, lon, km, max_km, nearest


class UnknownAddress(ResolveError):
    """An address in which no known region name was found."""


class AmbiguousAddress(ResolveError):
    """An address whose region names fit several regions equally well.

    ``candidates`` holds ``(code, full name)`` pairs, sorted by code.
    """

    def __init__(self, fragment: str, candidates: list[tuple[str, str]]) -> None:
        """Describe the ambiguous ``fragment`` and the regions it may mean."""
        listed = ", ".join(f"{code} {name}" for code, name in candidates)
        super().__init__(
            f"{fragment} is ambiguous: {listed}; add the province or city to choose one"
        )
        self.fragment = fragment
        self.candidates = tuple(candidates)


def _fmt_deg(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _fmt_km(km: float) -> str:
    # One decimal where it matters to the reader (a pier 5.3 km out against a
    # 5 km limit), whole kilometres beyond that.
    return f"{km:.1f}" if km < 10 else f"{km:.0f}"
