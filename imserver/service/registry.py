"""The services of one running imserver, built once and handed to the XMPP layer."""

from __future__ import annotations

from dataclasses import dataclass

from imserver.service.bots import Bots
from imserver.service.context import Context
from imserver.service.federation import Federation
from imserver.service.health import Health
from imserver.service.invites import Invites
from imserver.service.ledger import Ledger
from imserver.service.locations import Locations
from imserver.service.membership import Membership
from imserver.service.outbox import Outbox
from imserver.service.payments import Payments
from imserver.service.policy_admin import PolicyAdmin
from imserver.service.queries import Queries
from imserver.service.repair import Repair
from imserver.service.sessions import Sessions
from imserver.service.settlement import Settlement
from imserver.service.withdrawals import Withdrawals


@dataclass
class Services:
    """Every use-case object; the XMPP layer reaches the service layer only through this."""

    ctx: Context
    membership: Membership
    queries: Queries
    repair: Repair
    invites: Invites
    # Payments: built in build() below.
    bots: Bots
    policy: PolicyAdmin
    payments: Payments
    ledger: Ledger
    settlement: Settlement
    withdrawals: Withdrawals
    outbox: Outbox
    health: Health
    sessions: Sessions
    federation: Federation

    async def close(self) -> None:
        """Stop the background writers (before the database is disposed)."""
        await self.payments.close()
        await self.membership.close()

    @classmethod
    def build(cls, ctx: Context) -> Services:
        """Wire the services over one context."""
        return cls(
            ctx=ctx,
            # One geography per process: boundaries load on the first lookup, in a thread.
            membership=Membership(ctx, Locations.from_config(ctx.config.geo)),
            queries=Queries(ctx),
            repair=Repair(ctx),
            invites=Invites(ctx),
            bots=Bots(ctx),
            policy=PolicyAdmin(ctx),
            payments=Payments(ctx),
            ledger=Ledger(ctx),
            settlement=Settlement(ctx),
            withdrawals=Withdrawals(ctx),
            outbox=Outbox(ctx),
            health=Health(ctx),
            sessions=Sessions(ctx),
            federation=Federation(ctx),
        )
