"""Stop a foreground run at any moment: SIGTERM, SIGINT or SIGHUP become an orderly stop.

A Python signal handler runs "between bytecodes" of the main thread, so a stop signal
can land inside ``subprocess.Popen`` after the fork and before we hold the child's pid,
or inside the clean-up that stops that child; Python's default SIGTERM action ends the
process with no clean-up at all. Both left the private Prosody running (issue 11).

So ``Stopper`` blocks the stop signals in every thread and takes them synchronously in
one thread of its own (``sigwait``). A signal then only *asks* for a stop; the main
thread acts on it at the points where acting is safe:

- before anything is started, at the next step boundary (a migration or a region load
  is never cut in the middle; each is one transaction or short);
- while Prosody starts, in its wait for the ports (``ProsodyInstance.start(stop=...)``);
- while serving, through the callback registered with ``on_stop`` (it cancels the
  serving task from the event loop's thread).

Before the block a SIGINT is Python's KeyboardInterrupt, which some code swallows (an
import's module-lock callback, a library's bare ``except:``): ``note_interrupts``, set
first thing by the command's process, keeps a record of it, and ``install`` takes it as
the first stop.

Later signals are noted and otherwise ignored: the first one's orderly stop runs to its
end and is not cut short by an impatient second one. Should that stop hang anyway,
after ``grace`` seconds the emergency callbacks run (SIGKILL Prosody) and the process
exits with status 1.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Longer than ProsodyInstance.stop's SIGTERM wait (10 s) plus the component's own stop,
# shorter than systemd's default 90 s before it sends SIGKILL.
GRACE_SECONDS = 30.0


# The SIGINTs that ``note_interrupts``'s handler took before the stop signals were blocked.
_interrupts: list[int] = []


def note_interrupts() -> None:
    """Have each SIGINT noted as well as raised as KeyboardInterrupt, as Python does.

    Until ``Stopper.install`` blocks it, a SIGINT is Python's: a KeyboardInterrupt
    wherever it lands, and code that catches everything swallows it and goes on. Some
    does: CPython's import machinery, when it lands in the weakref callback of a module
    lock (it prints "Exception ignored" and the import goes on: about 1 in 100 SIGINTs
    during imports), and slixmpp's import (a bare ``except:`` around ``import gnupg``).
    A noted SIGINT is not lost: ``install`` takes it as the first stop. Call this first
    thing in the process that runs the command, never in one that only calls the CLI
    (a test): the handler stays until the process ends.
    """

    def interrupted(signum: int, _frame: object) -> None:
        _interrupts.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)


class StopRequested(Exception):
    """A stop signal arrived before serving began; unwind and stop what was started."""


class Stopper:
    """Receives the stop signals of this process and turns them into an orderly stop."""

    def __init__(self, grace: float = GRACE_SECONDS) -> None:
        self.grace = grace
        self.requested = threading.Event()
        self.signum: int | None = None
        self._lock = threading.Lock()
        self._on_stop: Callable[[], None] | None = None
        self._emergency: list[Callable[[], None]] = []

    def install(self) -> None:
        """Block the stop signals and start the thread that waits for them.

        Call it first, before any other thread exists: a thread inherits the signal mask
        of the thread that creates it, and a thread that left a stop signal unblocked
        would take it with the default action (the end of the process, nothing cleaned).
        """
        others = threading.active_count() > 1
        interrupted = False
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        except KeyboardInterrupt:
            # A SIGINT that Python took just before the block is raised as the block
            # takes effect (the call runs the pending handlers).
            interrupted = True
        if interrupted or _interrupts:
            # Came before the block, and the process went on: the first stop of this run.
            self._received(signal.SIGINT)
        if others:
            log.warning("stop signals blocked after other threads started; they may not be")
        threading.Thread(target=self._wait_for_signals, name="stop-signals", daemon=True).start()

    def on_stop(self, callback: Callable[[], None] | None) -> bool:
        """Run ``callback`` (from the signal thread) when a stop is asked for.

        Returns False, and registers nothing, when a stop was already asked for: the
        caller must not begin what it meant to make stoppable. ``None`` unregisters.
        """
        with self._lock:
            if self.requested.is_set() and callback is not None:
                return False
            self._on_stop = callback
            return True

    def on_emergency(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` if the orderly stop outlasts the grace period (keep it quick)."""
        with self._lock:
            self._emergency.append(callback)

    def check(self) -> None:
        """Raise ``StopRequested`` if a stop was asked for (call at step boundaries)."""
        if self.requested.is_set():
            raise StopRequested(self.describe())

    def describe(self) -> str:
        """The signal that asked for the stop, for messages."""
        return signal.Signals(self.signum).name if self.signum is not None else "no signal"

    def _wait_for_signals(self) -> None:
        while True:
            self._received(signal.sigwait(STOP_SIGNALS))

    def _received(self, signum: int) -> None:
        with self._lock:
            first = not self.requested.is_set()
            if first:
                self.signum = signum
                self.requested.set()
            callback = self._on_stop if first else None
        name = signal.Signals(signum).name
        if not first:
            log.warning("%s: already stopping (see above); the stop goes on", name)
            return
        log.info("%s: stopping", name)
        timer = threading.Timer(self.grace, self._force)
        timer.daemon = True  # a pending timer must not keep a finished process alive
        timer.start()
        if callback is not None:
            callback()

    def _force(self) -> None:
        log.error("the stop did not finish within %.0fs: killing what is left", self.grace)
        with self._lock:
            emergency = list(self._emergency)
        for callback in emergency:
            try:
                callback()
            except Exception:
                log.exception("emergency stop step failed")
        logging.shutdown()
        sys.stderr.flush()
        os._exit(1)
