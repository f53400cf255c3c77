"""The real places of data/places.csv (a helper module for the tests).

Every row names the source of its coordinates in its ``source`` column: a
package and the record in it (``airportsdata 20260905 … ZBTJ``), or
``recalled from public maps, no map named`` for the coordinates typed in when
the set was made, which no one has checked against a named map.  A row's
coordinates change only together with a source that names where the new
ones come from; agreeing with the polygons is not a source.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
COLUMNS = ("name", "lat", "lon", "code", "source", "note")


@dataclass(frozen=True)
class Place:
    """A real place with its district code from public facts and its coordinates' source."""

    name: str
    lat: float
    lon: float
    code: str
    source: str
    note: str


def load_places() -> list[Place]:
    """Read tests/geo/data/places.csv; a row without a source is an error."""
    with (DATA / "places.csv").open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"places.csv columns are {reader.fieldnames}, expected {COLUMNS}")
        places = []
        for line, r in enumerate(reader, start=2):
            if not r["source"].strip():
                raise ValueError(f"places.csv line {line} ({r['name']}) names no source")
            lat, lon = float(r["lat"]), float(r["lon"])
            places.append(Place(r["name"], lat, lon, r["code"], r["source"], r["note"]))
        return places
