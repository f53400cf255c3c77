"""Real slixmpp clients for tests: users, merchants, bots and admins on the test Prosody."""

from __future__ import annotations

from typing import Any

from slixmpp import Iq
from slixmpp.exceptions import IqError

from imserver.demo.client import MemberClient
from plugins.distribution import NS

PASSWORD = "test-password"


class Client(MemberClient):
    """A logged-in test client that collects incoming messages."""

    def __init__(self, jid: str, password: str = PASSWORD) -> None:
        super().__init__(jid, password)

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
