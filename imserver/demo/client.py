"""A slixmpp client on the loopback Prosody: a member, a merchant's bot or the admin."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from typing import Any, Self

from slixmpp import ClientXMPP, Message

from plugins.distribution import XEP_Distribution, enable


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every client (never used on plain loopback TCP).

    slixmpp makes its own for each client unless given one, and loading the system's CA
    certificates twice costs about 80 ms a client: most of a login.
    """
    return ssl.create_default_context()


class LoginFailed(RuntimeError):
    """The server refused the account's password."""


class MemberClient(ClientXMPP):
    """A client with the protocol plugin that logs in over plain loopback TCP and keeps
    the messages it gets."""

    def __init__(self, jid: str, password: str) -> None:
        # Loopback only: the private Prosody offers no TLS, so SCRAM goes over plain TCP.
        super().__init__(
            jid,
            password,
            plugin_config={"feature_mechanisms": {"unencrypted_scram": True}},
            ssl_context=_ssl_context(),
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
        self.refused = asyncio.Event()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("failed_all_auth", lambda _e: self.refused.set())
        self.add_event_handler("message", self._message)

    async def _start(self, _event: Any) -> None:
        self.send_presence()
        self.ready.set()

    def _message(self, msg: Message) -> None:
        self.messages.put_nowait(msg)

    async def open(self, port: int, timeout: float = 20.0) -> Self:
        """Connect to 127.0.0.1:port and wait for the session (LoginFailed if refused)."""
        self.connect("127.0.0.1", port)
        waits = {asyncio.ensure_future(e.wait()) for e in (self.ready, self.refused)}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if self.refused.is_set():
            await self.close()
            raise LoginFailed(f"{self.boundjid.bare}: the server refused the password")
        if not self.ready.is_set():
            await self.close()
            raise TimeoutError(f"{self.boundjid.bare}: no session within {timeout:g} s")
        return self

    async def close(self) -> None:
        """Log out (quietly: a connection already gone is fine)."""
        with contextlib.suppress(Exception):
            await self.disconnect(wait=1.0)
        # slixmpp cancels its send loop only when the client is garbage collected, and the
        # task, cancelled then, is destroyed with it still pending ("Task was destroyed but
        # it is pending!" for every client). End it here, while we hold it.
        sending = self._run_out_filters
        if sending is not None and not sending.done():
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending

    @property
    def bare(self) -> str:
        """The bare JID logged in."""
        return str(self.boundjid.bare)
