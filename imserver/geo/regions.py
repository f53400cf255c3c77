"""The region data set: administrative divisions in a three-level tree.

The shipped table (``data/regions.csv``, built by ``tools/build_regions.py``)
holds China's provinces (level 1), cities (level 2) and districts (level 3).
Other countries load the same CSV shape::

    code,name,level,parent,lat,lon,successor

(the ``successor`` column may be left out).  ``parent`` is empty for level 1
and names a row one level up otherwise.  ``successor`` is empty for a live
code; a retired (or alias) code names the code that replaced it, which may
itself be retired: consumers follow the chain to the live code.  ``lat``/``lon``
is a WGS-84 point inside the region
(its centroid when that lies inside).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = [
    "CSV_HEADER",
    "Region",
    "RegionDataError",
    "default_regions",
    "default_regions_path",
    "load_regions_csv",
]

CSV_HEADER = ("code", "name", "level", "parent", "lat", "lon", "successor")
LEVELS = (1, 2, 3)


class RegionDataError(ValueError):
    """A region file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Region:
    """One administrative division."""

    code: str
    name: str
    level: int
    parent: str | None
    lat: float
    lon: float
    successor: str | None

    @property
    def retired(self) -> bool:
        """True when this code has been replaced by ``successor``."""
        return self.successor is not None


def default_regions_path() -> Path:
    """Path of the shipped region table."""
    return Path(__file__).resolve().parent / "data" / "regions.csv"


def _parse_coordinate(text: str, low: float, high: float, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RegionDataError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise RegionDataError(f"{where}: {what} {text!r} out of range [{low}, {high}]")
    return value


def load_regions_csv(path: Path | None = None) -> list[Region]:
    """Read and validate a region table; ``None`` reads the shipped one.

    Checks: the exact header; non-empty code and name; level 1-3; unique
    codes; a level-1 row has no parent and any other row's parent exists and
    is exactly one level up; coordinates are numbers in range; a successor
    exists, differs from the code, has the same level and the chain of
    successors ends (no cycle).  The first problem raises
    :class:`RegionDataError` naming the file and line.
    """
    path = path or default_regions_path()
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return _parse(path, fh.read())
    except OSError as exc:
        raise RegionDataError(f"{path}: cannot read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise RegionDataError(f"{path}: not UTF-8: {exc}") from exc


def _parse(path: Path, text: str) -> list[Region]:
    # csv tracks physical line numbers, so a message points at the line an
    # editor shows (the header is line 1).
    reader = csv.reader(text.lstrip("\ufeff").splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise RegionDataError(f"{path}:1: empty file, expected header") from None
    columns = tuple(h.strip() for h in header)
    # The successor column is optional: a data set without retired codes may leave it out.
    if columns not in (CSV_HEADER, CSV_HEADER[:-1]):
        raise RegionDataError(
            f"{path}:1: header must be {','.join(CSV_HEADER)} (successor optional), "
            f"got {','.join(header)}"
        )

    regions: list[Region] = []
    line_of: dict[str, int] = {}
    for fields in reader:
        line = reader.line_num
        where = f"{path}:{line}"
        if not fields or all(not f.strip() for f in fields):
            continue  # tolerate blank lines (a trailing newline, say)
        if len(fields) != len(columns):
            raise RegionDataError(f"{where}: expected {len(columns)} fields, got {len(fields)}")
        if len(fields) < len(CSV_HEADER):
            fields = [*fields, ""]
        code, name, level_s, parent, lat_s, lon_s, successor = (f.strip() for f in fields)
        if not code or any(ch.isspace() or ch == "," for ch in code):
            raise RegionDataError(f"{where}: bad code {code!r}")
        if not name:
            raise RegionDataError(f"{where}: region {code} has no name")
        try:
            level = int(level_s)
        except ValueError:
            raise RegionDataError(f"{where}: level {level_s!r} is not a number") from None
        if level not in LEVELS:
            raise RegionDataError(f"{where}: level {level} not in 1, 2, 3")
        if code in line_of:
            raise RegionDataError(f"{where}: duplicate code {code} (first on line {line_of[code]})")
        if level == 1 and parent:
            raise RegionDataError(f"{where}: level-1 region {code} must have no parent")
        if level > 1 and not parent:
            raise RegionDataError(f"{where}: level-{level} region {code} needs a parent")
        if successor == code:
            raise RegionDataError(f"{where}: region {code} is its own successor")
        lat = _parse_coordinate(lat_s, -90.0, 90.0, "lat", where)
        lon = _parse_coordinate(lon_s, -180.0, 180.0, "lon", where)
        line_of[code] = line
        regions.append(Region(code, name, level, parent or None, lat, lon, successor or None))

    by_code = {r.code: r for r in regions}
    for region in regions:
        where = f"{path}:{line_of[region.code]}"
        if region.parent is not None:
            parent_region = by_code.get(region.parent)
            if parent_region is None:
                raise RegionDataError(
                    f"{where}: parent {region.parent} of {region.code} does not exist"
                )
            if parent_region.level != region.level - 1:
                raise RegionDataError(
                    f"{where}: parent {region.parent} of level-{region.level} region "
                    f"{region.code} has level {parent_region.level}, "
                    f"expected {region.level - 1}"
                )
        if region.successor is not None:
            succ = by_code.get(region.successor)
            if succ is None:
                raise RegionDataError(
                    f"{where}: successor {region.successor} of {region.code} does not exist"
                )
            if succ.level != region.level:
                raise RegionDataError(
                    f"{where}: successor {succ.code} of {region.code} has level "
                    f"{succ.level}, expected {region.level}"
                )
            seen = {region.code}
            step: Region | None = succ
            while step is not None:
                if step.code in seen:
                    raise RegionDataError(f"{where}: successor chain of {region.code} loops")
                seen.add(step.code)
                step = by_code.get(step.successor) if step.successor else None
    if not regions:
        raise RegionDataError(f"{path}: no regions")
    return regions


@lru_cache(maxsize=1)
def default_regions() -> tuple[Region, ...]:
    """The shipped region table, read on first call and cached."""
    return tuple(load_regions_csv(None))
