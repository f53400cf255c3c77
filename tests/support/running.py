"""``imserver run`` as an operator runs it: its own process on a private Prosody and a fresh
SQLite database, configured through ``IMSERVER_*`` environment variables, with its log in a
file. For the tests of what an operator sees (logs, metrics, status) and of programs that
talk to it from outside (the merchant bot example)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from imserver.devserver.prosody import ProsodyInstance, free_port
from imserver.store.migrate import upgrade
from tests.conftest import DOMAIN
from tests.support.clients import PASSWORD, Client
from tests.support.faults import ComponentProcess, component_env, load_shipped_regions, run_cli
from tests.support.network import add_merchant
from tests.support.private import SECRET, private_prosody

COMPONENT = "dist.localhost"
ADMIN = f"admin@{DOMAIN}"
SHOP, PAYER = f"shop@{DOMAIN}", f"alice@{DOMAIN}"


@dataclass
class Running:
    """A component process, its Prosody and database, and clients logged in to it."""

    prosody: ProsodyInstance
    env: dict[str, str]
    component: ComponentProcess
    jid: str
    clients: dict[str, Client] = field(default_factory=dict)

    async def client(self, jid: str) -> Client:
        """A logged-in client for ``jid`` (account created on first use)."""
        if jid not in self.clients:
            await asyncio.to_thread(self.prosody.add_account, jid, PASSWORD)
            self.clients[jid] = await Client(jid).open(self.prosody.client_port, 60)
        return self.clients[jid]

    async def shop_and_payer(self) -> tuple[Client, Client]:
        """Through the protocol: the admin makes SHOP a merchant (district 440305, no
        agents) and PAYER joins at it. Returns their clients."""
        admin = await self.client(ADMIN)
        shop = await self.client(SHOP)
        await add_merchant(admin, self.jid, SHOP)
        payer = await self.client(PAYER)
        await payer.dist.register(self.jid, SHOP, timeout=10)
        return shop, payer

    async def cli(self, *args: str, env: Mapping[str, str] = {}) -> tuple[int, str]:
        """``imserver ARGS`` with this component's config (plus ``env``)."""
        return await asyncio.to_thread(run_cli, {**self.env, **env}, *args)

    async def start(self, timeout: float = 60.0) -> None:
        """Start the component (again) and wait for its handshake with Prosody."""
        before = self.component.connections() if self.component.log_path.exists() else 0
        self.component.start()
        await self.component.wait_connection(before, timeout)

    async def stop(self) -> None:
        """SIGTERM, as a supervisor stops it."""
        await asyncio.to_thread(self.component.stop)

    def log(self) -> str:
        """Everything the component wrote so far."""
        return self.component.log_path.read_text(errors="replace")


@asynccontextmanager
async def running_component(tmp: Path, extra_env: Mapping[str, str] = {}) -> AsyncIterator[Running]:
    """A migrated database with the region data and ``imserver run`` connected to a
    Prosody of its own; ``extra_env`` adds settings (``IMSERVER_LOG__FORMAT`` …)."""
    async with private_prosody(tmp / "prosody", COMPONENT) as prosody:
        url = f"sqlite+aiosqlite:///{tmp / 'imserver.sqlite3'}"
        env = {**component_env(prosody, COMPONENT, SECRET, url, ADMIN), **extra_env}
        await asyncio.to_thread(upgrade, url)
        await load_shipped_regions(env, url)
        running = Running(prosody, env, ComponentProcess(env, tmp / "imserver.log"), COMPONENT)
        try:
            await running.start()
            yield running
        finally:
            await asyncio.gather(*(c.close() for c in running.clients.values()))
            await running.stop()


def http_get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    """(status, content type, body) of one HTTP request (an error status included)."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def http_on(**settings: str) -> tuple[dict[str, str], str]:
    """Settings that turn the component's HTTP server on at a free loopback port (plus
    ``settings``, ``IMSERVER_*`` names), and the server's base URL."""
    port = free_port()
    return {"IMSERVER_METRICS__LISTEN": f"127.0.0.1:{port}", **settings}, f"http://127.0.0.1:{port}"
