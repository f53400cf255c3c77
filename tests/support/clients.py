"""Real slixmpp clients for tests: users, merchants, bots and admins on the test Prosody."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from slixmpp import ClientXMPP, Iq, Message
from slixmpp.exceptions import IqError

from plugins.distribution import NS, XEP_Distribution, enable

PASSWORD = "test-password"


class Client(ClientXMPP):  # type: ignore[misc]
    """A logged-in test client that collects incoming messages."""

    def __init__(self, jid: str, password: str = PASSWORD) -> None:
        super().__init__(
            jid, password, plugin_config={"feature_mechanisms": {"unencrypted_scram": True}}
        )
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.dist: XEP_Distribution = enable(self)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0050")
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("message", self._message)

    async def _start(self, _event: Any) -> None:
        self.send_presence()
        self.ready.set()

    def _message(self, msg: Message) -> None:
        self.messages.put_nowait(msg)

    async def open(self, port: int, timeout: float = 20.0) -> Client:
        """Connect to 127.0.0.1:port and wait for the session."""
        self.connect("127.0.0.1", port)
        await asyncio.wait_for(self.ready.wait(), timeout)
        return self

    async def close(self) -> None:
        """Log out."""
        with contextlib.suppress(Exception):
            await self.disconnect(wait=1.0)

    @property
    def bare(self) -> str:
        return str(self.boundjid.bare)

    def iq(self, to: str, itype: str) -> Iq:
        """A fresh IQ to ``to``."""
        return self.make_iq(ito=to, itype=itype)

    async def send_raw_iq(self, to: str, itype: str, payload_xml: str, timeout: float = 10.0) -> Iq:
        """Send an IQ with a hand-written payload (for malformed-input tests)."""
        from xml.etree import ElementTree as ET

        iq = self.iq(to, itype)
        iq.append(ET.fromstring(payload_xml))
        return await iq.send(timeout=timeout)


async def expect_error(coro: Any, condition: str) -> Iq:
    """Await an IQ request that must fail with ``condition``; return the error stanza."""
    try:
        result = await coro
    except IqError as exc:
        got = exc.iq["error"]["condition"]
        assert got == condition, f"expected {condition}, got {got}: {exc.iq['error']['text']}"
        assert exc.iq["error"]["text"], "every error carries a human text"
        return exc.iq
    raise AssertionError(f"expected {condition}, got a result: {result}")


__all__ = ["NS", "PASSWORD", "Client", "expect_error"]
