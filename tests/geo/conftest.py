"""Fixtures for the geography tests: the shipped data, loaded once per session."""

from __future__ import annotations

import pytest
from geo_places import Place, load_places

from imserver.geo.boundaries import Boundaries, default_boundaries
from imserver.geo.regions import Region, default_regions
from imserver.geo.resolver import Resolver, default_resolver


@pytest.fixture(scope="session")
def regions() -> tuple[Region, ...]:
    """The shipped region table."""
    return default_regions()


@pytest.fixture(scope="session")
def boundaries() -> Boundaries:
    """The shipped district boundaries."""
    return default_boundaries()


@pytest.fixture(scope="session")
def resolver() -> Resolver:
    """A resolver over the shipped data."""
    return default_resolver()


@pytest.fixture(scope="session")
def places() -> list[Place]:
    """The real places of tests/geo/data/places.csv."""
    return load_places()
