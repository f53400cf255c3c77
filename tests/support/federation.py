"""Two private Prosody servers with a server-to-server link between them, on loopback.

Their domains are IP literals, so no DNS and no /etc/hosts entry is involved: Prosody
0.12 connects to a peer whose domain is an IP address at that address, port 5269 (with
no SRV lookup), so each server listens for s2s on its own loopback address. Server A
also serves the component, whose name is an IP literal too (a remote server must reach
it: it is a host of A, on another address of A; one name per database backend, and one
for a component of its own config that runs beside them). Dialback without TLS,
loopback only. The addresses are 127.X.Y.2 to .6 with X.Y drawn
per run among those where nobody listens on 5269: runs in parallel worktrees do not
collide.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imserver.app import App
from imserver.config import Config, load_config
from imserver.devserver.prosody import S2S_PORT, ProsodyInstance, free_port
from imserver.devserver.server import listening
from imserver.geo.regions import load_regions_csv
from imserver.service.regions import load_regions
from imserver.store.migrate import upgrade
from tests.conftest import _drop_pg_database, _fresh_pg_database
from tests.support.clients import PASSWORD, Client

SECRET = "federation-secret"


@dataclass
class Federation:
    """Server A (with the components) and server B, linked by s2s."""

    a: ProsodyInstance  # the home server: its domain is ``a.domain``
    b: ProsodyInstance  # the remote server: its users are remote members
    # backend (or "own": a component with a config of its own) -> its name (a host of A)
    components: dict[str, str]

    def server_of(self, jid: str) -> ProsodyInstance:
        """The server that holds the account ``jid``."""
        domain = jid.partition("@")[2]
        return {self.a.domain: self.a, self.b.domain: self.b}[domain]

    async def client(self, jid: str) -> Client:
        """A logged-in client of ``jid`` on its own server (account created if new)."""
        server = self.server_of(jid)
        server.add_account(jid, PASSWORD)
        return await Client(jid).open(server.client_port, 30)


def free_loopback_block() -> str:
    """A prefix ``127.X.Y.`` whose addresses .2 to .6 nobody takes s2s links on."""
    for _ in range(50):
        prefix = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}."
        if not any(listening(S2S_PORT, f"{prefix}{n}") for n in range(2, 7)):
            return prefix
    raise RuntimeError(f"no free block of loopback addresses with port {S2S_PORT}")


def federation_servers(root: pytest.TempPathFactory) -> Federation:
    """The two servers, configured and not started."""
    prefix = free_loopback_block()
    # One component name per backend: Prosody takes one connection per name.
    components = {"sqlite": f"{prefix}4", "postgresql": f"{prefix}5", "own": f"{prefix}6"}
    a = ProsodyInstance(
        root.mktemp("prosody-a"),
        domain=f"{prefix}2",
        client_port=free_port(),
        component_port=free_port(),
        components={jid: SECRET for jid in components.values()},
        s2s_interfaces=(f"{prefix}2", *components.values()),
        log_level="debug",
    )
    b = ProsodyInstance(
        root.mktemp("prosody-b"),
        domain=f"{prefix}3",
        client_port=free_port(),
        component_port=free_port(),
        s2s_interfaces=(f"{prefix}3",),
        log_level="debug",
    )
    return Federation(a, b, components)


@pytest.fixture(scope="module", name="federation")
def federation_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """Servers A and B running, for one test module."""
    fed = federation_servers(tmp_path_factory)
    fed.a.start()
    try:
        fed.b.start()
        yield fed
    finally:
        fed.b.stop()
        fed.a.stop()


@dataclass
class Home:
    """The component on server A, and clients of either server (what
    ``tests.support.network.build_network`` needs of a service)."""

    app: App
    federation: Federation
    clients: dict[str, Client] = field(default_factory=dict)
    _seq: Iterator[int] = field(default_factory=itertools.count)

    @property
    def jid(self) -> str:
        return self.app.config.xmpp.component

    def new_jid(self, prefix: str = "u", domain: str | None = None) -> str:
        """A JID nobody used yet in this module (on server A unless ``domain`` says)."""
        domain = domain or self.federation.a.domain
        return f"{prefix}{next(self._seq)}-{uuid.uuid4().hex[:6]}@{domain}"

    async def client(self, jid: str | None = None) -> Client:
        """A logged-in client of ``jid`` on its own server (reused after the first call)."""
        jid = jid or self.new_jid()
        if jid not in self.clients:
            self.clients[jid] = await self.federation.client(jid)
        return self.clients[jid]

    async def admin(self) -> Client:
        return await self.client(self.app.config.admins[0])

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients.values()))


def home_config(
    name: str, url: str, federation: Federation, env: Mapping[str, str]
) -> Config:
    """The config of the component ``name`` (a key of ``federation.components``): server
    A, the database ``url``; ``env`` adds to it (the policy that lets server B's users in)."""
    home = federation.a.domain
    return load_config(
        Path(__file__).parents[2] / "config.toml",
        env={
            "IMSERVER_ADMINS": f'["admin@{home}"]',
            "IMSERVER_XMPP__DOMAIN": home,
            "IMSERVER_XMPP__COMPONENT": federation.components[name],
            "IMSERVER_XMPP__SECRET": SECRET,
            "IMSERVER_XMPP__COMPONENT_PORT": str(federation.a.component_port),
            "IMSERVER_XMPP__CLIENT_PORT": str(federation.a.client_port),
            "IMSERVER_XMPP__RECONNECT_MAX_DELAY": "2.0",
            "IMSERVER_DATABASE__URL": url,
            "IMSERVER_NOTIFICATIONS__WINDOW": "0.05",
            **env,
        },
    )


@asynccontextmanager
async def home_component(
    federation: Federation,
    backend: str,
    db_dir: Path,
    env: Mapping[str, str],
    name: str | None = None,
) -> AsyncIterator[Home]:
    """The component (in this process) on server A, on a fresh migrated database of
    ``backend`` (SQLite in ``db_dir``, or a new PostgreSQL database) with the shipped
    regions; a real clock (retries wait for it). Its name is the backend's unless
    ``name`` says which of ``federation.components``."""
    pg_name = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{db_dir / 'imserver.sqlite3'}"
    else:
        pg_name, url = await _fresh_pg_database()
    await asyncio.to_thread(upgrade, url)
    app = App(home_config(name or backend, url, federation, env))
    await load_regions(app.ctx, load_regions_csv())
    await app.start()
    home = Home(app, federation)
    try:
        yield home
    finally:
        await home.close()
        await app.stop()
        if pg_name:
            await _drop_pg_database(pg_name)
