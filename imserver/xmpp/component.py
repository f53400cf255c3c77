"""The component: wiring of slixmpp to the services. Translates, never decides."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slixmpp import ComponentXMPP
from slixmpp.exceptions import XMPPError
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher.base import MatcherBase

from imserver.config import Config
from imserver.domain.jids import InvalidJid, normalize_jid
from imserver.service.errors import ServiceError
from imserver.service.limits import build_limiter
from imserver.service.registry import Services
from imserver.xmpp import commands
from imserver.xmpp.compat import slixmpp as slixmpp_compat
from imserver.xmpp.hardening import HardenedStream, StreamLimits, check_startup
from imserver.xmpp.notify import Notifier
from imserver.xmpp.requests import membership, payments, repair
from plugins.distribution import NS
from plugins.distribution import enable as enable_distribution

log = logging.getLogger(__name__)

# Payloads the component answers; any other IQ get/set gets service-unavailable.
KNOWN_PAYLOADS = {
    ("http://jabber.org/protocol/disco#info", "query"),
    ("http://jabber.org/protocol/disco#items", "query"),
    ("http://jabber.org/protocol/commands", "command"),
    ("urn:xmpp:ping", "ping"),
}

# (request IQ, normalised bare JID of the sender)
Handler = Callable[[Any, str], Awaitable[None]]


class UnknownRequest(MatcherBase):
    """Matches IQ requests whose payload no handler knows (or that carry no payload)."""

    def __init__(self, known: set[tuple[str, str]]) -> None:
        super().__init__(None)
        self.known = known

    def match(self, stanza: Any) -> bool:
        if stanza.name != "iq" or stanza["type"] not in ("get", "set"):
            return False
        children = list(stanza.xml)
        if len(children) != 1:
            return True
        tag: str = children[0].tag
        ns, _, name = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
        return (ns, name) not in self.known


class RoutedRequest(MatcherBase):
    """Matches IQ requests with exactly one payload of ours that has a route.

    One matcher and one dict look-up for every route: slixmpp tries each registered
    handler's matcher on every stanza, and twenty StanzaPath matchers cost a tenth of
    the component's CPU under a payment load (py-spy).
    """

    def __init__(self, routes: dict[tuple[str, str], Handler]) -> None:
        super().__init__(None)
        self.routes = routes

    def match(self, stanza: Any) -> bool:
        return self.route_of(stanza) is not None

    def route_of(self, stanza: Any) -> Handler | None:
        """The handler of a request, or None when it is not one of our routes."""
        xml = stanza.xml
        if len(xml) != 1 or stanza.name != "iq":
            return None
        tag: str = xml[0].tag
        if not tag.startswith(_NS_PREFIX):
            return None
        return self.routes.get((xml.get("type", ""), tag[len(_NS_PREFIX) :]))


_NS_PREFIX = f"{{{NS}}}"


class Component(HardenedStream, ComponentXMPP):
    """The imserver component. Handlers turn stanzas into service calls."""

    def __init__(self, config: Config, services: Services) -> None:
        x = config.xmpp
        super().__init__(x.component, x.secret, x.host, x.component_port)
        # Refuses a vulnerable expat, the default secret off loopback and a slixmpp whose
        # private parts we use have moved (hardening.py); after the base init, so a
        # refused component is still a whole object to collect.
        check_startup(config)
        self.stream_limits = StreamLimits(
            config.limits.max_stanza_bytes, config.limits.max_stanza_depth
        )
        # One rate limit for every request and chat message of a sender (service/limits.py).
        self.limiter = build_limiter(services.ctx)
        self.config = config
        self.services = services
        self.stopping = False
        self.connected_event = asyncio.Event()
        self._reconnect_delay = 0.0
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.dist = enable_distribution(self)
        disco = self.plugin["xep_0030"]
        disco.add_identity(category="component", itype="generic", name="imserver distribution")
        disco.add_feature(NS)
        self._known = set(KNOWN_PAYLOADS)
        self._routes: dict[tuple[str, str], Handler] = {}
        # The outbox sender: woken by every commit that writes notifications
        # (Context.outbox_listeners) and by every reconnect.
        self.notifier = Notifier(self)
        for module in (membership, repair, payments, commands):
            module.install(self)
        self._routed = RoutedRequest(self._routes)
        self.register_handler(CoroutineCallback("our requests", self._routed, self._dispatch))
        self.register_handler(
            CoroutineCallback("unknown request", UnknownRequest(self._known), self._unknown)
        )
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("disconnected", self._on_disconnected)

    # -- wiring ---------------------------------------------------------------

    def route(self, itype: str, payload: str, handler: Handler) -> None:
        """Route IQs of ``itype`` carrying our ``payload`` to ``handler`` (the request
        pipeline below: sender, rate limit, error mapping)."""
        self._known.add((NS, payload))
        self._routes[(itype, payload)] = handler

    async def _dispatch(self, iq: Any) -> None:
        handler = self._routed.route_of(iq)
        if handler is None:
            return  # matched, then changed: cannot happen, but never answer twice
        try:
            sender = normalize_jid(iq["from"].bare)
        except InvalidJid:
            raise XMPPError("bad-request", text="the sender's JID does not parse") from None
        try:
            await self.limiter.require(sender)
            await handler(iq, sender)
        except ServiceError as exc:
            raise XMPPError(exc.condition, text=exc.text, etype=exc.etype) from None
        except XMPPError:
            raise
        except Exception:
            log.exception("internal error on %s from %s", iq.xml[0].tag, sender)
            raise XMPPError(
                "internal-server-error", text="the request failed; nothing was changed"
            ) from None

    async def admit(self, iq: Any) -> None:
        """Rate-limit an IQ request that does not come through ``route`` (ad-hoc commands).

        Raises the stanza error: ``resource-constraint`` (type wait) over the limit,
        ``bad-request`` for a sender JID that does not parse.
        """
        try:
            sender = normalize_jid(iq["from"].bare)
        except InvalidJid:
            raise XMPPError("bad-request", text="the sender's JID does not parse") from None
        try:
            await self.limiter.require(sender)
        except ServiceError as exc:
            raise XMPPError(exc.condition, text=exc.text, etype=exc.etype) from None

    async def admit_message(self, msg: Any, sender: str) -> bool:
        """Rate-limit a chat message: False when the sender is over its limit.

        The first refused message of a run gets a ``resource-constraint`` error back; later
        ones are dropped silently, so that a flood is not answered by a flood.
        """
        if await self.limiter.admit(sender):
            return True
        if self.limiter.first_refusal(sender) and msg["type"] != "error":
            reply = msg.reply(clear=True)
            reply["type"] = "error"
            reply["error"]["type"] = "wait"
            reply["error"]["condition"] = "resource-constraint"
            reply["error"]["text"] = "too many messages: wait a moment before sending more"
            reply.send()
        return False

    async def _unknown(self, iq: Any) -> None:
        if len(iq.xml) != 1:
            raise XMPPError("bad-request", text="an IQ request carries exactly one payload")
        raise XMPPError("service-unavailable", text="unknown request")

    async def _on_session_start(self, _event: Any) -> None:
        self._reconnect_delay = 0.0
        self.connected_event.set()
        x = self.config.xmpp
        log.info("component %s connected to %s:%s", self.boundjid, x.host, x.component_port)

    def _on_disconnected(self, _event: Any) -> None:
        self.connected_event.clear()
        if self.stopping:
            return
        # slixmpp never reconnects a component by itself after the link drops.
        delay = self._next_delay()
        log.warning("link to the XMPP server dropped; reconnecting in %.1fs", delay)
        self.loop.call_later(delay, self.connect)

    def _next_delay(self) -> float:
        cap = self.config.xmpp.reconnect_max_delay
        self._reconnect_delay = min(cap, self._reconnect_delay * 2 or 0.25)
        return self._reconnect_delay

    def reschedule_connection_attempt(self) -> asyncio.Future[Any] | None:
        """Retry a failed connect with our capped back-off, not slixmpp's 300 s one."""
        if not self.is_connecting():
            return None  # the attempt was cancelled (stop)
        return slixmpp_compat.retry_connect(self, self._next_delay())

    async def stop(self) -> None:
        """Disconnect for good."""
        self.stopping = True
        self.cancel_connection_attempt()
        if self.transport is not None:
            await self.disconnect(wait=1.0)
