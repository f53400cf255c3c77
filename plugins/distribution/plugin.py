"""The plugin class: registers the stanzas and gives bots one-call helpers."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from slixmpp import Iq
from slixmpp.plugins.base import BasePlugin, register_plugin

from plugins.distribution import stanza
from plugins.distribution.stanza import NS


class XEP_Distribution(BasePlugin):
    """Client helpers for the distribution protocol (used by bots and tests)."""

    name = "distribution"
    description = "imserver distribution protocol"
    dependencies: ClassVar[set[str]] = set()
    stanza = stanza

    def plugin_init(self) -> None:
        stanza.register_stanzas()

    def _iq(self, to: str, itype: Literal["get", "set"]) -> Iq:
        iq: Iq = self.xmpp.make_iq(ito=to, itype=itype)
        return iq

    async def register(self, component: str, referrer: str, **kw: Any) -> Iq:
        """Join the network through ``referrer``; returns the result IQ."""
        iq = self._iq(component, "set")
        iq["register"]["referrer"] = referrer
        return await iq.send(**kw)

    async def chain(self, component: str, jid: str | None = None, **kw: Any) -> Iq:
        """Ask for a member's chains (one's own without ``jid``)."""
        iq = self._iq(component, "get")
        iq.enable("chain")
        if jid:
            iq["chain"]["jid"] = jid
        return await iq.send(**kw)

    async def pay(
        self,
        component: str,
        payment_id: str,
        payer: str,
        amount: int,
        currency: str,
        *,
        merchant: str | None = None,
        **kw: Any,
    ) -> Iq:
        """Report a payment (merchant or merchant bot); returns the distribution IQ.

        ``merchant`` (optional) names the merchant reported for; the component refuses it
        unless the sender is that merchant or one of its bots.
        """
        iq = self._iq(component, "set")
        p = iq["payment"]
        p["id"], p["payer"], p["amount"], p["currency"] = payment_id, payer, str(amount), currency
        if merchant:
            p["merchant"] = merchant
        return await iq.send(**kw)

    async def refund(
        self,
        component: str,
        refund_id: str,
        payment_id: str,
        amount: int,
        *,
        merchant: str | None = None,
        **kw: Any,
    ) -> Iq:
        """Refund part or all of a payment."""
        iq = self._iq(component, "set")
        r = iq["refund"]
        r["id"], r["payment"], r["amount"] = refund_id, payment_id, str(amount)
        if merchant:
            r["merchant"] = merchant
        return await iq.send(**kw)

    async def balance(self, component: str, **kw: Any) -> Iq:
        """Ask for one's balances."""
        iq = self._iq(component, "get")
        iq.enable("balance")
        return await iq.send(**kw)

    async def merchant(
        self,
        component: str,
        jid: str,
        name: str,
        location: dict[str, str],
        *,
        referrer: str | None = None,
        **kw: Any,
    ) -> Iq:
        """Admin: make ``jid`` a merchant at ``location`` (``{"region": …}``, ``{"lat": …,
        "lon": …}`` with an optional ``"crs"``, or ``{"address": …}``)."""
        iq = self._iq(component, "set")
        m = iq["merchant"]
        m["jid"], m["name"] = jid, name
        if referrer:
            m["referrer"] = referrer
        for key, value in location.items():
            m["location"][key] = value
        return await iq.send(**kw)

    async def agent(self, component: str, jid: str, region: str, **kw: Any) -> Iq:
        """Admin: make ``jid`` the agent of ``region`` (replacing the one before)."""
        iq = self._iq(component, "set")
        iq["agent"]["jid"], iq["agent"]["region"] = jid, region
        return await iq.send(**kw)

    async def terminate(self, component: str, jid: str, reason: str | None = None, **kw: Any) -> Iq:
        """Admin: end a member's service (its chains are repaired before the answer)."""
        return await self._member_request(component, "terminate", jid, reason, **kw)

    async def delete(self, component: str, jid: str, reason: str | None = None, **kw: Any) -> Iq:
        """Admin: delete a member and erase its JID (answered with the pseudonym)."""
        return await self._member_request(component, "delete", jid, reason, **kw)

    async def _member_request(
        self, component: str, what: str, jid: str, reason: str | None, **kw: Any
    ) -> Iq:
        iq = self._iq(component, "set")
        iq[what]["jid"] = jid
        if reason:
            iq[what]["reason"] = reason
        return await iq.send(**kw)

    async def reassign(self, component: str, jid: str, referrer: str, reason: str, **kw: Any) -> Iq:
        """Admin: move a member and its downline under another referrer."""
        iq = self._iq(component, "set")
        r = iq["reassign"]
        r["jid"], r["referrer"], r["reason"] = jid, referrer, reason
        return await iq.send(**kw)

    async def audit(
        self, component: str, max_entries: int | None = None, before: int | None = None, **kw: Any
    ) -> Iq:
        """Admin: a page of the audit log, newest first."""
        iq = self._iq(component, "get")
        iq.enable("audit")
        if max_entries is not None:
            iq["audit"]["max"] = str(max_entries)
        if before is not None:
            iq["audit"]["before"] = str(before)
        return await iq.send(**kw)

    # -- payments: bots, policy, statements, withdrawals -----------------------

    async def bot(
        self, component: str, jid: str, merchant: str | None = None, action: str = "link", **kw: Any
    ) -> Iq:
        """Link (or ``action='unlink'``) a bot JID to a merchant."""
        iq = self._iq(component, "set")
        iq["bot"]["jid"], iq["bot"]["action"] = jid, action
        if merchant:
            iq["bot"]["merchant"] = merchant
        return await iq.send(**kw)

    async def policy(self, component: str, **kw: Any) -> Iq:
        """Read the policy in force."""
        iq = self._iq(component, "get")
        iq.enable("policy")
        return await iq.send(**kw)

    async def set_policy(
        self,
        component: str,
        *,
        pool_bp: int,
        referral_bp: list[int],
        agent_bp: tuple[int, int, int],
        allow_third_level: bool = False,
        reason: str | None = None,
        **kw: Any,
    ) -> Iq:
        """Admin: replace the policy (answered with its new version)."""
        iq = self._iq(component, "set")
        p = iq["policy"]
        p["pool-bp"] = str(pool_bp)
        p["referral-bp"] = " ".join(str(x) for x in referral_bp)
        p["district-bp"], p["city-bp"], p["province-bp"] = (str(x) for x in agent_bp)
        p["allow-third-level"] = "true" if allow_third_level else "false"
        if reason:
            p["reason"] = reason
        return await iq.send(**kw)

    async def statement(
        self,
        component: str,
        *,
        max_items: int | None = None,
        after: str | None = None,
        before: str | bool | None = None,
        currency: str | None = None,
        jid: str | None = None,
        **kw: Any,
    ) -> Iq:
        """A page of one's ledger entries (XEP-0059: max, after, before; before=True: last)."""
        iq = self._iq(component, "get")
        st = iq["statement"]
        if currency:
            st["currency"] = currency
        if jid:
            st["jid"] = jid
        if max_items is not None or after is not None or before is not None:
            rsm = st["rsm"]
            if max_items is not None:
                rsm["max"] = str(max_items)
            if after is not None:
                rsm["after"] = after
            if before is True:
                rsm["before"] = True
            elif isinstance(before, str):
                rsm["before"] = before
        return await iq.send(**kw)

    async def withdraw(
        self, component: str, amount: int, currency: str, ref: str | None = None, **kw: Any
    ) -> Iq:
        """Ask to withdraw ``amount`` (reserved at once); ``ref`` makes it idempotent."""
        iq = self._iq(component, "set")
        w = iq["withdraw"]
        w["amount"], w["currency"] = str(amount), currency
        if ref:
            w["id"] = ref
        return await iq.send(**kw)

    async def decide_withdrawal(
        self, component: str, withdrawal_id: str, action: str, reason: str | None = None, **kw: Any
    ) -> Iq:
        """Admin: ``approve`` or ``reject`` a withdrawal."""
        iq = self._iq(component, "set")
        w = iq["withdrawal"]
        w["id"], w["action"] = withdrawal_id, action
        if reason:
            w["reason"] = reason
        return await iq.send(**kw)

    async def withdrawals(self, component: str, status: str | None = None, **kw: Any) -> Iq:
        """One's withdrawals (an admin: everyone's), optionally of one status."""
        iq = self._iq(component, "get")
        iq.enable("withdrawals")
        if status:
            iq["withdrawals"]["status"] = status
        return await iq.send(**kw)


register_plugin(XEP_Distribution)


def enable(xmpp: Any) -> XEP_Distribution:
    """Load the plugin on a slixmpp client or component and return it."""
    xmpp.register_plugin("distribution")
    plugin: XEP_Distribution = xmpp.plugin["distribution"]
    return plugin


__all__ = ["NS", "XEP_Distribution", "enable"]
