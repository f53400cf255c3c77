"""`make run` / `imserver dev` stopped at any moment leaves nothing behind (issue 11).

Real processes, real signals: each run is `imserver dev` (or `make run`) in a process
group of its own, on free loopback ports and a data dir of this module, stopped by a
signal to its group (a terminal's Ctrl-C, a supervisor) or to its main process (systemd's
KillMode=mixed) at a random moment. After every stop: no process that carries this
module's data dir in its environment is left, both ports are closed, and the next run on
the same ports and data dir starts. Moments are drawn from a seeded RNG; the seed is in
every failure message (set STOP_ANYTIME_SEED to replay one).
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imserver.devserver.prosody import free_port

ROOT = Path(__file__).parents[1]
SEED = int(os.environ.get("STOP_ANYTIME_SEED", str(time.time_ns() % 1_000_000)))
READY_TIMEOUT = 60.0
EXIT_TIMEOUT = 45.0  # longer than the Stopper's own 30 s grace: a hang shows as a hang


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Run:
    """One `imserver dev` (or `make run`) in its own process group, output in a file."""

    proc: subprocess.Popen[bytes]
    out: Path
    component_port: int
    began: float = field(default_factory=time.monotonic)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def connected(self) -> bool:
        return f"connected to 127.0.0.1:{self.component_port}" in self.output()

    def signal(self, signum: int, group: bool) -> None:
        """Send ``signum`` to the run's process group, or to its main process only."""
        if group:
            os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(
                f"seed {SEED}: the run did not exit within {timeout}s of its stop:\n"
                f"{self.output()[-3000:]}"
            ) from None


@dataclass
class Rig:
    """Ports, data dir and environment shared by every run of this module."""

    base: Path
    client_port: int
    component_port: int
    rng: random.Random
    runs: int = 0
    t_listen: float = 0.0  # launch -> client port accepts, on a migrated database
    t_ready: float = 0.0  # launch -> component connected
    t_stop: float = 0.0  # signal -> exit, while serving

    @property
    def data_dir(self) -> Path:
        return self.base / "prosody"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "IMSERVER_PROSODY__DATA_DIR": str(self.data_dir),
            "IMSERVER_DATABASE__URL": f"sqlite+aiosqlite:///{self.base / 'db.sqlite3'}",
            "IMSERVER_XMPP__CLIENT_PORT": str(self.client_port),
            "IMSERVER_XMPP__COMPONENT_PORT": str(self.component_port),
            "IMSERVER_XMPP__RECONNECT_MAX_DELAY": "0.5",
        }

    def launch(self, via_make: bool = False, env: Mapping[str, str] | None = None) -> Run:
        """Start `imserver dev` (or `make run`, its set-up steps taken as done), with
        ``env`` added to the environment."""
        self.runs += 1
        out = self.base / f"run-{self.runs}.log"
        if via_make:
            # -o: the venv and Prosody are there; never reinstall in the middle of a test.
            argv = ["make", "-s", "-C", str(ROOT), "-o", ".venv/.installed-stamp"]
            argv += ["-o", "prosody", "run"]
        else:
            argv = [sys.executable, "-m", "imserver.cli", "--config", str(ROOT / "config.toml")]
            argv += ["dev"]
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Run(proc, out, self.component_port)

    def wait_connected(self, run: Run) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not run.connected():
            assert run.proc.poll() is None, f"the run exited early:\n{run.output()[-3000:]}"
            assert time.monotonic() < deadline, f"not connected in time:\n{run.output()[-3000:]}"
            time.sleep(0.02)

    def leftovers(self) -> list[str]:
        """Live processes that carry this module's data dir in their environment (the
        runs, make, Prosody: everything a run starts inherits it)."""
        marker = f"IMSERVER_PROSODY__DATA_DIR={self.data_dir}\0".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
                argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in environ and state != "Z":
                found.append(f"{entry.name}: {argv.strip()}")
        return found

    def assert_clean(self, what: str, run: Run | None = None, wait: float = 0.0) -> None:
        """Nothing of ours runs and both ports are closed (within ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while True:
            left = self.leftovers()
            ports = [p for p in (self.client_port, self.component_port) if _listening(p)]
            if (not left and not ports) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        tail = run.output()[-2000:] if run is not None else ""
        assert not left, f"seed {SEED}, {what}: processes left behind: {left}\n{tail}"
        assert not ports, f"seed {SEED}, {what}: ports still open: {ports}\n{tail}"


# The Stopper's line for the first stop signal ("stopping" alone is also in the path of
# its module, in a traceback through its SIGINT handler).
_STOPPING = re.compile(r"\bSIG(?:TERM|INT|HUP): stopping$", re.MULTILINE)


def _stopping(text: str) -> bool:
    return _STOPPING.search(text) is not None


def _check_stopped(rig: Rig, run: Run, what: str, signum: int, via_make: bool) -> str:
    """Wait for the run's end and check what it left; returns how it ended."""
    rc = run.wait()
    text = run.output()
    assert "already in use" not in text, f"seed {SEED}, {what}: did not start:\n{text}"
    rig.assert_clean(what, run)
    if not _stopping(text):
        # Before `imserver dev` blocked its stop signals (the interpreter still importing)
        # the default action ends it: acceptable only while nothing was started yet.
        assert "prosody on" not in text, f"seed {SEED}, {what}: unhandled stop:\n{text}"
        # The exception that ended it is the last one printed: an interrupt that lands
        # while importlib suppresses an error of its own (a missing python311.zip) shows
        # that error first, as the interrupt's context.
        raised = [m.group(0).split(":")[0] for m in _EXCEPTION_LINE.finditer(text)]
        errors = set(raised[-1:])
        assert errors <= {"KeyboardInterrupt"}, f"seed {SEED}, {what}: crashed:\n{text}"
        # A SIGINT while the interpreter imports its site module ends it with exit status
        # 1 ("Fatal Python error: init_import_site"), before any code of ours ran.
        in_site = rc == 1 and "Fatal Python error: init_import_site" in text
        assert via_make or rc == -signum or (signum == signal.SIGINT and in_site), (
            f"seed {SEED}, {what}: exit status {rc}:\n{text}"
        )
        return "before the handler"
    assert "Traceback" not in _known_noise_removed(text), f"seed {SEED}, {what}: crashed:\n{text}"
    if via_make:
        return "orderly, under make"
    assert rc == 0, f"seed {SEED}, {what}: exit status {rc}:\n{text}"
    return "orderly"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A migrated database with the region data, and the start-up times measured on it."""
    rig = Rig(
        tmp_path_factory.mktemp("stop-anytime"),
        client_port=free_port(),
        component_port=free_port(),
        rng=random.Random(SEED),
    )
    first = rig.launch()  # migrates and loads the regions
    rig.wait_connected(first)
    first.signal(signal.SIGTERM, group=True)
    assert _check_stopped(rig, first, "warm-up", signal.SIGTERM, False) == "orderly"
    run = rig.launch()
    while not _listening(rig.client_port):
        assert run.proc.poll() is None, run.output()
        time.sleep(0.002)
    rig.t_listen = time.monotonic() - run.began
    rig.wait_connected(run)
    rig.t_ready = time.monotonic() - run.began
    signalled = time.monotonic()
    run.signal(signal.SIGINT, group=True)
    run.wait()
    rig.t_stop = time.monotonic() - signalled
    assert _check_stopped(rig, run, "calibration", signal.SIGINT, False) == "orderly"
    try:
        yield rig
    finally:
        left = rig.leftovers()
        for line in left:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        assert not left, f"processes left at the end: {left}"


def test_stop_at_10_moments_of_startup(rig: Rig) -> None:
    stop_at_moments_of_startup(rig, 5)


@pytest.mark.soak
def test_soak_stop_at_20_moments_of_startup(rig: Rig) -> None:
    stop_at_moments_of_startup(rig, 10)


def stop_at_moments_of_startup(rig: Rig, each: int) -> None:
    """``each`` moments anywhere in start-up, ``each`` in the moment of the bug (Prosody
    listens, the component has not connected yet); SIGTERM or SIGINT, to the group or the
    main process, `imserver dev` directly or under `make run`."""
    kinds = ["anywhere"] * each + ["after prosody listens"] * each
    rig.rng.shuffle(kinds)
    phases: Counter[str] = Counter()
    endings: Counter[str] = Counter()
    for i, kind in enumerate(kinds):
        via_make = rig.rng.random() < 0.3
        signum = rig.rng.choice([signal.SIGTERM, signal.SIGINT])
        # make passes a SIGTERM on to its children but waits through a SIGINT sent to it
        # alone (a terminal sends that to the whole group): only send what is real.
        group = True if via_make and signum == signal.SIGINT else rig.rng.random() < 0.6
        run = rig.launch(via_make)
        if kind == "anywhere":
            time.sleep(rig.rng.uniform(0, rig.t_ready * 1.1))
        else:
            deadline = time.monotonic() + READY_TIMEOUT
            while not _listening(rig.client_port):
                assert time.monotonic() < deadline and run.proc.poll() is None, run.output()
                time.sleep(0.002)
            time.sleep(rig.rng.uniform(0, 0.5 * max(0.05, rig.t_ready - rig.t_listen)))
        listening, connected = _listening(rig.client_port), run.connected()
        run.signal(signum, group)
        phase = "connected" if connected else "prosody up" if listening else "before prosody"
        phases[phase] += 1
        what = (
            f"start-up moment {i} ({kind}, {phase}, {signal.Signals(signum).name} to "
            f"{'group' if group else 'process'}{', make run' if via_make else ''})"
        )
        endings[_check_stopped(rig, run, what, signum, via_make)] += 1
    print(
        f"seed {SEED}: listening after {rig.t_listen:.2f}s, connected after {rig.t_ready:.2f}s; "
        f"start-up stops by phase {dict(phases)}, endings {dict(endings)}"
    )
    # The moment the issue reproduced every time must have been hit, or this proves little.
    assert phases["prosody up"] >= (each + 1) // 2, f"seed {SEED}: phases {dict(phases)}"


def test_stop_at_5_moments_of_running_and_of_shutdown(rig: Rig) -> None:
    """Five stops while serving; three of them get a second signal during the shut-down
    that the first began (an impatient operator, a supervisor that repeats itself)."""
    twice = rig.rng.sample(range(5), 3)
    sent = seen = 0
    for i in range(5):
        via_make = i == 4
        run = rig.launch(via_make)
        rig.wait_connected(run)
        time.sleep(rig.rng.uniform(0, 1.5))
        first = rig.rng.choice([signal.SIGTERM, signal.SIGINT])
        run.signal(first, group=True)
        what = f"running moment {i} ({signal.Signals(first).name}"
        if i in twice:
            # Once the run says it is stopping, within its orderly stop (some 20 ms) or the
            # interpreter's exit after it (a tenth of a second or two).
            deadline = time.monotonic() + 10
            while not _stopping(run.output()) and run.proc.poll() is None:
                assert time.monotonic() < deadline, run.output()
                time.sleep(0.001)
            time.sleep(rig.rng.uniform(0, 0.03))
            second = rig.rng.choice([signal.SIGTERM, signal.SIGINT])
            # The run may have finished already: then there is nobody left to signal.
            if run.proc.poll() is None:
                run.signal(second, group=rig.rng.random() < 0.5)
                sent += 1
                what += f", then {signal.Signals(second).name} while stopping"
        what += ", make run)" if via_make else ")"
        ending = _check_stopped(rig, run, what, first, via_make)
        assert ending.startswith("orderly"), what
        # Logged when the second came during the orderly stop, not in the exit after it.
        seen += "already stopping" in run.output()
        if not via_make:
            assert f"stopped on {signal.Signals(first).name}" in run.output(), what
    print(
        f"seed {SEED}: a stop takes {rig.t_stop:.2f}s from signal to exit; {sent} of 3 "
        f"second signals sent before the exit, {seen} of them during the orderly stop"
    )
    assert sent >= 2, f"seed {SEED}: {sent} second signals reached a run that was stopping"


def test_sigkill_of_the_parent_takes_prosody_along(rig: Rig) -> None:
    """SIGKILL cannot be caught: Prosody must die with its parent all the same
    (PR_SET_PDEATHSIG), and the next run start."""
    run = rig.launch()
    rig.wait_connected(run)
    prosody_pid = int((rig.data_dir / "prosody.pid").read_text())
    run.proc.kill()
    assert run.proc.wait(10) == -signal.SIGKILL
    rig.assert_clean("SIGKILL of imserver dev", run, wait=10.0)
    # In its last moments a process has no memory left: reading its environment fails
    # (ESRCH), so the check above no longer sees it, while its stat still says running.
    # Its end is a matter of a moment then (seen once: 'exists and not a zombie').
    assert _ends(prosody_pid, within=10.0), f"seed {SEED}: prosody {prosody_pid} still runs"
    again = rig.launch()
    rig.wait_connected(again)
    again.signal(signal.SIGTERM, group=False)
    assert _check_stopped(rig, again, "after a SIGKILL", signal.SIGTERM, False) == "orderly"


# Loaded by `imserver dev` as its sitecustomize (from PYTHONPATH): sends the process a
# SIGINT, as a Ctrl-C would, the moment the import system is asked for STOP_AT_IMPORT;
# with SWALLOW set, catches the KeyboardInterrupt and goes on, as some code does.
_STOP_AT_IMPORT = """
import os, signal, sys

class StopHere:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["STOP_AT_IMPORT"]:
            sys.meta_path.remove(self)
            print(f"SIGINT at the import of {name}", file=sys.stderr, flush=True)
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                if not os.environ.get("SWALLOW"):
                    raise
        return None

sys.meta_path.insert(0, StopHere())
"""


@pytest.mark.parametrize(
    ("module", "swallow", "prosody"),
    [
        # slixmpp's import tries gnupg inside a bare `except:`: the Ctrl-C was lost without
        # a word, and `imserver dev` served on (seen once under `make run`: no end within
        # 45 s). slixmpp is now imported once the stop signals are blocked.
        ("gnupg", False, True),
        # Before the block, wherever a KeyboardInterrupt is swallowed (CPython's module
        # locks print "Exception ignored" and go on, 1 in 100 SIGINTs during imports), the
        # SIGINT is noted all the same, and the block takes it as the first stop.
        ("pydantic", True, False),
    ],
)
def test_a_ctrl_c_that_some_code_swallows(
    rig: Rig, tmp_path: Path, module: str, swallow: bool, prosody: bool
) -> None:
    (tmp_path / "sitecustomize.py").write_text(_STOP_AT_IMPORT)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, "STOP_AT_IMPORT": module, "SWALLOW": "1" if swallow else ""}
    run = rig.launch(env=env)
    deadline = time.monotonic() + READY_TIMEOUT
    while f"SIGINT at the import of {module}" not in run.output():
        assert not run.connected() and run.proc.poll() is None, (
            f"{module} is not imported: choose another point\n{run.output()}"
        )
        assert time.monotonic() < deadline, run.output()
        time.sleep(0.02)
    what = f"SIGINT while {module} is imported"
    assert _check_stopped(rig, run, what, signal.SIGINT, False) == "orderly"
    assert "SIGINT: stopping" in run.output()
    # Before the block nothing is started yet: the stop comes before Prosody.
    assert ("prosody on" in run.output()) == prosody, run.output()


# What runs in `imserver dev` before it blocks its stop signals: the CLI module, the
# parser, the config and the logging.
_BEFORE_THE_BLOCK = """
import sys
started = set(sys.modules)
from imserver import cli
args = cli.build_parser().parse_args(["--config", sys.argv[1], "dev"])
cli.configure_logging(cli.load_config(args.config))
new = {name: sys.modules[name] for name in set(sys.modules) - started}
origins = {name: str(getattr(module, "__spec__", None)) for name, module in new.items()}
print(*sorted({name.partition(".")[0] for name, o in origins.items() if "-packages" in o}))
"""


def test_only_the_config_is_imported_before_the_stop_signals_are_blocked() -> None:
    """Until `imserver dev` blocks its stop signals a SIGINT raises KeyboardInterrupt
    wherever it lands, and any library that catches everything (slixmpp, see above) may
    swallow it: nothing but the standard library, our config and logging code and
    pydantic (which reads the config) may run before."""
    out = subprocess.run(
        [sys.executable, "-c", _BEFORE_THE_BLOCK, str(ROOT / "config.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pydantic = {"pydantic", "pydantic_core", "typing_extensions", "annotated_types"}
    assert set(out) <= {"typing_inspection", *pydantic}, out


# A parent that blocks its stop signals (the Stopper) starts a child; before the child's
# setsid a Ctrl-C to the process group reaches it too, and waits there, blocked.
_PENDING_IN_THE_CHILD = """
import os, signal, subprocess
from imserver.devserver.server import child_setup
from imserver.devserver.stopping import STOP_SIGNALS
signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
setup = child_setup(die_with_parent=True)
assert setup is not None

def ctrl_c_before_setsid_then_setup():
    os.kill(os.getpid(), signal.SIGINT)
    setup()

print(subprocess.Popen(["sleep", "30"], preexec_fn=ctrl_c_before_setsid_then_setup).wait())
"""


def test_a_ctrl_c_that_reaches_the_server_before_its_exec_ends_it() -> None:
    """The forked child is still a copy of our interpreter: its SIGINT handler raised
    KeyboardInterrupt in the set-up before exec, and Popen a SubprocessError (a crash of
    the start). Now the signal ends the child, as it ends the server after exec."""
    done = subprocess.run(
        [sys.executable, "-c", _PENDING_IN_THE_CHILD], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == str(-signal.SIGINT), done


# A SIGINT that Python took just before the Stopper's block is raised by the call that
# blocks (it runs the pending handlers): simulated by a pthread_sigmask that raises after
# blocking.
_INTERRUPTED_WHILE_BLOCKING = """
import logging, signal, sys
from imserver.devserver.stopping import STOP_SIGNALS, Stopper
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
real = signal.pthread_sigmask

def blocks_then_raises(how, mask):
    real(how, mask)
    raise KeyboardInterrupt

signal.pthread_sigmask = blocks_then_raises
stopper = Stopper()
stopper.install()
signal.pthread_sigmask = real
blocked = set(STOP_SIGNALS) <= real(signal.SIG_BLOCK, ())
print(stopper.describe(), stopper.requested.is_set(), blocked)
"""


def test_a_sigint_raised_by_the_block_itself_is_the_first_stop() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_WHILE_BLOCKING],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == ["SIGINT: stopping", "SIGINT True True"], out


# An imserver that takes no claim on the data dir and does not tie Prosody's life to its
# own: what versions before issue 11 did.
_OLD_IMSERVER = """
import subprocess, sys, time
subprocess.Popen(["prosody", "-F", "--config", sys.argv[1]], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(600)
"""


def test_prosody_of_a_live_imserver_is_kept_and_of_a_dead_one_stopped(rig: Rig) -> None:
    """A Prosody on our data dir whose parent is a running imserver that holds no claim
    (an older version) is left alone and the new run refused; once that imserver is
    killed, its Prosody is stale, and the next run stops it and starts on the same ports."""
    config = rig.data_dir / "prosody.cfg.lua"
    assert config.exists()
    script = rig.base / "old" / "imserver"
    script.parent.mkdir(exist_ok=True)
    script.write_text(_OLD_IMSERVER)
    old = subprocess.Popen(
        [sys.executable, str(script), str(config)], env=rig.env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 15
        pid_file = rig.data_dir / "prosody.pid"
        # Prosody may open its ports a moment before it writes its pid file.
        while not (
            _listening(rig.client_port) and _listening(rig.component_port) and pid_file.exists()
        ):
            assert old.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        stale = int(pid_file.read_text())
        refused = rig.launch()
        assert refused.wait(30) == 3, refused.output()
        assert f"belongs to a running imserver (pid {old.pid})" in refused.output()
        assert not _zombie(stale) and _listening(rig.client_port), "the live one was touched"
        old.kill()  # SIGKILL: its Prosody lives on, orphaned
        old.wait()
        assert not _zombie(stale)
        run = rig.launch()
        rig.wait_connected(run)
        assert _zombie(stale), "the stale Prosody still runs"
        assert f"stopping prosody pid {stale} that an earlier run left behind" in run.output()
        run.signal(signal.SIGTERM, group=True)
        assert _check_stopped(rig, run, "after a stale Prosody", signal.SIGTERM, False) == (
            "orderly"
        )
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()


def test_second_dev_is_refused_and_leaves_the_first_alone(rig: Rig) -> None:
    """A second `imserver dev` on the same data dir says so and exits; the first serves on."""
    first = rig.launch()
    rig.wait_connected(first)
    prosody_pid = int((rig.data_dir / "prosody.pid").read_text())
    second = rig.launch()
    rc = second.wait(30)
    text = second.output()
    assert rc == 3, f"exit status {rc}:\n{text}"
    assert f"another imserver (pid {first.proc.pid}) already runs the Prosody" in text, text
    assert "regions loaded" not in text and not _stopping(text), text
    # The first run, its Prosody and its link are untouched.
    assert first.proc.poll() is None
    assert _listening(rig.client_port) and _listening(rig.component_port)
    assert Path(f"/proc/{prosody_pid}").exists() and not _zombie(prosody_pid)
    assert "link to the XMPP server dropped" not in first.output()
    assert int((rig.data_dir / "prosody.pid").read_text()) == prosody_pid
    first.signal(signal.SIGINT, group=True)
    assert _check_stopped(rig, first, "the first of two", signal.SIGINT, False) == "orderly"


# A stop that lands while the settlement job runs: the scheduler cancels the job
# (imserver/jobs.py shuts it down without waiting) and APScheduler logs the cancellation
# as the job's error, with a traceback. Nothing is lost (the job is one transaction and
# runs again at the next start), and it is not a crash of the stop: such a log record is
# set aside, as long as every exception in it is a CancelledError.
_RECORD = re.compile(r"^(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} )", re.MULTILINE)
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*$", re.MULTILINE)


# A SIGINT that lands in the weakref callback of an import's module lock: CPython prints
# it and goes on; imserver takes it as its stop once it blocks the stop signals.
_SWALLOWED_BY_IMPORT = re.compile(
    r"^Exception ignored in: <function _get_module_lock\.<locals>\.cb at 0x[0-9a-f]+>\n"
    r"Traceback \(most recent call last\):\n(?:  .*\n)+KeyboardInterrupt.*\n",
    re.MULTILINE,
)


def _known_noise_removed(text: str) -> str:
    text = _SWALLOWED_BY_IMPORT.sub("", text)
    kept = []
    for record in _RECORD.split(text):
        settle_cut = 'ERROR apscheduler.executors.default: Job "Jobs.settle' in record
        errors = {m.group(0).strip() for m in _EXCEPTION_LINE.finditer(record)}
        if settle_cut and errors == {"asyncio.exceptions.CancelledError"}:
            continue
        kept.append(record)
    return "".join(kept)


def _ends(pid: int, within: float) -> bool:
    """Whether ``pid`` is gone or a zombie within ``within`` seconds."""
    deadline = time.monotonic() + within
    while not _zombie(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


_HANGING_STOP = """
import logging, sys, time
from pathlib import Path
from imserver.devserver.stopping import Stopper
logging.basicConfig(level=logging.INFO)
stopper = Stopper(grace=float(sys.argv[1]))
stopper.install()
stopper.on_emergency(lambda: Path(sys.argv[2]).write_text("killed what was left"))
stopper.on_stop(lambda: print("stop asked", flush=True))
print("ready", flush=True)
time.sleep(60)  # an orderly stop that never ends
"""


def test_a_stop_that_hangs_is_ended_after_the_grace_period(tmp_path: Path) -> None:
    """The last resort: the emergency steps run (in `imserver dev`: SIGKILL Prosody) and
    the process exits 1 once the grace period is over; a second signal changes nothing."""
    marker = tmp_path / "emergency"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HANGING_STOP, "1.0", str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    seen: list[str] = []
    while "stop asked" not in seen:
        line = proc.stdout.readline()
        assert line, seen
        seen.append(line.strip())
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(30)
    took = time.monotonic() - began
    out = "\n".join(seen) + "\n" + proc.stdout.read()
    assert rc == 1, out
    assert 1.0 <= took < 10, took
    assert marker.read_text() == "killed what was left"
    assert "SIGINT: already stopping" in out and "did not finish within 1s" in out, out
