"""The demo's city: real places in Shenzhen whose coordinates and addresses the shipped
geography resolves, and the accounts that play in it."""

from __future__ import annotations

from dataclasses import dataclass

from imserver.service.locations import Locations
from imserver.service.membership import Location


@dataclass(frozen=True)
class Area:
    """A region of the demo: its code, an English name for the picture, its level."""

    code: str
    name: str
    scope: str  # province | city | district


PROVINCE = Area("440000", "Guangdong", "province")
CITY = Area("440300", "Shenzhen", "city")
DISTRICTS = (Area("440305", "Nanshan", "district"), Area("440304", "Futian", "district"))
AREAS = (PROVINCE, CITY, *DISTRICTS)


@dataclass(frozen=True)
class Shop:
    """A merchant of the demo, placed by coordinates (WGS-84) or by a postal address."""

    local: str  # the local part of its JID, before the run's tag
    name: str
    district: str  # the code its place must resolve to
    lat: float | None = None
    lon: float | None = None
    address: str | None = None

    @property
    def location(self) -> Location:
        """The location the admin sends in the ``<merchant/>`` request."""
        if self.address is not None:
            return Location(address=self.address)
        return Location(lat=self.lat, lon=self.lon)

    def describe(self) -> str:
        """How it is placed, for the seeding's progress lines."""
        return self.address or f"{self.lat:.4f},{self.lon:.4f}"


# Coordinates of landmarks (tests/geo/data/places.csv has the first two); the addresses
# are matched offline, province then city then district.
SHOPS = (
    Shop("teahouse", "Tea House", "440305", 22.5360, 113.9730),  # Window of the World
    Shop("noodlebar", "Noodle Bar", "440305", 22.5330, 113.9360),  # Shenzhen University
    Shop("bookcorner", "Book Corner", "440305", 22.5405, 113.9345),  # Hi-tech Park
    Shop("bikerepair", "Bike Repair", "440305", 22.5170, 113.9360),  # Coastal City
    Shop("dimsum", "Dim Sum", "440305", address="广东省深圳市南山区蛇口海上世界"),
    Shop("flowers", "Flower Shop", "440305", address="广东省深圳市南山区南头古城"),
    Shop("bakery", "Bakery", "440304", 22.5430, 114.0580),  # Civic Center
    Shop("phoneparts", "Phone Parts", "440304", 22.5450, 114.0850),  # Huaqiangbei
    Shop("coffee", "Coffee Roasters", "440304", 22.5540, 114.0560),  # Lianhuashan Park
    Shop("pharmacy", "Pharmacy", "440304", 22.5350, 114.0240),  # Chegongmiao
    Shop("fruitstand", "Fruit Stand", "440304", address="广东省深圳市福田区福华三路"),
    Shop("barber", "Barber", "440304", address="深圳市福田区深南大道"),
)


class CityError(RuntimeError):
    """A place of the demo does not resolve where the demo says it is."""


def check_places(locations: Locations) -> dict[str, str]:
    """Resolve every shop's place with the shipped geography; shop -> full region name.

    Raises CityError when one resolves elsewhere (the region data changed under us).
    """
    found: dict[str, str] = {}
    for shop in SHOPS:
        resolved = locations.resolve_blocking(shop.location)
        if resolved.code != shop.district:
            raise CityError(
                f"{shop.name} at {shop.describe()} resolves to {resolved.code} "
                f"{resolved.full_name}, not {shop.district}"
            )
        found[shop.local] = resolved.full_name
    return found
