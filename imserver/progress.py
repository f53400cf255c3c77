"""A one-line progress bar for long command-line work, on stderr, for people only.

It draws only when its stream is a terminal: piped into a file, a log or a test, it
writes nothing at all, so the output of scripts stays what it was. Redrawn at most five
times a second, so a loop may call :meth:`Progress.advance` for every item. No library:
a bar, a count, a rate and an estimate of the time left are a few lines.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
REDRAW = 0.2  # seconds between two redraws


class Progress:
    """``with Progress("members", total) as bar: … bar.advance(n) …``"""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 0)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.done = 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done; redraw when it is time."""
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._drawn >= REDRAW:
            self._drawn = now
            self._draw(now)

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        """The bar as text: label, bar, count, rate, time left."""
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        share = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(share * WIDTH)
        left = (self.total - self.done) / rate if rate and self.done < self.total else 0.0
        return (
            f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] "
            f"{self.done:,}/{self.total:,} {share:4.0%} {rate:,.0f}/s {left:,.0f}s left"
        )

    def _draw(self, now: float) -> None:
        # \r and "erase to end of line": the bar replaces itself in place.
        self.stream.write(f"\r{self.line(now)}\x1b[K")
        self.stream.flush()
