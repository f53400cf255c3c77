"""The component: wiring of slixmpp to the services. Translates, never decides.

It owns the request path (:mod:`.pipeline`), the route table (:mod:`.routing`) that the
feature modules fill, the two command front-ends (:mod:`.commands`) and the outbox
sender (:mod:`.notify`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slixmpp import ComponentXMPP
from slixmpp.exceptions import XMPPError
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import CoroutineCallback

from imserver.config import Config
from imserver.logs import jid_view
from imserver.service.limits import build_limiter
from imserver.service.registry import Services
from imserver.xmpp import commands
from imserver.xmpp.alerts import AdminAlerts
from imserver.xmpp.compat import slixmpp as slixmpp_compat
from imserver.xmpp.hardening import HardenedStream, StreamLimits, check_startup
from imserver.xmpp.notify import Notifier
from imserver.xmpp.pipeline import Pipeline
from imserver.xmpp.requests import membership, payments, repair
from imserver.xmpp.routing import Router, UnknownRequest
from plugins.distribution import NS
from plugins.distribution import enable as enable_distribution

log = logging.getLogger(__name__)

# The feature modules that declare their IQ routes as data (a ROUTES list each).
ROUTE_MODULES = (membership, repair, payments)


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
        self.config = config
        self.services = services
        self.stopping = False
        self.connected_event = asyncio.Event()
        # The link to the XMPP server, for the metrics and status endpoint: when it last
        # went up or down (Unix time) and how often it dropped.
        self.link_changed = time.time()
        self.link_drops = 0
        self._reconnect_delay = 0.0
        # One rate limit for every request and chat message of a sender (service/limits.py),
        # applied by the one request path that IQs, ad-hoc and chat commands all take.
        self.limiter = build_limiter(services.ctx)
        # A member's JID in the log as [log] jids allows (hardening.py logs senders too).
        self.show_jid = jid_view(config.log, x.secret)
        self.pipeline = Pipeline(services, self.limiter, self, self.show_jid)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.dist = enable_distribution(self)
        disco = self.plugin["xep_0030"]
        disco.add_identity(category="component", itype="generic", name="imserver distribution")
        disco.add_feature(NS)
        self.router = Router()
        self._known = self.router.known  # what the unknown-request matcher lets through
        for module in ROUTE_MODULES:
            self.router.add(*module.ROUTES)
        # The outbox sender: woken by every commit that writes notifications
        # (Context.outbox_listeners) and by every reconnect.
        self.notifier = Notifier(self)
        self.alerts = AdminAlerts(self)
        commands.install(self)
        self.register_handler(
            CoroutineCallback("our requests", self.router, self.pipeline.iq_handler(self.router))
        )
        self.register_handler(
            CoroutineCallback("unknown request", UnknownRequest(self._known), self._unknown)
        )
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("disconnected", self._on_disconnected)

    # -- wiring ---------------------------------------------------------------------------

    async def _unknown(self, iq: StanzaBase) -> None:
        if len(iq.xml) != 1:
            raise XMPPError("bad-request", text="an IQ request carries exactly one payload")
        raise XMPPError("service-unavailable", text="unknown request")

    async def _on_session_start(self, _event: Any) -> None:
        self._reconnect_delay = 0.0
        self.connected_event.set()
        self.link_changed = time.time()
        x = self.config.xmpp
        log.info("component %s connected to %s:%s", self.boundjid, x.host, x.component_port)

    def _on_disconnected(self, _event: Any) -> None:
        if self.connected_event.is_set():
            self.link_drops += 1
            self.link_changed = time.time()
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
