"""A private Prosody + component for tests that must own their component (restart it on
another database, give it its own limits), so the session's shared service is untouched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from imserver.app import App
from imserver.config import Config, load_config
from imserver.devserver.prosody import ProsodyInstance, free_port
from imserver.geo.regions import load_regions_csv
from imserver.service.regions import load_regions
from imserver.store.migrate import upgrade
from tests.conftest import DOMAIN, FOREIGN_BLOCKED, OTHER_DOMAIN, FakeClock, Service

SECRET = "private-test-secret"


@asynccontextmanager
async def private_prosody(data_dir: Path, component: str) -> AsyncIterator[ProsodyInstance]:
    """A Prosody of our own with one component name."""
    instance = ProsodyInstance(
        data_dir,
        domain=DOMAIN,
        client_port=free_port(),
        component_port=free_port(),
        components={component: SECRET},
        extra_hosts=(OTHER_DOMAIN,),
    )
    await instance.astart()
    try:
        yield instance
    finally:
        await instance.astop()


def private_config(
    prosody: ProsodyInstance, component: str, url: str, extra: Mapping[str, str] = {}
) -> Config:
    """The config of a private component on ``prosody`` and database ``url``."""
    env = {
        "IMSERVER_ADMINS": f'["admin-{component.split(".")[0]}@{DOMAIN}"]',
        "IMSERVER_XMPP__COMPONENT": component,
        "IMSERVER_XMPP__SECRET": SECRET,
        "IMSERVER_XMPP__COMPONENT_PORT": str(prosody.component_port),
        "IMSERVER_XMPP__CLIENT_PORT": str(prosody.client_port),
        "IMSERVER_XMPP__RECONNECT_MAX_DELAY": "1.0",
        "IMSERVER_DATABASE__URL": url,
        **FOREIGN_BLOCKED,
        **extra,
    }
    return load_config(Path(__file__).parents[2] / "config.toml", env=env)


async def start_service(
    prosody: ProsodyInstance, config: Config, *, backend: str = "sqlite", fresh: bool = True
) -> Service:
    """Migrate (and for a fresh database load regions), start the component."""
    await asyncio.to_thread(upgrade, config.database.url)
    clock = FakeClock()
    app = App(config, clock=clock)
    if fresh:
        await load_regions(app.ctx, load_regions_csv())
    await app.start()
    return Service(backend, app, prosody, clock)


async def stop_service(svc: Service) -> None:
    """Log the clients out, stop the component and close the database."""
    await svc.close()
    await svc.app.stop()
