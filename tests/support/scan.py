"""Reading invites back as a phone would: zbar for QR codes, poppler for PDF pages,
librsvg for SVG (installed by .ci/ensure-zbar)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from PIL import Image


def zbar(image: Path) -> list[str]:
    """Every QR code zbar finds in an image file, as text."""
    done = subprocess.run(
        ["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(image)],
        capture_output=True,
        timeout=60,
    )
    # zbarimg exits 4 when it found no symbol: that is an empty answer, not a failure.
    assert done.returncode in (0, 4), done.stderr
    return done.stdout.decode().splitlines()


def pdf_page(pdf: Path, dpi: int = 100) -> Path:
    """The PDF's first page as a PNG beside it (pdftoppm)."""
    prefix = pdf.with_suffix("")
    subprocess.run(
        ["pdftoppm", "-r", str(dpi), "-png", "-singlefile", str(pdf), str(prefix)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return prefix.with_suffix(".png")


def pdf_text(pdf: Path) -> str:
    """The text that a reader extracts from the PDF (pdftotext)."""
    done = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, timeout=60
    )
    return done.stdout.decode()


def svg_pixels(svg: Path) -> Path:
    """An SVG drawn to a PNG beside it (rsvg-convert)."""
    png = svg.with_suffix(".svg.png")
    subprocess.run(["rsvg-convert", "-o", str(png), str(svg)], check=True, timeout=60)
    return png


def scaled(png: Path, width: int) -> Path:
    """The image scaled down to ``width`` pixels (what a phone's camera may get)."""
    with Image.open(png) as image:
        height = round(image.height * width / image.width)
        small = image.resize((width, height), Image.Resampling.LANCZOS)
    out = png.with_name(f"{png.stem}-{width}.png")
    small.save(out)
    return out
