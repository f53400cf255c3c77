"""Create, start and stop a private Prosody with its own config file and data dir.

Never touches the system service. Used by ``imserver dev`` (``make run``) and by the
test fixtures (free ports, throw-away data dir).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

PROSODY = "prosody"
PROSODYCTL = "prosodyctl"


class ProsodyError(RuntimeError):
    """Prosody is missing, would not start, or refused a command."""


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
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()

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

    def start(self, timeout: float = 15.0) -> None:
        """Start Prosody in the foreground (as a child) and wait for both ports."""
        self.write_config()
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
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ProsodyError(
                    f"prosody exited with {self.process.returncode}: {self.tail_log()}"
                )
            if _listening(self.client_port) and _listening(self.component_port):
                return
            time.sleep(0.05)
        self.stop()
        raise ProsodyError(f"prosody did not listen within {timeout}s: {self.tail_log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Prosody (SIGTERM, then SIGKILL) and wait for it."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

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


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
