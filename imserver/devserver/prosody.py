"""Create, start and stop a private Prosody with its own config file and data dir.

Never touches the system service. Used by ``imserver dev`` (``make run``) and by the
test fixtures (free ports, throw-away data dir). The life cycle (one owner per data dir,
death with the parent, stale clean-up) is ``PrivateServer``'s, in ``server.py``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, ClassVar

from imserver.devserver.server import (
    PrivateServer,
    ServerBusy,
    ServerError,
    StartInterrupted,
    cmdline,
    free_port,
    terminate,
)

if TYPE_CHECKING:
    from imserver.config import Config

PROSODY = "prosody"
PROSODYCTL = "prosodyctl"
# Prosody 0.12 reaches a peer without DNS SRV records at the domain's address (an IP
# literal is used as it is) on this port; there is no per-peer port setting, so each
# server of the federation rig listens on its own loopback address.
S2S_PORT = 5269

__all__ = [
    "PROSODY",
    "PROSODYCTL",
    "S2S_PORT",
    "ProsodyBusy",
    "ProsodyError",
    "ProsodyInstance",
    "StartInterrupted",
    "free_port",
    "terminate",
]


class ProsodyError(ServerError):
    """Prosody is missing, would not start, or refused a command."""


class ProsodyBusy(ProsodyError, ServerBusy):
    """Another live process owns the Prosody of this data dir; it is left alone."""


@dataclass
class ProsodyInstance(PrivateServer):
    """One private Prosody: its config, data dir, ports, hosts and components."""

    name: ClassVar[str] = "prosody"
    label: ClassVar[str] = "Prosody"
    error: ClassVar[type[ServerError]] = ProsodyError
    busy: ClassVar[type[ServerBusy]] = ProsodyBusy
    own_dir_hint: ClassVar[str] = "its own prosody.data_dir and ports"
    port_hint: ClassVar[str] = "stop it or set xmpp.client_port / xmpp.component_port"
    # The addresses it takes server-to-server links on (port 5269); none: no s2s at all,
    # as for ``make run`` and the single-server tests.
    s2s_interfaces: tuple[str, ...] = ()

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "prosody.pid"

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
        s2s = bool(self.s2s_interfaces)
        text = template.substitute(
            data_dir=str(self.data_dir),
            client_port=self.client_port,
            component_port=self.component_port,
            s2s_ports=S2S_PORT if s2s else "",
            s2s_interfaces="; ".join(f'"{a}"' for a in self.s2s_interfaces),
            s2s_modules='; "dialback"' if s2s else "",
            modules_disabled='"tls"; "limits"' if s2s else '"s2s"; "tls"; "limits"',
            log_level=self.log_level,
            extra=self.extra,
            virtual_hosts="\n\n".join(hosts),
        )
        self.config_path.write_text(text)
        return self.config_path

    def ports(self) -> tuple[int, ...]:
        """Its client port, and its component port when it has components (Prosody
        opens none without one: a rig's second server has none)."""
        return (self.client_port, self.component_port) if self.components else (self.client_port,)

    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Its ports on 127.0.0.1, and port 5269 on each of its s2s addresses."""
        return super().addresses() + tuple((a, S2S_PORT) for a in self.s2s_interfaces)

    def command(self) -> tuple[list[str], Mapping[str, str] | None]:
        """``prosody -F`` (foreground) with our config; this process's environment."""
        return [PROSODY, "-F", "--config", str(self.config_path)], None

    def runs_config(self, pid: int) -> bool:
        """Whether process ``pid`` is a Prosody started with our config file."""
        args = cmdline(pid)
        return any("prosody" in Path(a).name for a in args[:2]) and str(self.config_path) in args

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
