"""Sending the notification outbox after commit, and again after a reconnect or a crash.

A notification is claimed in a committed transaction before it is written to the link,
and claimed only while the link is up. After writing a round the sender pings the
server: an answer means the server has the round, and only then are its notifications
marked sent. No answer (the link dropped, Prosody restarted) gives the round back, and it
goes out again once the component is connected. A claim that is never confirmed (this
process was killed) lapses after a lease, and any sender sends it again. Every message
keeps the id it was first sent with (``earning-<lowest outbox id>``, also as its XEP-0359
origin-id), so delivery is at least once and a client drops a repeat by its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout

from imserver.service.money_views import Notice
from imserver.service.outbox import LEASE
from imserver.store.db import Unavailable
from imserver.xmpp.rawxml import element, text
from plugins.distribution import NS

if TYPE_CHECKING:
    from imserver.xmpp.component import Component

log = logging.getLogger(__name__)

# How long the server may take to confirm a batch before it is given back.
CONFIRM_TIMEOUT = 5.0
STORE_HINT = "<store xmlns='urn:xmpp:hints'/>"
ORIGIN_ID_NS = "urn:xmpp:sid:0"  # XEP-0359: the id a repeat keeps
EARNING_ATTRS = ("payment", "refund", "merchant", "payer", "amount", "currency", "role",
                 "level", "scope")  # fmt: skip


class Notifier:
    """Drains the outbox in the background: kicked after every commit that wrote to it."""

    def __init__(self, component: Component) -> None:
        self.component = component
        self.outbox = component.services.outbox
        # What one member earns within this many seconds goes out as one message.
        self.window = component.config.notifications.window
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.sent = 0
        self.rounds = 0  # rounds that sent something: a recipient gets one message per round
        component.add_event_handler("session_start", self._on_connected)
        # Whoever commits notifications (payments, refunds, any later writer) wakes us.
        component.services.ctx.outbox_listeners.append(self.kick)

    def _on_connected(self, _event: Any) -> None:
        # Whatever waited while the link was down (or before a restart) goes out now.
        self.kick()
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        # Claims of a process that died lapse after the lease with nobody writing to the
        # outbox to wake us: look again a few times per lease.
        while not self.component.stopping:
            await asyncio.sleep(LEASE.total_seconds() / 3)
            self.kick()

    def kick(self) -> None:
        """Ask for a drain soon (coalescing whatever else arrives meanwhile)."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        # One round per window at most: a member gets one message per round (the digest).
        while self._dirty and not self.component.stopping:
            self._dirty = False
            await asyncio.sleep(self.window)
            if not self.component.connected_event.is_set():
                continue  # the reconnect kicks again
            round_ = self.outbox.round()
            try:
                sent = 0
                async for notices in round_.messages():
                    if not self.component.connected_event.is_set():
                        break  # claimed while the link went down: never written, given back
                    if not sent:
                        self.rounds += 1  # counted as it starts: its messages are out
                    for notice in notices:
                        self._send(notice)
                    sent += len(notices)
                    # Let the answers to payments out between slices of a large round.
                    await asyncio.sleep(0)
                if not round_.ids:
                    continue
                if not self.component.connected_event.is_set() or not await self._confirmed():
                    await self.outbox.give_back(round_.ids)
                    continue
                await self.outbox.confirm(round_.ids)
                if round_.more:
                    self._dirty = True
            except Unavailable as exc:
                log.warning("notifications wait for the database (%s)", exc)
                self._dirty = True
                continue
            except Exception:
                log.exception("sending notifications failed; they go out again later")
                with contextlib.suppress(Exception):
                    await self.outbox.give_back(round_.ids)
                self._dirty = True

    async def _confirmed(self) -> bool:
        """True once the server has taken what was just written to the link.

        A server handles a stream's stanzas in order, so any answer to a ping sent after
        them (a result or an error) means it has them. No answer means they may have
        died with the link (Prosody closing a stream drops what it has not read): they
        are given back and go out again after the reconnect.
        """
        c = self.component
        try:
            await c.plugin["xep_0199"].send_ping(
                JID(c.config.xmpp.domain), ifrom=c.boundjid, timeout=CONFIRM_TIMEOUT
            )
        except IqError:
            return True
        except IqTimeout:
            return False
        return True

    def _send(self, notice: Notice) -> None:
        c = self.component
        earnings = "".join(
            element("earning", [("xmlns", NS), *((k, e.get(k) or None) for k in EARNING_ATTRS)])
            for e in notice.earnings
        )
        message_id = f"earning-{notice.message_id}"
        head = (
            ("type", "chat"),
            ("id", message_id),
            ("to", notice.recipient),
            ("from", c.boundjid.bare),
        )
        body = f"<body>{text(notice.body)}</body>"
        origin = f"<origin-id xmlns='{ORIGIN_ID_NS}' id='{message_id}'/>"
        c.send(element("message", head, f"{body}{earnings}{origin}{STORE_HINT}"))
        self.sent += len(notice.ids)

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until the current drain has finished (tests and benchmarks)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
