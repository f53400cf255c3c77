"""Find the Prosody and the component of ``make run``, or start them for the demo.

The demo uses what runs: the private Prosody that config.toml describes (its data dir
and ports) and the component connected to it. When no Prosody runs it starts
``imserver dev`` (what ``make run`` runs: Prosody, migrations, region data, component);
when Prosody runs without the component it starts ``imserver run``. Whatever it started
it stops at the end; the accounts and the database stay for the next ``make run``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout

from imserver.config import Config
from imserver.demo.client import LoginFailed, MemberClient
from imserver.devserver.accounts import account_exists, write_accounts
from imserver.devserver.prosody import ProsodyInstance, for_config, terminate

# A first `imserver dev` migrates a new database and loads the region data.
START_SECONDS = 120.0


class DemoError(RuntimeError):
    """The demo cannot go on; the text says what to do."""


@dataclass
class Servers:
    """The Prosody and component the demo talks to, and the processes it started."""

    config: Config
    prosody: ProsodyInstance
    log_path: Path
    started: list[str] = field(default_factory=list)  # "prosody", "component"
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _log: IO[bytes] | None = None

    @property
    def data_path(self) -> Path:
        """Prosody's data_path, where its accounts are files."""
        return self.prosody.data_dir / "data"

    def spawn(self, command: str, config_file: str) -> None:
        """Start ``imserver <command>`` with the demo's config file; its output to the log."""
        if self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self._procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "imserver.cli", "--config", config_file, command],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        )

    def check_alive(self) -> None:
        """Raise DemoError when a process the demo started has ended."""
        for proc in self._procs:
            if proc.poll() is not None:
                raise DemoError(
                    f"the server the demo started exited with {proc.returncode}; "
                    f"see {self.log_path}"
                )

    def stop(self) -> None:
        """Stop what the demo started (``imserver dev`` stops its Prosody on SIGTERM)."""
        for proc in reversed(self._procs):
            terminate(proc, timeout=30.0)
        self._procs.clear()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def wait_for_prosody(self) -> None:
        """Wait until Prosody listens (a started ``imserver dev`` may take a while)."""
        deadline = time.monotonic() + START_SECONDS
        while not self.prosody.running():
            self.check_alive()
            if time.monotonic() > deadline:
                raise DemoError(f"prosody did not start within {START_SECONDS:g} s")
            await asyncio.sleep(0.2)

    async def login(self, jid: str, password: str) -> MemberClient:
        """Log ``jid`` in on the private Prosody."""
        return await MemberClient(jid, password).open(self.config.xmpp.client_port, 30.0)

    async def admin(self, password: str) -> MemberClient:
        """Log the first admin of the config in, creating its account if it has none."""
        jid = self.config.admins[0]
        if not account_exists(self.data_path, jid):
            user, _, host = jid.partition("@")
            write_accounts(self.data_path, host, [user], password)
        try:
            return await self.login(jid, password)
        except LoginFailed:
            raise DemoError(
                f"{jid} already has an account with another password: give it with "
                "--admin-password, or reset it with `imserver accounts add "
                f"{jid} PASSWORD`"
            ) from None

    async def component_answers(self, client: MemberClient, timeout: float = 5.0) -> bool:
        """Whether the component is connected: it answers a disco#info."""
        try:
            await client.plugin["xep_0030"].get_info(
                jid=JID(self.config.xmpp.component), timeout=timeout
            )
        except (IqError, IqTimeout):
            return False
        return True

    async def wait_for_component(self, client: MemberClient) -> None:
        """Wait until the component answers (a started one migrates and connects first)."""
        deadline = time.monotonic() + START_SECONDS
        while not await self.component_answers(client, timeout=2.0):
            self.check_alive()
            if time.monotonic() > deadline:
                raise DemoError(f"the component did not answer within {START_SECONDS:g} s")
            await asyncio.sleep(0.5)


@asynccontextmanager
async def servers(
    config: Config, config_file: str, admin_password: str, log_path: Path
) -> AsyncIterator[tuple[Servers, MemberClient]]:
    """The servers the demo uses, started if need be, with the admin logged in."""
    found = Servers(config, for_config(config), log_path)
    admin: MemberClient | None = None
    try:
        if not found.prosody.running():
            found.spawn("dev", config_file)
            found.started += ["prosody", "component"]
            await found.wait_for_prosody()
        admin = await found.admin(admin_password)
        if not found.started and not await found.component_answers(admin):
            found.spawn("run", config_file)
            found.started.append("component")
        await found.wait_for_component(admin)
        yield found, admin
    finally:
        if admin is not None:
            with suppress(Exception):
                await admin.close()
        found.stop()
