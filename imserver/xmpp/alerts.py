"""Telling the admins in chat about what needs a person: a remote domain past its limits,
and notifications to a remote domain given up after its server stayed unreachable."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING

from slixmpp import JID

from imserver.service.errors import ServiceError
from imserver.service.federation import DomainLimited

if TYPE_CHECKING:
    from imserver.xmpp.component import Component

# One alert per domain and subject in this long: a flood of refused registrations (or of
# given-up notifications) is one message.
QUIET_SECONDS = 3600.0


class AdminAlerts:
    """Messages every admin once per domain, subject and hour: the pipeline's refusals
    for a domain's limits, the notifier's given-up notifications."""

    def __init__(self, component: Component) -> None:
        self.component = component
        self._told: dict[tuple[str, str], float] = {}  # (subject, domain) -> when
        self.sent = 0
        component.pipeline.refusal_listeners.append(self.on_refusal)

    def on_refusal(self, refusal: ServiceError) -> None:
        """Alert the admins when ``refusal`` is a remote domain's limit."""
        if not isinstance(refusal, DomainLimited):
            return
        self._tell(
            "limited",
            refusal.domain,
            f"Registrations from {refusal.domain} are refused: {refusal.text}. "
            f"Say 'domains' to see the remote domains, 'trust {refusal.domain} blocked' "
            "to block it.",
        )

    def given_up(self, domain: str, after: timedelta) -> None:
        """Alert the admins that notifications to members of ``domain`` were given up:
        its server has bounced them for longer than ``after``."""
        self._tell(
            "given-up",
            domain,
            f"Notifications to members of {domain} are given up: its server has been "
            f"unreachable for more than {after}. Their balances and statements are "
            "unaffected; only the messages are lost.",
        )

    def _tell(self, subject: str, domain: str, body: str) -> None:
        now = time.monotonic()
        last = self._told.get((subject, domain))
        if last is not None and now - last < QUIET_SECONDS:
            return
        self._told[(subject, domain)] = now
        c = self.component
        for admin in c.config.admins:
            c.send_message(mto=JID(admin), mfrom=c.boundjid, mbody=body, mtype="chat")
            self.sent += 1
