"""Federation through real servers: two private Prosody servers linked by s2s on loopback
(tests/support/federation.py), the component on server A, members on server B."""

from __future__ import annotations

import asyncio

from tests.support.federation import (  # noqa: F401 (federation_fixture: the fixture)
    A_DOMAIN,
    B_DOMAIN,
    Federation,
    federation_fixture,
)


async def test_servers_talk_over_s2s(federation: Federation) -> None:
    """The rig itself: a user of each server reaches the other, both ways (dialback)."""
    a = await federation.client(f"alice@{A_DOMAIN}")
    b = await federation.client(f"bob@{B_DOMAIN}")
    try:
        a.send_message(mto=b.bare, mbody="over s2s", mtype="chat")
        got = await asyncio.wait_for(b.messages.get(), 15)
        assert (str(got["from"].bare), str(got["body"])) == (a.bare, "over s2s")
        b.send_message(mto=a.bare, mbody="and back", mtype="chat")
        got = await asyncio.wait_for(a.messages.get(), 15)
        assert (str(got["from"].bare), str(got["body"])) == (b.bare, "and back")
    finally:
        await asyncio.gather(a.close(), b.close())
