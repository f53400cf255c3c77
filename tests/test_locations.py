"""The service's location resolver and the [geo] configuration (no database, no XMPP)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from imserver.config import ConfigError, GeoConfig, load_config
from imserver.service.errors import ServiceError
from imserver.service.locations import Locations, describe, normalize_crs
from imserver.service.membership import Location

CONFIG = Path(__file__).parents[1] / "config.toml"


def test_geo_config_defaults_and_env_overrides() -> None:
    assert load_config(CONFIG, env={}).geo == GeoConfig()
    assert GeoConfig().max_km == 5.0 and GeoConfig().geocoder_provider == ""
    cfg = load_config(
        CONFIG,
        env={
            "IMSERVER_GEO__MAX_KM": "2.5",
            "IMSERVER_GEO__GEOCODER_PROVIDER": "Nominatim",
            "IMSERVER_GEO__GEOCODER_URL": "http://127.0.0.1:8080/osm",
            "IMSERVER_GEO__GEOCODER_TIMEOUT": "1.5",
        },
    ).geo
    assert (cfg.max_km, cfg.geocoder_provider, cfg.geocoder_timeout) == (2.5, "nominatim", 1.5)


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"IMSERVER_GEO__MAX_KM": "-1"}, "geo.max_km"),
        ({"IMSERVER_GEO__MAX_KM": "1000"}, "geo.max_km"),
        ({"IMSERVER_GEO__GEOCODER_TIMEOUT": "0"}, "geo.geocoder_timeout"),
        ({"IMSERVER_GEO__GEOCODER_PROVIDER": "nominatim"}, "geocoder_url must be"),
        ({"IMSERVER_GEO__GEOCODER_URL": "http://x"}, "geocoder_provider is empty"),
        ({"IMSERVER_GEO__GEOCODER_PROVIDER": "no such!"}, "geopy service name"),
        ({"IMSERVER_GEO__NEAREST_KM": "3"}, "geo.nearest_km"),
    ],
)
def test_geo_config_is_validated(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config(CONFIG, env=env)


def test_unknown_geocoder_fails_at_start() -> None:
    cfg = GeoConfig(geocoder_provider="nosuchcoder", geocoder_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="geo: unknown geocoder provider"):
        Locations.from_config(cfg)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_geocoder_falls_back_offline(caplog: pytest.LogCaptureFixture) -> None:
    cfg = GeoConfig(
        geocoder_provider="nominatim",
        geocoder_url=f"http://127.0.0.1:{_dead_port()}",
        geocoder_timeout=2.0,
    )
    locations = Locations.from_config(cfg)
    assert locations.geocoder is not None
    with caplog.at_level(logging.WARNING, logger="imserver.geo.online"):
        code, text = await locations.resolve(Location(address="广东省深圳市南山区科技园"))
    assert code == "440305" and "(address" in text
    assert "using offline match" in caplog.text


async def test_resolve_codes_points_and_errors() -> None:
    locations = Locations(max_km=5.0)
    assert (await locations.resolve(Location(region="440305")))[0] == "440305"
    code, text = await locations.resolve(Location(lat=22.5405, lon=113.9345, crs="BD-09"))
    assert code == "440305" and " bd09 -> " in text  # BD-09 numbers: another point, same area
    with pytest.raises(ServiceError, match="both lat") as err:
        await locations.resolve(Location(lat=22.5))
    assert err.value.condition == "bad-request"
    with pytest.raises(ServiceError, match="ambiguous"):
        await locations.resolve(Location(address="鼓楼区"))


def test_normalize_crs() -> None:
    assert [normalize_crs(x) for x in (None, "", "WGS84", "gcj-02", "bd09")] == [
        "wgs84",
        "wgs84",
        "wgs84",
        "gcj02",
        "bd09",
    ]
    with pytest.raises(ServiceError, match="unknown coordinate system"):
        normalize_crs("utm")


def test_stored_text_is_bounded() -> None:
    locations = Locations()
    where = Location(address="广东省深圳市南山区" + "科技园" * 60)
    text = describe(where, locations.resolve_blocking(where))
    assert len(text) <= 400 and text.startswith("address 广东省深圳市南山区科技园")
