"""Progress of long command-line work on stderr: a bar redrawn in place on a terminal.

Off a terminal (a pipe, a log, a test's captured output) it writes a line every tenth of
the way, as the demo's story wants, or nothing at all with ``quiet=True``, as scripts
whose output is data want (the bulk load of ``bench/``). No library: a bar, a count and
a note are a few lines. Used by ``imserver demo`` and ``bench/bulkload.py``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
REDRAW = 0.1  # seconds between two redraws on a terminal (a loop may advance per item)


class Progress:
    """One step's progress: ``advance`` as work ends, ``done`` at the end."""

    def __init__(
        self, label: str, total: int, out: TextIO | None = None, *, quiet: bool = False
    ) -> None:
        self.label, self.total, self.count = label, max(total, 0), 0
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.silent = quiet and not self.tty
        self._shown = -1
        self._drawn = 0.0
        self.note = ""
        self.started = time.monotonic()

    def advance(self, n: int = 1, note: str = "") -> None:
        """Count ``n`` more units done; ``note`` is shown after the bar."""
        self.count += n
        self.note = note or self.note
        if self.silent:
            return
        if self.tty:
            now = time.monotonic()
            if now - self._drawn >= REDRAW or self.count >= self.total:
                self._drawn = now
                self.out.write("\r" + self._line())
                self.out.flush()
            return
        tenth = 10 * self.count // max(self.total, 1)
        if tenth != self._shown and self.count < self.total:  # done() writes the last
            self._shown = tenth
            self.out.write(self._line() + "\n")

    def done(self, note: str = "") -> None:
        """End the step's line, with the time it took."""
        if self.silent:
            return
        self.note = f"{note or self.note}  ({time.monotonic() - self.started:.1f} s)"
        self.out.write(("\r" if self.tty else "") + self._line() + "\n")
        self.out.flush()

    def _line(self) -> str:
        # Nothing to do is all done: an empty step shows a full bar.
        filled = WIDTH * min(self.count, self.total) // self.total if self.total else WIDTH
        bar = "#" * filled + "." * (WIDTH - filled)
        return f"  {self.label:<14} [{bar}] {self.count:>6,}/{self.total:,} {self.note}"
