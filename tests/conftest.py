"""Fixtures: a real Prosody (and an ejabberd for the scale-out tests) on free loopback
ports, both databases, the component, clients."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from imserver.app import App
from imserver.config import Config, load_config
from imserver.devserver.ejabberd import EjabberdInstance
from imserver.devserver.prosody import ProsodyInstance, free_port
from imserver.geo.regions import load_regions_csv
from imserver.service.regions import load_regions
from imserver.store.migrate import upgrade
from tests.support.clients import PASSWORD, Client

DOMAIN = "localhost"
OTHER_DOMAIN = "other.localhost"
# A remote domain for the federation tests: its trust is the config's default (invite-only).
FAR_DOMAIN = "far.localhost"
SECRET = "test-secret"
COMPONENTS = {"sqlite": "dist.localhost", "postgresql": "distpg.localhost"}
# The one component name that several processes share on ejabberd.
EJABBERD_COMPONENT = "dist.localhost"
PG_ADMIN_DSN = os.environ.get(
    "IMSERVER_TEST_PG", "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
)
BACKENDS = [
    b for b in os.environ.get("IMSERVER_TEST_BACKENDS", "sqlite,postgresql").split(",") if b
]


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``@pytest.mark.soak_when(fixture=param, ...)``: the runs of a parametrised test whose
    parameters are all these are ``soak`` (``make soak``), not ``make test``. For the other
    backend's run of a slow test whose backend-specific part ``make test`` runs elsewhere,
    so that ``make test`` still tests every behaviour on at least one backend."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for mark in item.iter_markers("soak_when"):
            if mark.kwargs and all(params.get(k) == v for k, v in mark.kwargs.items()):
                item.add_marker(pytest.mark.soak)


@pytest.fixture(scope="session")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyInstance]:
    """A private Prosody (three client domains, one component per backend)."""
    instance = ProsodyInstance(
        tmp_path_factory.mktemp("prosody"),
        domain=DOMAIN,
        client_port=free_port(),
        component_port=free_port(),
        components={jid: SECRET for jid in COMPONENTS.values()},
        extra_hosts=(OTHER_DOMAIN, FAR_DOMAIN),
    )
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def ejabberd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EjabberdInstance]:
    """A private ejabberd (two client domains, one component name for several processes).

    Started from the main thread: it dies with the test run however that ends.
    """
    instance = EjabberdInstance(
        tmp_path_factory.mktemp("ejabberd"),
        domain=DOMAIN,
        client_port=free_port(),
        component_port=free_port(),
        http_port=free_port(),
        components={EJABBERD_COMPONENT: SECRET},
        extra_hosts=(OTHER_DOMAIN,),
    )
    instance.start(timeout=60)
    yield instance
    instance.stop()


class FakeClock:
    """An injectable clock: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class Service:
    """The running component on one backend, with helpers to get clients."""

    backend: str
    app: App
    prosody: ProsodyInstance
    clock: FakeClock
    clients: dict[str, Client] = field(default_factory=dict)
    # Logging in hundreds of clients at once only measures SCRAM under load; the tests
    # are about what they send once logged in.
    _logins: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(16))
    _seq: Iterator[int] = field(default_factory=itertools.count)

    @property
    def jid(self) -> str:
        return self.app.config.xmpp.component

    @property
    def config(self) -> Config:
        return self.app.config

    def new_jid(self, prefix: str = "u", domain: str = DOMAIN) -> str:
        """A JID nobody used yet in this session."""
        return f"{prefix}{next(self._seq)}-{uuid.uuid4().hex[:6]}@{domain}"

    async def client(self, jid: str | None = None) -> Client:
        """A logged-in client for ``jid`` (account created on first use; reused after)."""
        jid = jid or self.new_jid()
        if jid not in self.clients:
            async with self._logins:
                await asyncio.to_thread(self.prosody.add_account, jid, PASSWORD)
                self.clients[jid] = await Client(jid).open(self.prosody.client_port, 60)
        return self.clients[jid]

    async def admin(self) -> Client:
        return await self.client(self.config.admins[0])

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients.values()))


async def _fresh_pg_database() -> tuple[str, str]:
    name = f"imserver_test_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(PG_ADMIN_DSN).set(drivername="postgresql+asyncpg", database=name)
    return name, url.render_as_string(hide_password=False)


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def empty_database(backend: str, directory: Path) -> AsyncIterator[str]:
    """The URL of a database of ``backend`` with nothing in it: an SQLite file in
    ``directory`` that does not exist yet, or a new PostgreSQL database, dropped after."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / 'imserver.sqlite3'}"
        return
    name, url = await _fresh_pg_database()
    try:
        yield url
    finally:
        await _drop_pg_database(name)


# The second domain of the test servers stands for a foreign one: blocked. (The default
# trust of a remote domain is invite-only: tests/test_federation_trust.py tries them all.)
FOREIGN_BLOCKED = {"IMSERVER_FEDERATION__TRUST": json.dumps({OTHER_DOMAIN: "blocked"})}


def make_config(backend: str, url: str, prosody: ProsodyInstance) -> Config:
    """The config of a test service: loopback Prosody, the given database."""
    env = {
        "IMSERVER_ADMINS": f'["admin-{backend}@{DOMAIN}"]',
        "IMSERVER_XMPP__COMPONENT": COMPONENTS[backend],
        "IMSERVER_XMPP__SECRET": SECRET,
        "IMSERVER_XMPP__COMPONENT_PORT": str(prosody.component_port),
        "IMSERVER_XMPP__CLIENT_PORT": str(prosody.client_port),
        "IMSERVER_XMPP__RECONNECT_MAX_DELAY": "2.0",
        "IMSERVER_DATABASE__URL": url,
        # Tests wait for notifications: a short digest window keeps them quick.
        "IMSERVER_NOTIFICATIONS__WINDOW": "0.05",
        **FOREIGN_BLOCKED,
    }
    return load_config(Path(__file__).parents[1] / "config.toml", env=env)


@pytest.fixture(scope="session", params=BACKENDS)
async def service(
    request: pytest.FixtureRequest,
    prosody: ProsodyInstance,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Service]:
    """The component on a fresh, migrated database with the region data, per backend."""
    backend: str = request.param
    pg_name = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'imserver.sqlite3'}"
    else:
        pg_name, url = await _fresh_pg_database()
    config = make_config(backend, url, prosody)
    await asyncio.to_thread(upgrade, url)
    clock = FakeClock()
    app = App(config, clock=clock)
    await load_regions(app.ctx, load_regions_csv())
    await app.start()
    svc = Service(backend, app, prosody, clock)
    yield svc
    await svc.close()
    await app.stop()
    if pg_name:
        await _drop_pg_database(pg_name)
