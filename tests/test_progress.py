"""The progress bar draws on a terminal (a real pseudo-terminal here) and writes nothing
at all when its stream is not one (a pipe, a file, a captured test)."""

from __future__ import annotations

import io
import os

from imserver.progress import Progress


def test_progress_draws_on_a_terminal_only() -> None:
    quiet = io.StringIO()
    with Progress("members", 1000, quiet) as bar:
        for _ in range(10):
            bar.advance(100)
    assert quiet.getvalue() == ""

    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=False) as tty, Progress("members", 1000, tty) as bar:
            assert bar.enabled
            for _ in range(10):
                bar.advance(100)
        drawn = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    last = drawn.rstrip().split("\r")[-1]
    assert last.startswith("members [" + "#" * 30 + "] 1,000/1,000 100%")
    assert last.endswith("0s left\x1b[K")
