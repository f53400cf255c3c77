"""A one-line progress bar for long CLI commands (``imserver db copy``), on a terminal only."""

from __future__ import annotations

import shutil
import time
from typing import TextIO

# Redraw at most this often: a copy advances thousands of times a second.
REDRAW_SECONDS = 0.1


class Bar:
    """One line per step (a table being copied): name, bar, rows done of the total, rate.

    Redraws in place with a carriage return, so it is only for a terminal: the CLI makes
    one only when its output is a TTY.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.name = ""
        self.total = 0
        self.done = 0
        self._started = 0.0
        self._drawn = 0.0

    def table(self, name: str, rows: int) -> None:
        """A new step of ``rows`` rows: the previous one's line is finished."""
        self._finish()
        self.name, self.total, self.done = name, rows, 0
        self._started = time.monotonic()
        self._draw()

    def advance(self, rows: int) -> None:
        """``rows`` more rows of the current step are done."""
        self.done += rows
        if time.monotonic() - self._drawn >= REDRAW_SECONDS or self.done >= self.total:
            self._draw()

    def close(self) -> None:
        """End the last line."""
        self._finish()

    def _finish(self) -> None:
        if self.name:
            self._draw()
            self.out.write("\n")
            self.out.flush()
            self.name = ""

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        elapsed = max(self._drawn - self._started, 1e-9)
        counts = f" {self.done:,}/{self.total:,} rows {self.done / elapsed:,.0f}/s"
        label = f"{self.name[:20]:<20} "
        room = shutil.get_terminal_size((80, 24)).columns - len(label) - len(counts) - 3
        width = max(10, min(40, room))
        filled = width if self.total == 0 else min(width, width * self.done // self.total)
        self.out.write(f"\r{label}[{'#' * filled}{'.' * (width - filled)}]{counts}")
        self.out.flush()
