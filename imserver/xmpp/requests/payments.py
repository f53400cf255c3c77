"""payment, refund, balance, statement, withdraw/withdrawal(s), bot, policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imserver.service.errors import bad_request
from imserver.service.money_views import (
    BalanceView,
    DistributionView,
    PolicyView,
    StatementPage,
    WithdrawalView,
)
from imserver.xmpp.rawxml import element, send_result
from plugins.distribution import NS
from plugins.distribution.stanza import Amount, Entry, Withdrawal

if TYPE_CHECKING:
    from imserver.xmpp.component import Component

RSM_NS = "http://jabber.org/protocol/rsm"


def install(component: Component) -> None:
    """Route this module's payloads to the payment services."""
    services = component.services

    async def payment(iq: Any, sender: str) -> None:
        # The route matched exactly one <payment/> child: read its attributes directly
        # (slixmpp's plugin look-ups were 4% of the component's CPU under load, py-spy).
        p = iq.xml[0].attrib
        view = await services.payments.pay(
            sender,
            p.get("id") or None,
            p.get("payer") or None,
            p.get("amount") or None,
            p.get("currency") or None,
            p.get("merchant") or None,
        )
        send_result(component, iq, distribution_xml(view))

    async def refund(iq: Any, sender: str) -> None:
        r = iq["refund"]
        view = await services.payments.refund(
            sender,
            r["id"] or None,
            r["payment"] or None,
            r["amount"] or None,
            r["merchant"] or None,
        )
        send_result(component, iq, distribution_xml(view))

    async def balance(iq: Any, sender: str) -> None:
        view = await services.ledger.balance(sender, iq["balance"]["jid"] or None)
        reply = iq.reply(clear=True)
        fill_balance(reply["balance"], view)
        reply.send()

    async def statement(iq: Any, sender: str) -> None:
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
        page = await services.ledger.statement(
            sender,
            jid=st["jid"] or None,
            currency=st["currency"] or None,
            limit=limit,
            after=after,
            before=before,
        )
        reply = iq.reply(clear=True)
        fill_statement(reply["statement"], page)
        reply.send()

    async def withdraw(iq: Any, sender: str) -> None:
        w = iq["withdraw"]
        view = await services.withdrawals.ask(
            sender, w["amount"] or None, w["currency"] or None, w["id"] or None
        )
        reply = iq.reply(clear=True)
        fill_withdrawal(reply["withdrawal"], view)
        reply.send()

    async def withdrawal(iq: Any, sender: str) -> None:
        w = iq["withdrawal"]
        view = await services.withdrawals.decide(
            sender, w["id"] or None, w["action"] or None, w["reason"] or None
        )
        reply = iq.reply(clear=True)
        fill_withdrawal(reply["withdrawal"], view)
        reply.send()

    async def withdrawals(iq: Any, sender: str) -> None:
        views = await services.withdrawals.listing(sender, iq["withdrawals"]["status"] or None)
        reply = iq.reply(clear=True)
        listing = reply["withdrawals"]
        for view in views:
            el = Withdrawal()
            fill_withdrawal(el, view)
            listing.append(el)
        reply.send()

    async def bot(iq: Any, sender: str) -> None:
        b = iq["bot"]
        view = await services.bots.change(
            sender, b["jid"] or None, b["merchant"] or None, b["action"] or None
        )
        reply = iq.reply(clear=True)
        el = reply["bot"]
        el["jid"], el["merchant"] = view.jid, view.merchant
        el["status"] = "linked" if view.linked else "unlinked"
        reply.send()

    async def policy_get(iq: Any, sender: str) -> None:
        view = await services.policy.get(sender)
        reply = iq.reply(clear=True)
        fill_policy(reply["policy"], view)
        reply.send()

    async def policy_set(iq: Any, sender: str) -> None:
        p = iq["policy"]
        keys = ("pool-bp", "referral-bp", "district-bp", "city-bp", "province-bp")
        fields: dict[str, str | None] = {k: p[k] or None for k in keys}
        fields["allow-third-level"] = p["allow-third-level"] or None
        view = await services.policy.replace(sender, fields, p["reason"] or None)
        reply = iq.reply(clear=True)
        fill_policy(reply["policy"], view)
        reply.send()

    component.route("set", "payment", payment)
    component.route("set", "refund", refund)
    component.route("get", "balance", balance)
    component.route("get", "statement", statement)
    component.route("set", "withdraw", withdraw)
    component.route("set", "withdrawal", withdrawal)
    component.route("get", "withdrawals", withdrawals)
    component.route("set", "bot", bot)
    component.route("get", "policy", policy_get)
    component.route("set", "policy", policy_set)


def distribution_xml(view: DistributionView) -> str:
    """A DistributionView as its ``<distribution/>`` element (serialised)."""
    shares = "".join(
        element(
            "share",
            (
                ("role", s.role),
                ("level", s.level),
                ("scope", s.scope or None),
                ("jid", s.jid or None),
                ("amount", s.amount),
            ),
        )
        for s in view.shares
    )
    head = (
        ("xmlns", NS),
        ("payment", view.payment),
        ("refund", view.refund or None),
        ("merchant", view.merchant),
        ("amount", view.amount),
        ("currency", view.currency),
        ("policy", view.policy),
    )
    return element("distribution", head, shares)


def fill_balance(el: Any, view: BalanceView) -> None:
    """Write a BalanceView into a ``<balance/>`` element (one ``<amount/>`` per currency)."""
    el["jid"] = view.jid
    for line in view.lines:
        amount = Amount()
        amount["currency"] = line.currency
        amount["pending"] = str(line.pending)
        amount["available"] = str(line.available)
        amount["reserved"] = str(line.reserved)
        el.append(amount)


def fill_statement(el: Any, page: StatementPage) -> None:
    """Write a page of entries and its XEP-0059 ``<set/>``."""
    for line in page.lines:
        entry = Entry()
        entry["id"] = str(line.id)
        entry["at"] = line.at.isoformat()
        entry["kind"] = line.kind
        entry["bucket"] = line.bucket
        entry["amount"] = str(line.amount)
        entry["currency"] = line.currency
        if line.payment:
            entry["payment"] = line.payment
        if line.refund:
            entry["refund"] = line.refund
        if line.withdrawal is not None:
            entry["withdrawal"] = str(line.withdrawal)
        el.append(entry)
    rsm = el["rsm"]
    if page.lines:
        rsm["first"] = str(page.lines[0].id)
        rsm["first_index"] = str(page.first_index)
        rsm["last"] = str(page.lines[-1].id)
    rsm["count"] = str(page.count)


def fill_withdrawal(el: Any, view: WithdrawalView) -> None:
    """Write a WithdrawalView into a ``<withdrawal/>`` element."""
    el["id"] = str(view.id)
    if view.ref:
        el["ref"] = view.ref
    el["jid"] = view.jid
    el["amount"] = str(view.amount)
    el["currency"] = view.currency
    el["status"] = view.status
    el["at"] = view.created_at.isoformat()
    if view.reason:
        el["reason"] = view.reason


def fill_policy(el: Any, view: PolicyView) -> None:
    """Write a PolicyView into a ``<policy/>`` element."""
    el["version"] = str(view.version)
    el["pool-bp"] = str(view.pool_bp)
    el["referral-bp"] = " ".join(str(x) for x in view.referral_bp)
    el["district-bp"], el["city-bp"], el["province-bp"] = (str(x) for x in view.agent_bp)
    el["allow-third-level"] = "true" if view.allow_third_level else "false"
