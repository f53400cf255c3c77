"""Create, start and stop a private Prosody with its own config file and data dir.

Never touches the system service. Used by ``imserver dev`` (``make run``) and by the
test fixtures (free ports, throw-away data dir).

Nothing may outlive its owner: the process that starts a Prosody holds ``owner.lock`` in
the data dir for as long as that Prosody runs, so a second owner is refused instead of
taking over; a Prosody started from the main thread dies with its parent even when the
parent is killed with SIGKILL (Linux ``PR_SET_PDEATHSIG``); and a Prosody that an earlier
owner left running (its ``prosody.pid`` is in the data dir, its command line names our
config file, and nobody holds the lock) is stopped before a new one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from imserver.config import Config

PROSODY = "prosody"
PROSODYCTL = "prosodyctl"
# <linux/prctl.h>: deliver a signal to this process when the thread that forked it dies.
_PR_SET_PDEATHSIG = 1

log = logging.getLogger(__name__)


class ProsodyError(RuntimeError):
    """Prosody is missing, would not start, or refused a command."""


class ProsodyBusy(ProsodyError):
    """Another live process owns the Prosody of this data dir; it is left alone."""


class StartInterrupted(Exception):
    """``start`` gave up because a stop was asked for; whatever it started is stopped."""


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ProsodyInstance:
    """One private Prosody: its config, data dir, ports, hosts and components."""

    data_dir: Path
    domain: str = "localhost"
    client_port: int = 5222
    component_port: int = 5347
    components: dict[str, str] = field(default_factory=dict)  # JID -> secret
    extra_hosts: tuple[str, ...] = ()
    log_level: str = "info"
    extra: str = ""
    # SIGTERM Prosody when the thread that started it dies (SIGKILL included). Only a
    # start from the main thread is covered: the kernel ties this to the forking *thread*,
    # and a worker thread (asyncio.to_thread) may end long before the process does.
    die_with_parent: bool = True
    process: subprocess.Popen[bytes] | None = None
    _lock: IO[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "owner.lock"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "prosody.pid"

    def claim(self) -> None:
        """Become the one owner of this data dir's Prosody, or raise ``ProsodyBusy``.

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
            raise ProsodyBusy(
                f"another imserver (pid {owner}) already runs the Prosody of {self.data_dir}; "
                "stop that one first (Ctrl-C in its terminal, or kill -TERM "
                f"{owner}), or give this one its own prosody.data_dir and ports"
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

    @property
    def config_path(self) -> Path:
        return self.data_dir / "prosody.cfg.lua"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "prosody.log"

    def write_config(self) -> Path:
        """Render the config file from the project's template."""
        if shutil.which(PROSODY) is None:
            raise ProsodyError("prosody is not installed (apt-get install prosody)")
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "certs").mkdir(exist_ok=True)
        hosts = [f'VirtualHost "{h}"' for h in (self.domain, *self.extra_hosts)]
        hosts += [
            f'Component "{jid}"\n    component_secret = "{secret}"'
            for jid, secret in self.components.items()
        ]
        template = Template(
            resources.files("imserver.devserver").joinpath("prosody.cfg.lua.tmpl").read_text()
        )
        text = template.substitute(
            data_dir=str(self.data_dir),
            client_port=self.client_port,
            component_port=self.component_port,
            log_level=self.log_level,
            extra=self.extra,
            virtual_hosts="\n\n".join(hosts),
        )
        self.config_path.write_text(text)
        return self.config_path

    def start(self, timeout: float = 15.0, stop: threading.Event | None = None) -> None:
        """Start Prosody in the foreground (as a child) and wait for both ports.

        Claims the data dir first (``ProsodyBusy`` if a live process owns it) and stops a
        Prosody that an earlier owner left behind. When ``stop`` is set while waiting for
        the ports, the new Prosody is stopped and ``StartInterrupted`` raised.
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
        taken = [p for p in (self.client_port, self.component_port) if _listening(p)]
        if taken:
            raise ProsodyError(
                f"port {taken[0]} on 127.0.0.1 is already in use (another Prosody or "
                "`make run`?); stop it or set xmpp.client_port / xmpp.component_port"
            )
        self.process = subprocess.Popen(
            [PROSODY, "-F", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C or a supervisor's signal to our process group
            # reaches us, and we stop Prosody after the component has left it.
            start_new_session=True,
            preexec_fn=_child_setup(self.die_with_parent),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise StartInterrupted("stop asked for while prosody was starting")
            if self.process.poll() is not None:
                raise ProsodyError(
                    f"prosody exited with {self.process.returncode}: {self.tail_log()}"
                )
            if _listening(self.client_port) and _listening(self.component_port):
                return
            if stop is not None:
                stop.wait(0.05)
            else:
                time.sleep(0.05)
        raise ProsodyError(f"prosody did not listen within {timeout}s: {self.tail_log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Prosody (SIGTERM, then SIGKILL), wait for it and give up ownership."""
        proc = self.process  # kept in self.process meanwhile: ``kill`` may need it
        try:
            if proc is not None:
                terminate(proc, timeout)
        finally:
            self.process = None
            self.release()

    def kill(self) -> None:
        """SIGKILL Prosody without waiting: the last resort when an orderly stop hangs."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()

    def stop_stale(self, timeout: float = 10.0) -> int | None:
        """Stop a Prosody left running by an earlier owner of this data dir.

        Only a process whose pid is in our pidfile *and* whose command line names our
        config file counts (a reused pid is left alone); call it holding the claim, so
        that it cannot be a live owner's Prosody. A Prosody whose parent is still a
        running imserver (one that takes no claim: an older version) is not stale:
        ``ProsodyBusy``. Returns the pid it stopped, if any.
        """
        pid = _read_pid(self.pid_path)
        if pid is None or (self.process is not None and pid == self.process.pid):
            return None
        if not _runs_config(pid, self.config_path):
            return None
        parent = _parent(pid)
        if parent is not None and parent != os.getpid() and _is_imserver(parent):
            raise ProsodyBusy(
                f"prosody pid {pid} of {self.data_dir} belongs to a running imserver "
                f"(pid {parent}); stop that one first (kill -TERM {parent})"
            )
        log.warning("stopping prosody pid %d that an earlier run left behind", pid)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not _alive(pid):
                    return pid
                time.sleep(0.05)
        raise ProsodyError(f"prosody pid {pid} left by an earlier run would not stop")

    def running(self) -> bool:
        """Whether this data dir's Prosody runs (whoever started it) and listens on both ports.

        What ``imserver demo`` asks to find the Prosody of ``make run``: the pid in our
        pidfile is alive, runs our config file, and the client and component ports answer.
        """
        pid = _read_pid(self.pid_path)
        return (
            pid is not None
            and _alive(pid)
            and _runs_config(pid, self.config_path)
            and _listening(self.client_port)
            and _listening(self.component_port)
        )

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
        """The end of Prosody's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def add_account(self, jid: str, password: str) -> None:
        """Create or reset an account (through prosodyctl, as an operator would)."""
        if not self.config_path.exists():
            self.write_config()
        user, _, host = jid.partition("@")
        result = subprocess.run(
            [PROSODYCTL, "--config", str(self.config_path), "register", user, host, password],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise ProsodyError(f"prosodyctl register failed: {result.stderr or result.stdout}")


def for_config(config: Config) -> ProsodyInstance:
    """The private Prosody that config.toml describes (the one of ``make run``)."""
    x = config.xmpp
    return ProsodyInstance(
        Path(config.prosody.data_dir),
        domain=x.domain,
        client_port=x.client_port,
        component_port=x.component_port,
        components={x.component: x.secret},
    )


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


def _child_setup(die_with_parent: bool) -> Callable[[], None] | None:
    """What the Prosody child does between fork and exec, prepared in the parent.

    A signal mask is inherited across exec: a parent that blocks its stop signals (so
    that a dedicated thread takes them, see ``stopping.py``) would otherwise start a
    Prosody that never sees SIGTERM. Everything is looked up here, before the fork.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, ())
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
        if blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            # A parent that died before the prctl would never signal us: go now.
            if os.getppid() != parent:
                os._exit(1)

    return setup


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _runs_config(pid: int, config_path: Path) -> bool:
    """Whether process ``pid`` is a Prosody started with ``config_path``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in argv if a]
    return any("prosody" in Path(a).name for a in args[:2]) and str(config_path) in args


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _is_imserver(pid: int) -> bool:
    """Whether ``pid`` runs the imserver command (its script, or ``-m imserver.cli``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in argv if a]
    return any(Path(a).name == "imserver" or a == "imserver.cli" for a in args[:3])


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie holds no ports and counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
