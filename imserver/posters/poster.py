"""The printable poster of an invite, as PNG (Pillow) and PDF (reportlab).

One layout, in millimetres on an A4 page, drawn by both renderers: the member's name,
its invite code, the QR code, the invite URI as text, and two lines of instructions in
Chinese and in English. The PDF draws the QR code as vector rectangles and embeds a
subset of the CJK font, so it prints sharp at any size on any printer.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from imserver.posters import qr

PAGE_MM = (210.0, 297.0)  # A4 portrait
MARGIN_MM = 12.0
QR_TOP_MM, QR_SIZE_MM = 58.0, 140.0
PNG_DPI = 150  # 1240 x 1754 pixels: sharp on a screen, readable printed
INSTRUCTIONS = (
    ("用手机上的 XMPP 聊天软件（Conversations、Gajim、Dino）扫描二维码，", 5.2),
    ("它会打开与本服务的对话并写好加入消息，点“发送”即可加入。", 5.2),
    ("Scan the code with an XMPP chat app (Conversations, Gajim, Dino):", 4.8),
    ("it opens a chat with the join message typed; press Send to join.", 4.8),
)
# Measures a text's width in millimetres at a font size in millimetres.
Measure = Callable[[str, float], float]


@dataclass(frozen=True)
class Line:
    """One line of text, centred: its baseline from the top of the page, its size."""

    text: str
    baseline_mm: float
    size_mm: float


def _fit(text: str, size_mm: float, measure: Measure) -> tuple[str, float]:
    """Shrink a line to the page's width (down to half its size), then cut it with an
    ellipsis: a merchant's name may be 200 characters long."""
    room = PAGE_MM[0] - 2 * MARGIN_MM
    size = size_mm
    while measure(text, size) > room and size > size_mm / 2:
        size *= 0.9
    while measure(text, size) > room and len(text) > 1:
        text = text[:-2] + "…"
    return text, size


def layout(title: str, code: str, uri: str, measure: Measure) -> list[Line]:
    """Every line of the poster, fitted to the page with ``measure``."""
    wanted = [
        (title, 30.0, 12.0),
        (f"邀请码 Invite code: {code}", 46.0, 6.0),
        (uri, QR_TOP_MM + QR_SIZE_MM + 10.0, 4.2),
    ]
    y = QR_TOP_MM + QR_SIZE_MM + 26.0
    for text, size in INSTRUCTIONS:
        wanted.append((text, y, size))
        y += size * 1.9
    lines = []
    for text, baseline, size in wanted:
        fitted, fitted_size = _fit(text, size, measure)
        lines.append(Line(fitted, baseline, fitted_size))
    return lines


@lru_cache(maxsize=8)
def _pil_font(path: Path, size_px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size_px, index=0)


def png(title: str, code: str, uri: str, font: Path) -> bytes:
    """The poster as an A4 PNG at ``PNG_DPI``."""
    px = PNG_DPI / 25.4  # pixels per millimetre
    width, height = round(PAGE_MM[0] * px), round(PAGE_MM[1] * px)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)

    def measure(text: str, size_mm: float) -> float:
        return draw.textlength(text, font=_pil_font(font, round(size_mm * px))) / px

    for line in layout(title, code, uri, measure):
        face = _pil_font(font, round(line.size_mm * px))
        draw.text((width / 2, line.baseline_mm * px), line.text, fill=0, font=face, anchor="ms")
    modules, runs = qr.dark_runs(uri)
    scale = int(QR_SIZE_MM * px) // modules  # whole pixels per module: no blurred edges
    left, top = (width - modules * scale) // 2, round(QR_TOP_MM * px)
    for row, col, length in runs:
        x, y = left + col * scale, top + row * scale
        draw.rectangle((x, y, x + length * scale - 1, y + scale - 1), fill=0)
    out = io.BytesIO()
    page.save(out, format="PNG")  # optimize=True would take five times as long
    return out.getvalue()


@lru_cache(maxsize=4)
def _pdf_font(path: Path) -> str:
    """Register the font with reportlab once per file; its reportlab name."""
    name = f"cjk-{path.stem}"
    pdfmetrics.registerFont(TTFont(name, str(path), subfontIndex=0))
    return name


def pdf(title: str, code: str, uri: str, font: Path) -> bytes:
    """The poster as a one-page A4 PDF, the font's used glyphs embedded."""
    pt = 72 / 25.4  # points per millimetre
    face = _pdf_font(font)
    out = io.BytesIO()
    page = canvas.Canvas(out, pagesize=A4, pageCompression=1)
    page.setTitle(f"{title} {code}")
    page.setSubject(uri)
    page_h = A4[1]

    def measure(text: str, size_mm: float) -> float:
        return float(pdfmetrics.stringWidth(text, face, size_mm * pt)) / pt

    for line in layout(title, code, uri, measure):
        page.setFont(face, line.size_mm * pt)
        page.drawCentredString(A4[0] / 2, page_h - line.baseline_mm * pt, line.text)
    modules, runs = qr.dark_runs(uri)
    module = QR_SIZE_MM * pt / modules
    left, top = (A4[0] - QR_SIZE_MM * pt) / 2, page_h - QR_TOP_MM * pt
    for row, col, length in runs:
        y = top - (row + 1) * module
        page.rect(left + col * module, y, length * module, module, stroke=0, fill=1)
    page.showPage()
    page.save()
    return out.getvalue()
