"""Sending the notification outbox after commit, and again after a reconnect.

Guarantee: at most once. A notification is claimed (marked sent) in a committed
transaction *before* it is written to the link, and claimed only while the link is up;
whatever was not claimed when the link dropped (or the process stopped) is sent once the
component is connected again. A notification can therefore be lost, never doubled, in one
window: the process dies, or the TCP link drops, between that commit and Prosody reading
the bytes. Each message carries a stable id (``earning-<first outbox id>``) to make such
a loss visible in the logs of both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from imserver.service.money_views import Notice
from plugins.distribution.stanza import Earning

if TYPE_CHECKING:
    from imserver.xmpp.component import Component

log = logging.getLogger(__name__)

# What one member earns within this many seconds goes out as one message.
COALESCE_WINDOW = 0.05
EARNING_ATTRS = ("payment", "refund", "merchant", "payer", "amount", "currency", "role",
                 "level", "scope")  # fmt: skip


class Notifier:
    """Drains the outbox in the background: kicked after every commit that wrote to it."""

    def __init__(self, component: Component, window: float = COALESCE_WINDOW) -> None:
        self.component = component
        self.outbox = component.services.outbox
        self.window = window
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        component.add_event_handler("session_start", self._on_connected)

    def _on_connected(self, _event: Any) -> None:
        # Whatever waited while the link was down (or before a restart) goes out now.
        self.kick()

    def kick(self) -> None:
        """Ask for a drain soon (coalescing whatever else arrives meanwhile)."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self._dirty and not self.component.stopping:
            self._dirty = False
            await asyncio.sleep(self.window)
            try:
                while self.component.connected_event.is_set():
                    notices = await self.outbox.claim()
                    if not notices:
                        break
                    if not self.component.connected_event.is_set():
                        # Claimed while the link went down: never written, so give back.
                        await self.outbox.give_back([i for n in notices for i in n.ids])
                        break
                    for notice in notices:
                        self._send(notice)
            except Exception:
                log.exception("sending notifications failed; they stay in the outbox")

    def _send(self, notice: Notice) -> None:
        c = self.component
        msg = c.make_message(
            mto=notice.recipient, mbody=notice.body, mtype="chat", mfrom=c.boundjid.bare
        )
        msg["id"] = f"earning-{notice.ids[0]}"
        for earning in notice.earnings:
            el = Earning()
            for key in EARNING_ATTRS:
                if earning.get(key):
                    el[key] = earning[key]
            msg.append(el)
        msg.enable("store_hint")
        msg.send()
        self.sent += len(notice.ids)

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until the current drain has finished (tests and benchmarks)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
