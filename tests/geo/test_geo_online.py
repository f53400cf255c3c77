"""The optional online geocoder, against a tiny local Nominatim look-alike."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from imserver.geo.errors import AmbiguousAddress, UnknownAddress
from imserver.geo.online import geocode_address, geocode_address_sync, make_geocoder
from imserver.geo.resolver import Resolver

# What the fake service answers, by query text.
ANSWERS: dict[str, object] = {
    "深圳科技园": [{"lat": "22.5405", "lon": "113.9345", "display_name": "科技园, 南山区"}],
    "栈桥回澜阁": [{"lat": "36.0578", "lon": "120.3158", "display_name": "栈桥"}],
    "北京西站": [{"lat": "39.8946", "lon": "116.3220", "display_name": "北京西站"}],
    "广东省深圳市福田区 (empty)": [],
    "广东省深圳市福田区 (sea)": [{"lat": "35.5", "lon": "123.5", "display_name": "黄海"}],
}


class _Handler(BaseHTTPRequestHandler):
    seen: list[str] = []  # noqa: RUF012 - shared on purpose, reset per test

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query).get("q", [""])[0]
        type(self).seen.append(f"{parts.path}?q={query}")
        if not parts.path.endswith("/search"):
            self._send(404, b"not found")
        elif "(slow)" in query:
            time.sleep(1.5)
            self._send(200, b"[]")
        elif "(error)" in query:
            self._send(500, b"boom")
        elif "(garbage)" in query:
            self._send(200, b"{not json")
        else:
            self._send(200, json.dumps(ANSWERS.get(query, [])).encode())

    def _send(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out first, as the slow case intends

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _reset_seen() -> None:
    _Handler.seen = []


def test_geocoder_answer_goes_through_resolve_point(service: str, resolver: Resolver) -> None:
    geocoder = make_geocoder("nominatim", service, timeout=2.0)
    got = geocode_address_sync("深圳科技园", geocoder, resolver)
    assert (got.code, got.how) == ("440305", "geocoder")
    assert got.note.startswith("geocoded to 22.540500,113.934500")
    assert _Handler.seen == ["/search?q=深圳科技园"]


def test_geocoder_point_off_the_coast(service: str, resolver: Resolver) -> None:
    geocoder = make_geocoder("nominatim", service, timeout=2.0)
    got = geocode_address_sync("栈桥回澜阁", geocoder, resolver)
    assert (got.code, got.how) == ("370202", "geocoder")
    assert "nearest district" in got.note


async def test_a_geocoded_point_near_a_border_carries_its_band(
    service: str, resolver: Resolver
) -> None:
    geocoder = make_geocoder("nominatim", service, timeout=2.0)
    got = await geocode_address("北京西站", geocoder, resolver, band_km=0.5)
    assert got.how == "geocoder" and got.uncertain
    assert [c.code for c in got.candidates] == ["110102", "110108", "110106"]
    narrow = geocode_address_sync("北京西站", geocoder, resolver, band_km=0.15)
    assert [c.code for c in narrow.candidates] == ["110102", "110108"]
    assert geocode_address_sync("北京西站", geocoder, resolver, band_km=0.0).candidates == ()


def test_url_path_prefix_is_kept(service: str, resolver: Resolver) -> None:
    geocoder = make_geocoder("Nominatim", service + "/osm/", timeout=2.0)
    assert geocode_address_sync("深圳科技园", geocoder, resolver).how == "geocoder"
    assert _Handler.seen == ["/osm/search?q=深圳科技园"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("广东省深圳市福田区 (slow)", "failed"),
        ("广东省深圳市福田区 (error)", "failed"),
        ("广东省深圳市福田区 (garbage)", "failed"),
        ("广东省深圳市福田区 (empty)", "found nothing"),
        ("广东省深圳市福田区 (sea)", "not usable"),
    ],
)
def test_failures_fall_back_offline_with_a_warning(
    service: str, resolver: Resolver, caplog: pytest.LogCaptureFixture, text: str, why: str
) -> None:
    geocoder = make_geocoder("nominatim", service, timeout=0.5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="imserver.geo.online"):
        got = geocode_address_sync(text, geocoder, resolver)
    assert time.monotonic() - started < 1.4  # the timeout held
    assert (got.code, got.how) == ("440304", "address")
    assert any(why in r.getMessage() for r in caplog.records), caplog.text


def test_unreachable_service_falls_back(resolver: Resolver) -> None:
    # A port nothing listens on: bind one, note it, close it.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    geocoder = make_geocoder("nominatim", f"http://127.0.0.1:{port}", timeout=1.0)
    got = geocode_address_sync("广东省深圳市南山区", geocoder, resolver)
    assert (got.code, got.how) == ("440305", "address")


def test_offline_errors_still_surface(service: str, resolver: Resolver) -> None:
    geocoder = make_geocoder("nominatim", service, timeout=1.0)
    with pytest.raises(AmbiguousAddress):
        geocode_address_sync("南山区", geocoder, resolver)
    with pytest.raises(UnknownAddress):
        geocode_address_sync("nowhere", geocoder, resolver)


def test_without_geocoder_it_is_offline(resolver: Resolver) -> None:
    assert geocode_address_sync("广东省深圳市南山区", None, resolver).how == "address"


async def test_async_form(service: str, resolver: Resolver) -> None:
    geocoder = make_geocoder("nominatim", service, timeout=2.0)
    got = await geocode_address("深圳科技园", geocoder, resolver)
    assert (got.code, got.how) == ("440305", "geocoder")
    fallback = await geocode_address("广东省深圳市福田区 (error)", geocoder, resolver)
    assert fallback.how == "address"


@pytest.mark.parametrize(
    ("provider", "url", "timeout", "words"),
    [
        ("no-such-service", "http://127.0.0.1:1", 1.0, "unknown geocoder provider"),
        ("baidu", "http://127.0.0.1:1", 1.0, "cannot be pointed at a URL"),
        ("nominatim", "ftp://example.org", 1.0, "http(s)"),
        ("nominatim", "127.0.0.1:8080", 1.0, "http(s)"),
        ("nominatim", "http://127.0.0.1:1", 0.0, "timeout"),
        ("nominatim", "http://127.0.0.1:1", float("nan"), "timeout"),
    ],
)
def test_make_geocoder_rejects_bad_settings(
    provider: str, url: str, timeout: float, words: str
) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        make_geocoder(provider, url, timeout)
