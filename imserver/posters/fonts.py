"""The CJK font of the posters, found at run time.

One TrueType font draws both the PNG (Pillow) and the PDF (reportlab embeds a subset of
it, so a print shop needs no font of its own). WenQuanYi Zen Hei (Debian's
``fonts-wqy-zenhei``) has TrueType outlines, which reportlab can embed; Noto CJK's are
CFF, which it cannot, so Noto is not looked for.
"""

from __future__ import annotations

from pathlib import Path

# Where Debian's packages put the fonts (fonts-wqy-zenhei, fonts-wqy-microhei).
DEBIAN_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)


class FontMissing(RuntimeError):
    """No usable CJK font: the message says how to install one."""


def find_cjk_font(configured: str = "") -> Path:
    """The configured font file, else the first Debian CJK font installed."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise FontMissing(f"invites.font: {configured} is not a file")
        return path
    for candidate in DEBIAN_FONTS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise FontMissing(
        "posters need a CJK font and none is installed: apt-get install fonts-wqy-zenhei "
        "(or set [invites] font to a TrueType .ttf/.ttc file)"
    )
