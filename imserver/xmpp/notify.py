"""Sending the notification outbox after commit, and again after a reconnect or a crash.

A notification is claimed in a committed transaction before it is written to the link,
and claimed only while the link is up, by a round with a random token. After writing a
round the sender pings the server with the id ``outbox-<token>``: a server handles a
stream's stanzas in order, so any answer (a result or an error) means it has the round,
and whichever process receives that answer marks the round's notifications sent. No
process waits for it: behind ejabberd, several processes share the component name and
the answer may reach any of them. A link that drops gives back the rounds this process
sent and nobody confirmed (Prosody closing a stream drops what it has not read), and
they go out again once the component is connected. A claim that is never confirmed (the
process was killed, or the answer reached a process that died) lapses after a lease, and
any sender sends it again. Every message keeps the id it was first sent with
(``earning-<lowest outbox id>``, also as its XEP-0359 origin-id), so delivery is at least
once and a client drops a repeat by its id.

A member of another server is reached over a server-to-server link that our server
opens after it took (and confirmed) the message. When it cannot reach the remote server
it bounces the message back to us: a ``<message type='error'>`` from the recipient with
the message's id. The outbox then puts that message's notifications back, and they go
out again later with the same id (see ``Outbox.bounced``), until ``[federation]
give_up_after_seconds`` after its first bounce: the next bounce gives it up, and the
admins are told in chat (``AdminAlerts.given_up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

from imserver.service.money_views import Notice
from imserver.service.outbox import LEASE
from imserver.store.db import Unavailable
from imserver.xmpp.rawxml import element, text
from plugins.distribution import NS

if TYPE_CHECKING:
    from imserver.xmpp.component import Component

log = logging.getLogger(__name__)

ROUND_PING = "outbox-"  # the id of a round's ping: outbox-<token>
EARNING_ID = "earning-"  # the id of a notification message: earning-<message id>
STANZA_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
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
        self.confirmed = 0  # rounds this process confirmed (sent by it or by another)
        self.bounced = 0  # notifications put back because a remote server was unreachable
        self.given_up = 0  # notifications given up: their remote server unreachable too long
        # Rounds this process sent that nobody has confirmed yet: token -> when sent.
        self._unconfirmed: dict[str, float] = {}
        # Confirmations and give-backs under way (kept so that they are not collected).
        self._writes: set[asyncio.Task[None]] = set()
        component.add_event_handler("session_start", self._on_connected)
        component.add_event_handler("disconnected", self._on_disconnected)
        component.register_handler(Callback("outbox rounds", _RoundAnswer(), self._on_answer))
        component.register_handler(Callback("outbox bounces", _Bounce(), self._on_bounce))
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
                if not self.component.connected_event.is_set():
                    await self.outbox.give_back(round_.token)
                    continue
                self._ask_confirmation(round_.token)
                if round_.more:
                    self._dirty = True
            except Unavailable as exc:
                log.warning("notifications wait for the database (%s)", exc)
                self._dirty = True
                continue
            except Exception:
                log.exception("sending notifications failed; they go out again later")
                with contextlib.suppress(Exception):
                    await self.outbox.give_back(round_.token)
                self._dirty = True

    def _ask_confirmation(self, token: str) -> None:
        """Ping the server after the round: its answer confirms the round."""
        c = self.component
        now = time.monotonic()
        # A round older than the lease is any sender's again: no need to remember it.
        horizon = now - LEASE.total_seconds()
        for old in [t for t, at in self._unconfirmed.items() if at < horizon]:
            del self._unconfirmed[old]
        self._unconfirmed[token] = now
        c.send_raw(
            element(
                "iq",
                (
                    ("type", "get"),
                    ("id", f"{ROUND_PING}{token}"),
                    ("to", c.config.xmpp.domain),
                    ("from", c.boundjid.bare),
                ),
                "<ping xmlns='urn:xmpp:ping'/>",
            )
        )

    def _on_answer(self, iq: StanzaBase) -> None:
        # Only the server answers the pings; a token is 128 random bits, never guessed.
        if iq["from"].full != self.component.config.xmpp.domain:
            return
        token = iq["id"][len(ROUND_PING) :]
        self._unconfirmed.pop(token, None)
        task = asyncio.ensure_future(self._confirm(token))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _confirm(self, token: str) -> None:
        try:
            await self.outbox.confirm(token)
            self.confirmed += 1
        except Exception as exc:
            # Unconfirmed, the round lapses after the lease and goes out again.
            log.warning("a notification round stays unconfirmed (%s)", exc)

    def _on_bounce(self, msg: StanzaBase) -> None:
        # The outbox believes it only from the recipient (or its domain) of that message.
        digits = str(msg["id"])[len(EARNING_ID) :]
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
            return  # not an id we send (and would overflow the column)
        message_id = int(digits)
        sender, condition = str(msg["from"].bare), _error_condition(msg)
        task = asyncio.ensure_future(self._put_back(sender, message_id, condition))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _put_back(self, sender: str, message_id: int, condition: str) -> None:
        try:
            retry = await self.outbox.bounced(sender, message_id, condition)
        except Exception as exc:
            # Not put back: the message stays sent (lost to that member, as before).
            log.warning("a bounced notification could not be put back (%s)", exc)
            return
        if retry is None:
            return
        if retry.delay is None:
            self.given_up += retry.rows
            if retry.news:  # once per domain and outage, not per message given up
                self.component.alerts.given_up(retry.domain, self.outbox.retry.give_up_after)
            return
        self.bounced += retry.rows
        asyncio.get_running_loop().call_later(retry.delay.total_seconds(), self.kick)

    def _on_disconnected(self, _event: Any) -> None:
        # What this process wrote and nobody confirmed may have died with the link.
        tokens, self._unconfirmed = list(self._unconfirmed), {}
        if tokens:
            task = asyncio.ensure_future(self._give_back(tokens))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _give_back(self, tokens: list[str]) -> None:
        for token in tokens:
            try:
                await self.outbox.give_back(token)
            except Exception as exc:
                log.warning("a notification round waits for its lease (%s)", exc)
                return

    def _send(self, notice: Notice) -> None:
        c = self.component
        earnings = "".join(
            element("earning", [("xmlns", NS), *((k, e.get(k) or None) for k in EARNING_ATTRS)])
            for e in notice.earnings
        )
        message_id = f"{EARNING_ID}{notice.message_id}"
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
        """Wait until the current drain has finished and the server has confirmed what
        this process sent (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
        while time.monotonic() < deadline:
            if not (self._unconfirmed or self._writes):
                break
            await asyncio.sleep(0.01)


class _RoundAnswer(MatcherBase):
    """Matches the server's answer (result or error) to a round's ping."""

    def __init__(self) -> None:
        super().__init__(ROUND_PING)

    def match(self, xml: StanzaBase) -> bool:
        return (
            xml.name == "iq"
            and xml["type"] in ("result", "error")
            and str(xml["id"]).startswith(ROUND_PING)
        )


def _error_condition(stanza: StanzaBase) -> str:
    """The defined condition of an error stanza ('' if none), read from the XML: on a
    component stream the <error/> is in jabber:component:accept, which slixmpp's error
    plugin does not look for (it would add an empty error of its own instead)."""
    for child in stanza.xml:
        if child.tag.rpartition("}")[2] == "error":
            for condition in child:
                namespace, _, name = condition.tag[1:].partition("}")
                if namespace == STANZA_ERRORS_NS and name != "text":
                    return name
    return ""


class _Bounce(MatcherBase):
    """Matches an error that comes back for a notification message."""

    def __init__(self) -> None:
        super().__init__(EARNING_ID)

    def match(self, xml: StanzaBase) -> bool:
        return (
            xml.name == "message"
            and xml["type"] == "error"
            and str(xml["id"]).startswith(EARNING_ID)
        )
