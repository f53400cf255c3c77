"""Invite URIs, QR codes and posters, read back with real readers (zbar, poppler, librsvg).
No database, no XMPP: the pictures alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imserver.domain.invites import invite_code, invite_uri, poster_url, xmpp_uri
from imserver.posters import fonts, poster, qr
from tests.support.scan import pdf_page, pdf_text, scaled, svg_pixels, zbar

REPO = Path(__file__).parents[1]
URIS = [
    invite_uri("dist.example.org", "440305-M00000001"),
    invite_uri("dist.localhost", "110105123456-U99999999"),  # the longest rule number
    xmpp_uri("dienst.bücher.example", "join 440305-A00000002"),  # an IDN component
]
NAME = "南山茶馆 Tea House"


def test_the_uri_is_rfc_5122() -> None:
    assert (
        invite_uri("dist.example.org", "440305-U00000123")
        == "xmpp:dist.example.org?message;body=join%20440305-U00000123"
    )
    # The body is a query value: everything but unreserved characters is escaped, the
    # space as %20 (never +); an IRI's non-ASCII domain goes as UTF-8 octets.
    assert (
        xmpp_uri("Dist.Bücher.example", "a b&c;d=é/+")
        == "xmpp:dist.b%C3%BCcher.example?message;body=a%20b%26c%3Bd%3D%C3%A9%2F%2B"
    )
    # RFC 5122's nodeallow characters stay as they are in a node.
    assert xmpp_uri("a+b,c!@example.org", "hi") == "xmpp:a+b,c!@example.org?message;body=hi"
    assert poster_url("https://x.example/dist/", "440305-U00000123", "pdf") == (
        "https://x.example/dist/invites/440305-U00000123.pdf"
    )
    with pytest.raises(ValueError, match="poster format"):
        poster_url("https://x.example", "440305-U00000123", "gif")


def test_an_invite_code_is_a_rule_number_never_a_jid() -> None:
    assert invite_code("440305-U00000123") == "440305-U00000123"
    assert invite_code(" 440305-m00000001 ") == "440305-M00000001"  # as typed on a phone
    for text in ("alice@example.org", "440305-U0000012", "440305-X00000123", "", "shop"):
        assert invite_code(text) is None, text
    # A rule number with an @ is a JID's local part, not a code.
    assert invite_code("440305-U00000123@example.org") is None


@pytest.mark.parametrize("uri", URIS)
def test_qr_png_and_svg_decode_to_the_exact_uri(tmp_path: Path, uri: str) -> None:
    png, svg = tmp_path / "qr.png", tmp_path / "qr.svg"
    png.write_bytes(qr.png(uri))
    svg.write_bytes(qr.svg(uri))
    assert zbar(png) == [uri]
    assert zbar(svg_pixels(svg)) == [uri]


def test_the_poster_pdf_renders_scans_and_carries_its_text(tmp_path: Path) -> None:
    uri = URIS[0]
    pdf = tmp_path / "poster.pdf"
    pdf.write_bytes(poster.pdf(NAME, "440305-M00000001", uri, fonts.find_cjk_font()))
    assert zbar(pdf_page(pdf)) == [uri]
    text = pdf_text(pdf)
    for needle in (NAME, uri, "扫描二维码", "Scan the code", "440305-M00000001"):
        assert needle in text, needle


def test_the_poster_png_scans_after_scaling_down_to_600_px(tmp_path: Path) -> None:
    uri = URIS[1]
    png = tmp_path / "poster.png"
    png.write_bytes(poster.png(NAME, "110105123456-U99999999", uri, fonts.find_cjk_font()))
    assert zbar(png) == [uri]
    assert zbar(scaled(png, 600)) == [uri]


def test_a_long_name_is_fitted_to_the_page(tmp_path: Path) -> None:
    font = fonts.find_cjk_font()
    name = "龍" * 120 + " A very long business name" * 3  # 195 characters

    def measure(text: str, size_mm: float) -> float:
        return len(text) * size_mm  # a CJK glyph is about as wide as it is tall

    lines = poster.layout(name, "440305-M00000001", URIS[0], measure)
    room = poster.PAGE_MM[0] - 2 * poster.MARGIN_MM
    assert all(measure(line.text, line.size_mm) <= room for line in lines)
    assert lines[0].text.endswith("…") and lines[0].size_mm == pytest.approx(6.0, abs=0.7)
    png = tmp_path / "long.png"
    png.write_bytes(poster.png(name, "440305-M00000001", URIS[0], font))
    assert zbar(scaled(png, 600)) == [URIS[0]]


def test_a_missing_font_says_how_to_install_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(fonts, "DEBIAN_FONTS", (str(tmp_path / "none.ttc"),))
    with pytest.raises(fonts.FontMissing, match="apt-get install fonts-wqy-zenhei"):
        fonts.find_cjk_font()
    with pytest.raises(fonts.FontMissing, match="is not a file"):
        fonts.find_cjk_font(str(tmp_path / "nope.ttf"))


def test_a_server_that_publishes_posters_refuses_to_start_without_a_font(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "IMSERVER_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}",
        "IMSERVER_INVITES__PUBLIC_BASE_URL": "https://dist.example.org",
        "IMSERVER_INVITES__FONT": str(tmp_path / "missing.ttf"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "imserver.cli", "--config", str(REPO / "config.toml"), "run"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"refusing to start: invites.font: {tmp_path / 'missing.ttf'} is not a file" in (
        done.stderr
    )
