"""The progress bar: redrawn in place on a terminal (a real pseudo-terminal here); off a
terminal a line every tenth of the way, or nothing at all when asked to be quiet."""

from __future__ import annotations

import io
import os

from imserver.progress import Progress


def run(bar: Progress) -> None:
    for _ in range(10):
        bar.advance(100)
    bar.done("all in")


def test_off_a_terminal_a_line_per_tenth_or_nothing_when_quiet() -> None:
    quiet = io.StringIO()
    run(Progress("members", 1000, quiet, quiet=True))
    assert quiet.getvalue() == ""

    lines = io.StringIO()
    run(Progress("members", 1000, lines))
    shown = lines.getvalue().splitlines()
    assert len(shown) == 10  # 100 .. 900, then done's line
    assert shown[-1].startswith("  members        [" + "#" * 30 + "]  1,000/1,000 all in")


def test_on_a_terminal_redrawn_in_place_even_when_quiet() -> None:
    leader, follower = os.openpty()
    try:
        with open(follower, "w") as tty:  # closing it ends what the leader can read
            bar = Progress("members", 1000, tty, quiet=True)
            assert bar.tty
            run(bar)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        drawn = b"".join(chunks).decode()
    finally:
        os.close(leader)
    assert drawn.startswith("\r  members        [###")
    assert drawn.rstrip().split("\r")[-1].startswith("  members        [" + "#" * 30 + "]")
    assert drawn.count("\n") == 1  # one line, redrawn in place, ended by done()
