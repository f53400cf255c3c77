"""The component: wiring of slixmpp to the services. Translates, never decides."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slixmpp import ComponentXMPP, Iq
from slixmpp.exceptions import XMPPError
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import StanzaPath
from slixmpp.xmlstream.matcher.base import MatcherBase

from imserver.config import Config
from imserver.domain.jids import InvalidJid, normalize_jid
from imserver.service.errors import ServiceError
from imserver.service.membership import Location, Membership
from imserver.xmpp.translate import fill_chain, fill_member
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

Handler = Callable[[Iq, str], Awaitable[None]]


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


class Component(ComponentXMPP):
    """The imserver component. Handlers turn stanzas into service calls."""

    def __init__(self, config: Config, membership: Membership) -> None:
        x = config.xmpp
        super().__init__(x.component, x.secret, x.host, x.component_port)
        self.config = config
        self.membership = membership
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
        self._route("set", "register", self._register)
        self._route("get", "chain", self._chain)
        self._route("set", "merchant", self._merchant)
        self._route("set", "agent", self._agent)
        self.register_handler(
            CoroutineCallback("unknown request", UnknownRequest(self._known), self._unknown)
        )
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("disconnected", self._on_disconnected)

    # -- wiring ---------------------------------------------------------------

    def _route(self, itype: str, payload: str, handler: Handler) -> None:
        """Register an IQ handler for one of our payloads with the shared error mapping."""
        self._known.add((NS, payload))

        async def run(iq: Any) -> None:
            try:
                sender = normalize_jid(iq["from"].bare)
            except InvalidJid:
                raise XMPPError("bad-request", text="the sender's JID does not parse") from None
            try:
                await handler(iq, sender)
            except ServiceError as exc:
                raise XMPPError(exc.condition, text=exc.text, etype=exc.etype) from None
            except XMPPError:
                raise
            except Exception:
                log.exception("internal error on %s from %s", payload, sender)
                raise XMPPError(
                    "internal-server-error", text="the request failed; nothing was changed"
                ) from None

        self.register_handler(
            CoroutineCallback(f"{payload} {itype}", StanzaPath(f"iq@type={itype}/{payload}"), run)
        )

    async def _unknown(self, iq: Any) -> None:
        if len(iq.xml) != 1:
            raise XMPPError("bad-request", text="an IQ request carries exactly one payload")
        raise XMPPError("service-unavailable", text="unknown request")

    async def _on_session_start(self, _event: Any) -> None:
        self._reconnect_delay = 0.0
        self.connected_event.set()
        log.info("component %s connected to %s", self.boundjid, self.address)

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
        if self._current_connection_attempt is None:
            return None
        self._connect_loop_wait = self._next_delay()
        self._current_connection_attempt = asyncio.ensure_future(self._connect_loop())
        return self._current_connection_attempt

    async def stop(self) -> None:
        """Disconnect for good."""
        self.stopping = True
        self.cancel_connection_attempt()
        if self.transport is not None:
            await self.disconnect(wait=1.0)

    # -- handlers -------------------------------------------------------------

    async def _register(self, iq: Iq, sender: str) -> None:
        view = await self.membership.register(sender, iq["register"]["referrer"] or None)
        reply = iq.reply(clear=True)
        fill_member(reply["member"], view)
        reply.send()

    async def _chain(self, iq: Iq, sender: str) -> None:
        view = await self.membership.chain(sender, iq["chain"]["jid"] or None)
        reply = iq.reply(clear=True)
        fill_chain(reply["chain"], view)
        reply.send()

    async def _merchant(self, iq: Iq, sender: str) -> None:
        m = iq["merchant"]
        view = await self.membership.add_merchant(
            sender, m["jid"], m["name"], m["referrer"] or None, _location(m)
        )
        reply = iq.reply(clear=True)
        fill_member(reply["member"], view)
        reply.send()

    async def _agent(self, iq: Iq, sender: str) -> None:
        a = iq["agent"]
        view = await self.membership.assign_agent(sender, a["jid"], a["region"])
        reply = iq.reply(clear=True)
        fill_member(reply["member"], view)
        reply.send()


def _location(merchant: Any) -> Location:
    """The ``<location/>`` of a merchant request (exactly one form), or bad-request."""
    if merchant.xml.find(f"{{{NS}}}location") is None:
        raise ServiceError("bad-request", "a merchant needs a <location/>")
    loc = merchant["location"]
    region, lat, lon, address = loc["region"], loc["lat"], loc["lon"], loc["address"]
    forms = [bool(region), bool(lat or lon), bool(address)]
    if sum(forms) != 1:
        raise ServiceError(
            "bad-request", "give exactly one of region='…', lat='…' lon='…', or address='…'"
        )
    if region:
        return Location(region=region)
    if address:
        return Location(address=address)
    try:
        return Location(lat=float(lat), lon=float(lon), crs=loc["crs"] or "wgs84")
    except ValueError:
        raise ServiceError("bad-request", "lat and lon must be decimal degrees") from None
