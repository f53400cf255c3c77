"""The component reconnects by itself, with a capped back-off, when Prosody goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imserver.app import App
from imserver.devserver.prosody import ProsodyInstance, free_port
from imserver.geo.regions import load_regions_csv
from imserver.service.regions import load_regions
from imserver.store.migrate import upgrade
from tests.conftest import COMPONENTS, SECRET, make_config
from tests.support.clients import PASSWORD, Client
from tests.support.faults import wait_for


@pytest.fixture
async def own_prosody(tmp_path: Path) -> AsyncIterator[ProsodyInstance]:
    """A Prosody of this test's own, which it may stop and start at will."""
    instance = ProsodyInstance(
        tmp_path / "prosody",
        client_port=free_port(),
        component_port=free_port(),
        components={COMPONENTS["sqlite"]: SECRET},
    )
    await instance.astart()
    yield instance
    await instance.astop()


async def test_component_comes_back_after_prosody_restarts(
    own_prosody: ProsodyInstance, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    await asyncio.to_thread(upgrade, url)
    app = App(make_config("sqlite", url, own_prosody))
    await load_regions(app.ctx, load_regions_csv())
    await app.start()
    try:
        admin_jid = app.config.admins[0]
        for _ in range(3):
            await own_prosody.astop()
            # The component notices that the link is gone (and starts backing off).
            assert await wait_for(lambda: not app.component.connected_event.is_set(), 10, 0.02)
            await own_prosody.astart()
            # Back within 10 s: the back-off is capped (2 s in the test config).
            await asyncio.wait_for(app.component.connected_event.wait(), 10)
        await asyncio.to_thread(own_prosody.add_account, admin_jid, PASSWORD)
        admin = await Client(admin_jid).open(own_prosody.client_port)
        try:
            shop = "shop@localhost"
            iq = admin.iq(app.config.xmpp.component, "set")
            iq["merchant"]["jid"], iq["merchant"]["name"] = shop, "Tea House"
            iq["merchant"]["location"]["region"] = "440305"
            answer = await iq.send(timeout=10)
            assert answer["member"]["jid"] == shop
        finally:
            await admin.close()
    finally:
        await app.stop()
