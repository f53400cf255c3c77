"""Progress of the demo's long steps on stderr: a bar redrawn in place on a terminal,
a line every tenth of the way elsewhere (a log, a test's captured output)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    """One step's progress: ``advance`` as work ends, ``done`` at the end."""

    def __init__(self, label: str, total: int, out: TextIO | None = None) -> None:
        self.label, self.total, self.count = label, max(total, 1), 0
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self._shown = -1
        self.note = ""
        self.started = time.monotonic()

    def advance(self, n: int = 1, note: str = "") -> None:
        """Count ``n`` more units done; ``note`` is shown after the bar."""
        self.count += n
        self.note = note or self.note
        tenth = 10 * self.count // self.total
        if self.tty:
            self.out.write("\r" + self._line())
            self.out.flush()
        elif tenth != self._shown and self.count < self.total:  # done() writes the last
            self._shown = tenth
            self.out.write(self._line() + "\n")

    def done(self, note: str = "") -> None:
        """End the step's line, with the time it took."""
        self.note = f"{note or self.note}  ({time.monotonic() - self.started:.1f} s)"
        self.out.write(("\r" if self.tty else "") + self._line() + "\n")
        self.out.flush()

    def _line(self) -> str:
        filled = WIDTH * min(self.count, self.total) // self.total
        bar = "#" * filled + "." * (WIDTH - filled)
        return f"  {self.label:<14} [{bar}] {self.count:>6,}/{self.total:,} {self.note}"
