"""QR codes with segno (pure Python: PNG and SVG need neither Pillow nor a C library)."""

from __future__ import annotations

import io

import segno

# Medium error correction: a printed poster survives a scratch or a glare spot, and an
# invite URI (about 60 characters) still fits a version-4 symbol (33 modules).
ERROR = "m"
BORDER = 4  # the quiet zone the QR standard asks for, in modules


def make(text: str) -> segno.QRCode:
    """The QR code of ``text`` (never a Micro QR, which phone readers often skip)."""
    return segno.make_qr(text, error=ERROR)


def width(code: segno.QRCode) -> int:
    """The symbol's width in modules, quiet zone included."""
    return int(code.symbol_size(scale=1, border=BORDER)[0])


def png(text: str, scale: int = 10) -> bytes:
    """The QR code as a PNG, ``scale`` pixels per module."""
    buf = io.BytesIO()
    make(text).save(buf, kind="png", scale=scale, border=BORDER)
    return buf.getvalue()


def svg(text: str, scale: int = 10) -> bytes:
    """The QR code as a standalone SVG document."""
    buf = io.BytesIO()
    # A white background: a transparent one on a dark page (dark mode) does not scan.
    make(text).save(buf, kind="svg", scale=scale, border=BORDER, light="#fff", title=text)
    return buf.getvalue()


def dark_runs(text: str) -> tuple[int, list[tuple[int, int, int]]]:
    """The symbol's width in modules (quiet zone included) and its dark modules as
    horizontal runs ``(row, first column, length)``, rows from the top: what a vector
    drawing needs (one rectangle per run instead of one per module)."""
    code = make(text)
    size = width(code)
    runs: list[tuple[int, int, int]] = []
    for row, line in enumerate(code.matrix_iter(scale=1, border=BORDER)):
        start = None
        for col, dark in enumerate([*line, 0]):
            if dark and start is None:
                start = col
            elif not dark and start is not None:
                runs.append((row, start, col - start))
                start = None
    return size, runs
