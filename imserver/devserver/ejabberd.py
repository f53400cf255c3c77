"""Create, start and stop a private ejabberd (Debian's 23.01) on loopback.

The scale-out rig: ejabberd accepts several connections under one component name and
spreads the component's stanzas among them, which Prosody does not. Used by the tests
(free ports, throw-away data dir) and by operators who try a scaled-out set-up on one
machine. Never the system service: ``erl`` is run directly with ejabberd's code path, a
private config, Mnesia spool and logs in the data dir, its own node name and cookie.

Why not ``ejabberdctl foreground``: run as root, Debian's ejabberdctl always switches to
the ``ejabberd`` user (``su``), who can neither read a root-owned temporary data dir nor
be the child that dies with its parent. Running ``erl`` ourselves keeps the process ours.

No epmd: Erlang's distribution listens on a fixed loopback port (``-erl_epmd_port`` with
``-start_epmd false``), so no global epmd daemon is started or left behind, and nothing
collides with another Erlang on the machine (RabbitMQ's epmd, the system ejabberd).
``ejabberdctl`` still works against this node through the ``ejabberdctl.cfg`` written in
the data dir (it sets ``ERL_DIST_PORT`` and the cookie); see ``ctl_command``.

Accounts are created through ejabberd's HTTP API (``register``), on a listener bound to
127.0.0.1 whose ``api_permissions`` admit loopback callers only: about 1 ms per account,
against about a second for each ``ejabberdctl register`` (it boots an Erlang VM).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, ClassVar

from imserver.devserver.server import (
    PrivateServer,
    ServerBusy,
    ServerError,
    cmdline,
    free_port,
    listening,
)

ERL = "erl"
EJABBERDCTL = "ejabberdctl"
# Where Debian installs ejabberd's and its dependencies' code (ERL_LIBS of ejabberdctl).
ERL_LIBS_GLOB = "/usr/lib/*/ejabberd-*/ebin/ejabberd.app"
# ejabberd's levels; Prosody's names are accepted too, so one config key serves both.
_LEVELS = {
    "warn": "warning",
    "warning": "warning",
    "debug": "debug",
    "info": "info",
    "error": "error",
    "critical": "critical",
    "notice": "notice",
}


class EjabberdError(ServerError):
    """ejabberd is missing, would not start, or refused a command."""


class EjabberdBusy(EjabberdError, ServerBusy):
    """Another live process owns the ejabberd of this data dir; it is left alone."""


def erl_libs() -> str:
    """The directory that holds ejabberd's code and its dependencies (for ERL_LIBS)."""
    found = sorted(Path("/").glob(ERL_LIBS_GLOB.lstrip("/")))
    if not found or shutil.which(ERL) is None:
        raise EjabberdError("ejabberd is not installed (run make ejabberd)")
    return str(found[-1].parents[2])


@dataclass
class EjabberdInstance(PrivateServer):
    """One private ejabberd: config, data dir, ports, hosts, components, node and cookie.

    ``components`` maps a component name to its secret; ejabberd accepts any number of
    connections for each. ``http_port`` serves the account API (loopback only);
    ``dist_port`` is the Erlang distribution port (0: a free one is chosen).
    """

    http_port: int = 5280
    dist_port: int = 0
    node: str = ""  # Erlang node name; default from the client port
    cookie: str = field(default_factory=lambda: secrets.token_hex(16))

    name: ClassVar[str] = "ejabberd"
    label: ClassVar[str] = "ejabberd"
    error: ClassVar[type[ServerError]] = EjabberdError
    busy: ClassVar[type[ServerBusy]] = EjabberdBusy

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.dist_port:
            self.dist_port = free_port()
        if not self.node:
            self.node = f"imserver_ejabberd_{self.client_port}@localhost"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "ejabberd.pid"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "ejabberd.yml"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "ejabberd.log"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def ctl_config_path(self) -> Path:
        return self.data_dir / "ejabberdctl.cfg"

    def ports(self) -> tuple[int, ...]:
        return (self.client_port, self.component_port, self.http_port)

    def ready(self) -> bool:
        """All three ports listen and the node says it has started."""
        if not all(listening(p) for p in self.ports()):
            return False
        try:
            status, _ = self.api("status", {}, timeout=2.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def write_config(self) -> Path:
        """Render ejabberd.yml from the project's template, and ejabberdctl.cfg."""
        erl_libs()  # fail early and clearly when ejabberd is missing
        for d in (self.spool_dir, self.log_path.parent, self.data_dir / "modules"):
            d.mkdir(parents=True, exist_ok=True)
        template = Template(
            resources.files("imserver.devserver").joinpath("ejabberd.yml.tmpl").read_text()
        )
        components = "\n".join(
            f"      {json.dumps(jid)}:\n        password: {json.dumps(secret)}"
            for jid, secret in self.components.items()
        )
        text = template.substitute(
            data_dir=str(self.data_dir),
            hosts="\n".join(f"  - {json.dumps(h)}" for h in (self.domain, *self.extra_hosts)),
            log_level=_LEVELS.get(self.log_level, "info"),
            client_port=self.client_port,
            component_port=self.component_port,
            http_port=self.http_port,
            # An empty map is not a valid `hosts` option: no component, no name at all.
            components=components or "      {}",
            extra=self.extra,
        )
        self.config_path.write_text(text)
        # For operators: `ejabberdctl --ctl-config <this file> status` reaches this node.
        fd = os.open(self.ctl_config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                "# Generated by imserver: ejabberdctl settings for the private node.\n"
                f'ERLANG_NODE="{self.node}"\n'
                f"ERL_DIST_PORT={self.dist_port}\n"
                f'ERL_OPTIONS="-setcookie {self.cookie}"\n'
                f'EJABBERD_CONFIG_PATH="{self.config_path}"\n'
                f'SPOOL_DIR="{self.spool_dir}"\n'
                f'LOGS_DIR="{self.log_path.parent}"\n'
            )
        return self.config_path

    def command(self) -> tuple[list[str], Mapping[str, str] | None]:
        """``erl`` running ejabberd in the foreground, as ejabberdctl would, minus su."""
        env = {
            **os.environ,
            "ERL_LIBS": erl_libs(),
            "HOME": str(self.data_dir),  # nothing of ours lands in root's home
            "ERL_CRASH_DUMP": str(self.data_dir / "erl_crash.dump"),
            "ERL_CRASH_DUMP_BYTES": "0",
            "CONTRIB_MODULES_PATH": str(self.data_dir / "modules"),
        }
        argv = [
            ERL,
            "-sname",
            self.node,
            "-setcookie",
            self.cookie,
            # Distribution on a fixed loopback port instead of through epmd: no daemon
            # to start, to share or to leave behind.
            "-erl_epmd_port",
            str(self.dist_port),
            "-start_epmd",
            "false",
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
            "-noinput",
            "-mnesia",
            "dir",
            _erl_string(self.spool_dir),
            # Config and log given as application env (not only the environment) so that
            # /proc/PID/cmdline names them: that is how a stale instance is recognised.
            "-ejabberd",
            "config",
            _erl_string(self.config_path),
            "log_path",
            _erl_string(self.log_path),
            "-s",
            "ejabberd",
        ]
        return argv, env

    def spawned(self, pid: int) -> None:
        # erl execs into beam.smp, so the child's pid is the node's.
        self.pid_path.write_text(f"{pid}\n")

    def runs_config(self, pid: int) -> bool:
        """Whether ``pid`` is an Erlang node started with our config file."""
        args = cmdline(pid)
        return bool(args) and "beam" in Path(args[0]).name and _erl_string(self.config_path) in args

    def api(self, command: str, args: Mapping[str, Any], timeout: float = 30.0) -> tuple[int, Any]:
        """Call an ejabberd API command over the loopback HTTP listener: (status, JSON)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            conn.request(
                "POST",
                f"/api/{command}",
                json.dumps(args),
                {"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, body.decode(errors="replace")

    def add_account(self, jid: str, password: str) -> None:
        """Create or reset an account (ejabberd must be running)."""
        user, _, host = jid.partition("@")
        status, body = self.api("register", {"user": user, "host": host, "password": password})
        if status == 409:  # already registered: reset the password, as prosodyctl does
            status, body = self.api(
                "change_password", {"user": user, "host": host, "newpass": password}
            )
        if status != 200:
            raise EjabberdError(f"ejabberd register {jid} failed ({status}): {body}")

    def ctl_command(self, *args: str) -> list[str]:
        """The ejabberdctl command line an operator runs against this node."""
        return [EJABBERDCTL, "--ctl-config", str(self.ctl_config_path), *args]


def _erl_string(path: Path) -> str:
    """An Erlang string literal for a command-line application parameter."""
    return json.dumps(str(path))
