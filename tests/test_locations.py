"""The service's location resolver and the [geo] configuration (no database, no XMPP)."""

from __future__ import annotations

import logging
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from imserver.config import ConfigError, GeoConfig, load_config
from imserver.service.errors import ServiceError
from imserver.service.locations import Locations, NearBorder, describe, normalize_crs, place
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
        ({"IMSERVER_GEO__BAND_KM": "-0.1"}, "geo.band_km"),
        ({"IMSERVER_GEO__BAND_KM": "nan"}, "geo.band_km"),
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
        placed = await locations.resolve(Location(address="广东省深圳市南山区科技园"))
    assert placed.code == "440305" and "(address" in placed.text
    assert "using offline match" in caplog.text


async def test_resolve_codes_points_and_errors() -> None:
    locations = Locations(max_km=5.0)
    assert (await locations.resolve(Location(region="440305"))).code == "440305"
    placed = await locations.resolve(Location(lat=22.5405, lon=113.9345, crs="BD-09"))
    # BD-09 numbers: another point, same area
    assert placed.code == "440305" and " bd09 -> " in placed.text
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


# 北京西站's forecourt: the shipped polygons put it in 西城区 (110102), 114 m from 海淀区's
# and 206 m from 丰台区's; the station belongs to 丰台区 (110106).
WEST_STATION = Location(lat=39.8946, lon=116.3220)


async def test_near_a_border_the_location_is_refused_with_its_candidates() -> None:
    locations = Locations()
    with pytest.raises(NearBorder) as refused:
        await locations.resolve(WEST_STATION)
    assert refused.value.condition == "not-acceptable"
    candidates = refused.value.resolved.candidates
    assert [c.code for c in candidates] == ["110102", "110108", "110106"]
    assert [round(c.km, 2) for c in candidates] == [0.0, 0.11, 0.21]
    assert "110106 北京市丰台区 (0.21 km)" in refused.value.text
    assert "accept='code'" in refused.value.text


async def test_the_district_accepted_places_it_and_is_recorded() -> None:
    locations = Locations()
    placed = await locations.resolve(replace(WEST_STATION, accept="110106"))
    assert placed.code == "110106"
    assert placed.choice is not None
    assert (placed.choice["accepted"], placed.choice["band_km"]) == ("110106", 0.5)
    listed = [(c["code"], c["km"]) for c in placed.choice["candidates"]]
    assert listed == [("110102", 0.0), ("110108", 0.114), ("110106", 0.206)]
    assert placed.text.endswith("110106 北京市丰台区 chosen among 110102, 110108, 110106")


async def test_accept_must_be_a_candidate_or_the_confident_answer() -> None:
    locations = Locations()
    with pytest.raises(NearBorder, match="'110105' is not one of the districts"):
        await locations.resolve(replace(WEST_STATION, accept="110105"))
    # 科技园 is 3.2 km from another district: outside the band, the data decides, and an
    # accept that disagrees is refused rather than obeyed or ignored.
    far = Location(lat=22.5405, lon=113.9345)
    assert (await locations.resolve(replace(far, accept="440305"))).code == "440305"
    with pytest.raises(ServiceError, match="lies in 440305") as refused:
        await locations.resolve(replace(far, accept="440304"))
    assert refused.value.condition == "not-acceptable"
    assert not isinstance(refused.value, NearBorder)


async def test_an_address_matched_by_names_has_no_band_but_accept_must_agree() -> None:
    locations = Locations()
    named = Location(address="广东省深圳市南山区科技园")
    assert (await locations.resolve(replace(named, accept="440305"))).code == "440305"
    with pytest.raises(ServiceError, match="lies in 440305 广东省深圳市南山区, by its names"):
        await locations.resolve(replace(named, accept="440304"))


async def test_band_zero_turns_the_question_off() -> None:
    placed = await Locations(band_km=0.0).resolve(WEST_STATION)
    assert (placed.code, placed.choice) == ("110102", None)


def test_place_outside_the_band_keeps_the_stored_text() -> None:
    locations = Locations()
    where = Location(lat=22.5405, lon=113.9345)
    resolved = locations.resolve_blocking(where)
    assert resolved.border_km is not None and 3.0 < resolved.border_km < 3.5
    assert place(where, resolved).text == describe(where, resolved)
