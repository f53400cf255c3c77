"""The real places of data/places.csv (a helper module for the tests)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Place:
    """A real place with its district code from public facts."""

    name: str
    lat: float
    lon: float
    code: str
    note: str


def load_places() -> list[Place]:
    """Read tests/geo/data/places.csv."""
    with (DATA / "places.csv").open(encoding="utf-8", newline="") as fh:
        return [
            Place(r["name"], float(r["lat"]), float(r["lon"]), r["code"], r["note"])
            for r in csv.DictReader(fh)
        ]
