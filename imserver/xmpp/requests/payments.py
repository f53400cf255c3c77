"""payment, refund, balance, statement, withdraw/withdrawal(s), bot, policy: the routes."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from slixmpp import Iq

from imserver.service.errors import bad_request
from imserver.service.money_views import DistributionView, PolicyView, StatementPage
from imserver.xmpp.payloads import (
    distribution_xml,
    fill_balance,
    fill_bot,
    fill_policy,
    fill_statement,
    fill_withdrawal,
    fill_withdrawals,
)
from imserver.xmpp.routing import Route, as_text, forward, reply_with

if TYPE_CHECKING:
    from imserver.service.registry import Services

__all__ = ["ROUTES", "distribution_xml"]  # distribution_xml: bench/bench_e2e.py imports it

RSM_NS = "http://jabber.org/protocol/rsm"
POLICY_KEYS = ("pool-bp", "referral-bp", "district-bp", "city-bp", "province-bp")


def pay(s: Services, iq: Iq, sender: str) -> Awaitable[DistributionView]:
    """The hot path: the route matched exactly one ``<payment/>`` child, so its attributes
    are read directly (slixmpp's plugin look-ups were 4% of the component's CPU under
    load, py-spy), and the service's coroutine is returned, not awaited here."""
    p = iq.xml[0].attrib
    return s.payments.pay(
        sender,
        p.get("id") or None,
        p.get("payer") or None,
        p.get("amount") or None,
        p.get("currency") or None,
        p.get("merchant") or None,
    )


async def statement(s: Services, iq: Iq, sender: str) -> StatementPage:
    """A page of the ledger; the XEP-0059 ``<set/>`` chooses the page."""
    st = iq["statement"]
    limit: int | None = None
    after: str | None = None
    before: str | bool | None = None
    if st.xml.find(f"{{{RSM_NS}}}set") is not None:
        rsm = st["rsm"]
        raw_max = rsm["max"]
        if raw_max:
            if not raw_max.isdigit() or len(raw_max) > 6:
                raise bad_request("<max/> must be a non-negative integer")
            limit = int(raw_max)
        after = rsm["after"] or None
        before = rsm["before"]
        if after is not None and before is not None:
            raise bad_request("give <after/> or <before/>, not both")
    return await s.ledger.statement(
        sender,
        jid=st["jid"] or None,
        currency=st["currency"] or None,
        limit=limit,
        after=after,
        before=before,
    )


def replace_policy(s: Services, iq: Iq, sender: str) -> Awaitable[PolicyView]:
    """The whole policy, replaced (admin)."""
    p = iq["policy"]
    fields: dict[str, str | None] = {k: p[k] or None for k in POLICY_KEYS}
    fields["allow-third-level"] = p["allow-third-level"] or None
    return s.policy.replace(sender, fields, p["reason"] or None)


ROUTES: list[Route[Any]] = [
    Route("set", "payment", pay, as_text(distribution_xml)),
    Route(
        "set",
        "refund",
        forward("refund", lambda s: s.payments.refund, "id", "payment", "amount", "merchant"),
        as_text(distribution_xml),
    ),
    Route(
        "get",
        "balance",
        forward("balance", lambda s: s.ledger.balance, "jid"),
        reply_with("balance", fill_balance),
    ),
    Route("get", "statement", statement, reply_with("statement", fill_statement)),
    Route(
        "set",
        "withdraw",
        forward("withdraw", lambda s: s.withdrawals.ask, "amount", "currency", "id"),
        reply_with("withdrawal", fill_withdrawal),
    ),
    Route(
        "set",
        "withdrawal",
        forward("withdrawal", lambda s: s.withdrawals.decide, "id", "action", "reason"),
        reply_with("withdrawal", fill_withdrawal),
    ),
    Route(
        "get",
        "withdrawals",
        forward("withdrawals", lambda s: s.withdrawals.listing, "status"),
        reply_with("withdrawals", fill_withdrawals),
    ),
    Route(
        "set",
        "bot",
        forward("bot", lambda s: s.bots.change, "jid", "merchant", "action"),
        reply_with("bot", fill_bot),
    ),
    Route(
        "get",
        "policy",
        forward("policy", lambda s: s.policy.get),
        reply_with("policy", fill_policy),
    ),
    Route("set", "policy", replace_policy, reply_with("policy", fill_policy)),
]
