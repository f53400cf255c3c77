"""The network of a set of merchants as the database holds it: volume, shares by role,
top earners, members with their referrers, agents, and the ledger check.

What ``imserver demo`` prints and draws, read in one transaction, so that the summary
is the database's word and not the demo's own counting.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

from imserver.service.context import Context
from imserver.store import ledger, members, reports
from imserver.store.db import Conn
from imserver.store.ledger import LedgerReport

PLATFORM = "platform"


def share_key(role: str, level: int | str | None, scope: str | None) -> str:
    """How a place of the split is named: ``referrer 1``, ``agent district``, ``platform``."""
    return " ".join(str(x) for x in (role, level or scope) if x)


@dataclass(frozen=True)
class NetworkMember:
    """A member and its referrer (None for a root: a merchant or an agent)."""

    jid: str
    role: str
    status: str
    region: str
    rule_number: str
    referrer: str | None


@dataclass(frozen=True)
class NetworkReport:
    """The payments to some merchants and the network around them (minor units)."""

    currency: str
    payments: int
    paid: int
    refunds: int
    refunded: int
    shares: dict[str, int]  # share_key -> net amount, refunds deducted
    top: dict[str, list[tuple[str, int]]]  # share_key -> (JID, net), best first
    members: list[NetworkMember]
    agents: dict[str, str]  # region code -> agent JID
    ledger: LedgerReport

    @property
    def volume(self) -> int:
        """What was paid less what was refunded."""
        return self.paid - self.refunded


async def network_report(
    ctx: Context,
    merchants: Collection[str],
    jids: Collection[str],
    regions: Collection[str],
    currency: str,
    top: int = 3,
) -> NetworkReport:
    """The report of the payments to ``merchants``, the members ``jids`` (with their
    referrers) and the agents of ``regions``."""

    async def use_case(conn: Conn) -> NetworkReport:
        found = await members.by_jids(conn, jids)
        merchant_ids = [found[j].id for j in merchants if j in found]
        count, paid, refunded = (await reports.payment_volume(conn, merchant_ids=merchant_ids)).get(
            currency, (0, 0, 0)
        )
        earned = await reports.earned_by(conn, merchant_ids, currency)
        wanted = {r.member_id for r in earned if r.member_id is not None}
        wanted |= {m.referrer_id for m in found.values() if m.referrer_id is not None}
        by_id = await members.by_ids(conn, wanted)
        shares: dict[str, int] = defaultdict(int)
        earners: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for r in earned:
            key = share_key(r.role, r.level, r.scope)
            shares[key] += r.net
            if r.member_id is not None:
                earners[key].append((by_id[r.member_id].jid, r.net))
        return NetworkReport(
            currency=currency,
            payments=count,
            paid=paid,
            refunds=await reports.refund_count(conn, merchant_ids),
            refunded=refunded,
            shares=dict(shares),
            top={k: sorted(v, key=lambda e: (-e[1], e[0]))[:top] for k, v in earners.items()},
            members=[
                NetworkMember(
                    m.jid,
                    m.role,
                    m.status,
                    m.region_code,
                    m.rule_number,
                    by_id[m.referrer_id].jid if m.referrer_id is not None else None,
                )
                for m in sorted(found.values(), key=lambda m: m.id)
            ],
            agents=await reports.agent_jids(conn, sorted(regions)),
            ledger=await ledger.check(conn),
        )

    return await ctx.db.transaction(use_case)
