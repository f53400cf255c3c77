"""Telling the admins in chat about what needs a person: a remote domain past its limits."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from slixmpp import JID

from imserver.service.errors import ServiceError
from imserver.service.federation import DomainLimited

if TYPE_CHECKING:
    from imserver.xmpp.component import Component

# One alert per domain in this long: a flood of refused registrations is one message.
QUIET_SECONDS = 3600.0


class AdminAlerts:
    """Listens to the pipeline's refusals; messages every admin once per domain and hour."""

    def __init__(self, component: Component) -> None:
        self.component = component
        self._told: dict[str, float] = {}
        self.sent = 0
        component.pipeline.refusal_listeners.append(self.on_refusal)

    def on_refusal(self, refusal: ServiceError) -> None:
        """Alert the admins when ``refusal`` is a remote domain's limit."""
        if not isinstance(refusal, DomainLimited):
            return
        now = time.monotonic()
        last = self._told.get(refusal.domain)
        if last is not None and now - last < QUIET_SECONDS:
            return
        self._told[refusal.domain] = now
        c = self.component
        body = (
            f"Registrations from {refusal.domain} are refused: {refusal.text}. "
            f"Say 'domains' to see the remote domains, 'trust {refusal.domain} blocked' "
            "to block it."
        )
        for admin in c.config.admins:
            c.send_message(mto=JID(admin), mfrom=c.boundjid, mbody=body, mtype="chat")
            self.sent += 1
