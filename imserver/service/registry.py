"""The services of one running imserver, built once and handed to the XMPP layer."""

from __future__ import annotations

from dataclasses import dataclass

from imserver.service.context import Context
from imserver.service.membership import Membership
from imserver.service.repair import Repair


@dataclass
class Services:
    """Every use-case object; the XMPP layer reaches the service layer only through this."""

    ctx: Context
    membership: Membership
    repair: Repair

    @classmethod
    def build(cls, ctx: Context) -> Services:
        """Wire the services over one context."""
        return cls(ctx=ctx, membership=Membership(ctx), repair=Repair(ctx))
