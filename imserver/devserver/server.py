"""What every private XMPP server of the project shares (Prosody, ejabberd): one owner per
data dir, a child that dies with its owner, clean-up of what an earlier owner left behind,
free loopback ports, start that waits for readiness, stop that leaves nothing behind.

Nothing may outlive its owner: the process that starts a server holds ``owner.lock`` in
the data dir for as long as that server runs, so a second owner is refused instead of
taking over; a server started from the main thread dies with its parent even when the
parent is killed with SIGKILL (Linux ``PR_SET_PDEATHSIG``); and a server that an earlier
owner left running (its pid is in the data dir's pidfile, its command line names our
config file, and nobody holds the lock) is stopped before a new one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar

# <linux/prctl.h>: deliver a signal to this process when the thread that forked it dies.
_PR_SET_PDEATHSIG = 1

log = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """The server is missing, would not start, or refused a command."""


class ServerBusy(ServerError):
    """Another live process owns the server of this data dir; it is left alone."""


class StartInterrupted(Exception):
    """``start`` gave up because a stop was asked for; whatever it started is stopped."""


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateServer:
    """One private XMPP server: data dir, client and component ports, hosts, components.

    Subclasses say how to write the config, what to run, where the pid and log are and
    how to recognise their own process; this class owns the life cycle.
    """

    data_dir: Path
    domain: str = "localhost"
    client_port: int = 5222
    component_port: int = 5347
    components: dict[str, str] = field(default_factory=dict)  # JID -> secret
    extra_hosts: tuple[str, ...] = ()
    log_level: str = "info"
    extra: str = ""
    # SIGTERM the server when the thread that started it dies (SIGKILL included). Only a
    # start from the main thread is covered: the kernel ties this to the forking *thread*,
    # and a worker thread (asyncio.to_thread) may end long before the process does.
    die_with_parent: bool = True
    process: subprocess.Popen[bytes] | None = None
    _lock: IO[str] | None = field(default=None, init=False, repr=False)

    name: ClassVar[str] = "server"  # in messages and log lines
    label: ClassVar[str] = "server"  # "the {label} of {data_dir}"
    error: ClassVar[type[ServerError]] = ServerError
    busy: ClassVar[type[ServerBusy]] = ServerBusy
    # How to give a second instance its own place, for the "busy" and "port taken" errors.
    own_dir_hint: ClassVar[str] = "its own data dir and ports"
    port_hint: ClassVar[str] = "stop it or choose other ports"

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()

    # What a subclass provides.

    @property
    def pid_path(self) -> Path:
        raise NotImplementedError

    @property
    def config_path(self) -> Path:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def write_config(self) -> Path:
        """Render the config file; raise ``error`` if the server is not installed."""
        raise NotImplementedError

    def command(self) -> tuple[list[str], Mapping[str, str] | None]:
        """The command line that runs the server in the foreground, and its environment
        (``None``: this process's)."""
        raise NotImplementedError

    def runs_config(self, pid: int) -> bool:
        """Whether process ``pid`` is this kind of server started with our config file."""
        raise NotImplementedError

    def ports(self) -> tuple[int, ...]:
        """The ports it listens on once it is up."""
        return (self.client_port, self.component_port)

    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Where it listens once it is up: its ports on 127.0.0.1 (and whatever else a
        subclass adds); each must be free before it starts."""
        return tuple(("127.0.0.1", p) for p in self.ports())

    def ready(self) -> bool:
        """Whether it serves (called while it runs; by default: all its addresses listen)."""
        return all(listening(p, h) for h, p in self.addresses())

    def running(self) -> bool:
        """Whether this data dir's server runs (whoever started it) and serves: what
        ``imserver demo`` asks to find the server of ``make run``."""
        pid = read_pid(self.pid_path)
        return pid is not None and alive(pid) and self.runs_config(pid) and self.ready()

    # The life cycle.

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "owner.lock"

    def claim(self) -> None:
        """Become the one owner of this data dir's server, or raise ``busy``.

        The lock is an ``flock`` on ``owner.lock``: the kernel drops it when its holder
        exits however it exits, so a crashed owner never blocks the next one. Idempotent.
        """
        if self._lock is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Opened without truncating: a refused claimant must not erase the owner's pid.
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        handle = os.fdopen(fd, "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = handle.read().strip() or "?"
            handle.close()
            raise self.busy(
                f"another imserver (pid {owner}) already runs the {self.label} of "
                f"{self.data_dir}; stop that one first (Ctrl-C in its terminal, or kill -TERM "
                f"{owner}), or give this one {self.own_dir_hint}"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        """Give up ownership (``stop`` does this); the lock file itself stays."""
        handle, self._lock = self._lock, None
        if handle is not None:
            handle.close()  # closing the only descriptor drops the flock

    def start(self, timeout: float = 15.0, stop: threading.Event | None = None) -> None:
        """Start the server in the foreground (as a child) and wait until it is ready.

        Claims the data dir first (``busy`` if a live process owns it) and stops a server
        that an earlier owner left behind. When ``stop`` is set while waiting, the new
        server is stopped and ``StartInterrupted`` raised.
        """
        self.claim()
        try:
            self._spawn_and_wait(timeout, stop)
        except BaseException:
            self.stop()  # also gives the claim back: a failed start owns nothing
            raise

    def _spawn_and_wait(self, timeout: float, stop: threading.Event | None) -> None:
        self.write_config()
        self.stop_stale()
        taken = [(h, p) for h, p in self.addresses() if listening(p, h)]
        if taken:
            raise self.error(
                f"port {taken[0][1]} on {taken[0][0]} is already in use (another {self.label} "
                f"or `make run`?); {self.port_hint}"
            )
        argv, env = self.command()
        self.process = subprocess.Popen(
            argv,
            env=None if env is None else dict(env),
            cwd=self.data_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C or a supervisor's signal to our process group
            # reaches us, and we stop the server after the component has left it.
            start_new_session=True,
            preexec_fn=child_setup(self.die_with_parent),
        )
        self.spawned(self.process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise StartInterrupted(f"stop asked for while {self.name} was starting")
            if self.process.poll() is not None:
                raise self.error(
                    f"{self.name} exited with {self.process.returncode}: {self.tail_log()}"
                )
            if self.ready():
                return
            if stop is not None:
                stop.wait(0.05)
            else:
                time.sleep(0.05)
        raise self.error(f"{self.name} was not ready within {timeout}s: {self.tail_log()}")

    def spawned(self, pid: int) -> None:
        """Called right after the child started (e.g. to write its pidfile)."""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL), wait for it and give up ownership."""
        proc = self.process  # kept in self.process meanwhile: ``kill`` may need it
        try:
            if proc is not None:
                terminate(proc, timeout)
        finally:
            self.process = None
            self.release()

    def kill(self) -> None:
        """SIGKILL the server without waiting: the last resort when an orderly stop hangs."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()

    def stop_stale(self, timeout: float = 10.0) -> int | None:
        """Stop a server left running by an earlier owner of this data dir.

        Only a process whose pid is in our pidfile *and* whose command line names our
        config file counts (a reused pid is left alone); call it holding the claim, so
        that it cannot be a live owner's server. A server whose parent is still a
        running imserver (one that takes no claim: an older version) is not stale:
        ``busy``. Returns the pid it stopped, if any.
        """
        pid = read_pid(self.pid_path)
        if pid is None or (self.process is not None and pid == self.process.pid):
            return None
        if not self.runs_config(pid):
            return None
        parent = parent_of(pid)
        if parent is not None and parent != os.getpid() and is_imserver(parent):
            raise self.busy(
                f"{self.name} pid {pid} of {self.data_dir} belongs to a running imserver "
                f"(pid {parent}); stop that one first (kill -TERM {parent})"
            )
        log.warning("stopping %s pid %d that an earlier run left behind", self.name, pid)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not alive(pid):
                    return pid
                time.sleep(0.05)
        raise self.error(f"{self.name} pid {pid} left by an earlier run would not stop")

    def restart(self) -> None:
        """Stop and start again on the same ports and data."""
        self.stop()
        self.start()

    async def astart(self) -> None:
        """``start`` without blocking the event loop."""
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        """``stop`` without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    def tail_log(self, lines: int = 20) -> str:
        """The end of the server's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a child and wait for it; SIGKILL it if it is still there after ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def child_setup(die_with_parent: bool) -> Callable[[], None] | None:
    """What the server's child does between fork and exec, prepared in the parent.

    A signal mask is inherited across exec: a parent that blocks its stop signals (so
    that a dedicated thread takes them, see ``stopping.py``) would otherwise start a
    server that never sees SIGTERM. Everything is looked up here, before the fork.

    Until its ``setsid`` the child is in our process group: a Ctrl-C to the group then
    waits in it, blocked, and is delivered when the mask is cleared. This is still a
    copy of our interpreter, whose SIGINT handler raises KeyboardInterrupt (Popen would
    raise SubprocessError, a crash); with the default action restored first, such a
    signal ends the child as it would end the server after exec.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    # Stop signals with a Python handler here (SIGINT's raises KeyboardInterrupt).
    handled = [s for s in blocked if callable(signal.getsignal(s))]
    prctl: Callable[..., int] | None = None
    if (
        die_with_parent
        and sys.platform == "linux"
        and threading.current_thread() is threading.main_thread()
    ):
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    if not blocked and prctl is None:
        return None
    parent = os.getpid()

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            # A parent that died before the prctl would never signal us: go now.
            if os.getppid() != parent:
                os._exit(1)
        if blocked:
            for signum in handled:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())

    return setup


def read_pid(path: Path) -> int | None:
    """The pid in a pidfile, or None."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (empty when it is gone)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []
    return [a.decode(errors="replace") for a in argv if a]


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid``, or None when it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def is_imserver(pid: int) -> bool:
    """Whether ``pid`` runs the imserver command (its script, or ``-m imserver.cli``)."""
    args = cmdline(pid)
    return any(Path(a).name == "imserver" or a == "imserver.cli" for a in args[:3])


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie holds no ports and counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0
