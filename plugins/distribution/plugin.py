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
        self, component: str, payment_id: str, payer: str, amount: int, currency: str, **kw: Any
    ) -> Iq:
        """Report a payment (merchant or merchant bot); returns the distribution IQ."""
        iq = self._iq(component, "set")
        p = iq["payment"]
        p["id"], p["payer"], p["amount"], p["currency"] = payment_id, payer, str(amount), currency
        return await iq.send(**kw)

    async def refund(
        self, component: str, refund_id: str, payment_id: str, amount: int, **kw: Any
    ) -> Iq:
        """Refund part or all of a payment."""
        iq = self._iq(component, "set")
        r = iq["refund"]
        r["id"], r["payment"], r["amount"] = refund_id, payment_id, str(amount)
        return await iq.send(**kw)

    async def balance(self, component: str, **kw: Any) -> Iq:
        """Ask for one's balances."""
        iq = self._iq(component, "get")
        iq.enable("balance")
        return await iq.send(**kw)


register_plugin(XEP_Distribution)


def enable(xmpp: Any) -> XEP_Distribution:
    """Load the plugin on a slixmpp client or component and return it."""
    xmpp.register_plugin("distribution")
    plugin: XEP_Distribution = xmpp.plugin["distribution"]
    return plugin


__all__ = ["NS", "XEP_Distribution", "enable"]
