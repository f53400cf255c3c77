"""Stanza classes of the distribution protocol (namespace NS), for component and bots."""

from __future__ import annotations

from typing import ClassVar

from slixmpp import Iq, Message
from slixmpp.xmlstream import ElementBase, register_stanza_plugin

NS = "https://imserver.dev/protocol/distribution/0"
HINTS_NS = "urn:xmpp:hints"


class _Base(ElementBase):
    namespace = NS
    interfaces: ClassVar[set[str]] = set()


class Register(_Base):
    name = plugin_attrib = "register"
    interfaces = {"referrer"}


class Member(_Base):
    name = plugin_attrib = "member"
    interfaces = {
        "jid", "role", "rule-number", "region", "referrer", "status", "name",
        # Answers of terminate, delete and reassign: what the repair changed.
        "repaired", "reattached", "vacated",
    }  # fmt: skip


class Link(_Base):
    """One level of a chain: referral (level) or agency (scope)."""

    name = "link"
    plugin_attrib = "link"
    plugin_multi_attrib = "links"
    interfaces = {"level", "scope", "region", "jid", "rule-number"}


class Upline(_Base):
    name = plugin_attrib = "upline"


class Agents(_Base):
    name = plugin_attrib = "agents"


class Chain(_Base):
    name = plugin_attrib = "chain"
    interfaces = {"jid"}


class Location(_Base):
    name = plugin_attrib = "location"
    interfaces = {"region", "lat", "lon", "crs", "address", "accept"}


class Merchant(_Base):
    name = plugin_attrib = "merchant"
    interfaces = {"jid", "name", "referrer"}


class Agent(_Base):
    name = plugin_attrib = "agent"
    interfaces = {"jid", "region"}


class Terminate(_Base):
    name = plugin_attrib = "terminate"
    interfaces = {"jid", "reason"}


class Delete(_Base):
    name = plugin_attrib = "delete"
    interfaces = {"jid", "reason"}


class Reassign(_Base):
    """Admin: move a member (and its downline) under another referrer."""

    name = plugin_attrib = "reassign"
    interfaces = {"jid", "referrer", "reason"}


class AuditItem(_Base):
    """One audit log entry; its text is the entry's details as JSON."""

    name = "entry"
    plugin_attrib = "entry"
    plugin_multi_attrib = "entries"
    interfaces = {"id", "at", "actor", "action", "target", "reason", "details"}

    def get_details(self) -> str:
        return self.xml.text or ""

    def set_details(self, value: str) -> None:
        self.xml.text = value

    def del_details(self) -> None:
        self.xml.text = None


class Audit(_Base):
    """Admin: read the audit log, newest first (``before`` an entry id pages back)."""

    name = plugin_attrib = "audit"
    interfaces = {"max", "before"}


class Payment(_Base):
    name = plugin_attrib = "payment"
    # merchant (optional): the merchant reported for; anyone not allowed to is refused.
    interfaces = {"id", "payer", "amount", "currency", "merchant"}


class Refund(_Base):
    name = plugin_attrib = "refund"
    interfaces = {"id", "payment", "amount", "merchant"}


class Share(_Base):
    name = "share"
    plugin_attrib = "share"
    plugin_multi_attrib = "shares"
    interfaces = {"role", "level", "scope", "jid", "amount"}


class Distribution(_Base):
    name = plugin_attrib = "distribution"
    interfaces = {"payment", "refund", "merchant", "amount", "currency", "policy"}


class Amount(_Base):
    """One currency of a balance."""

    name = "amount"
    plugin_attrib = "amount"
    plugin_multi_attrib = "amounts"
    interfaces = {"currency", "pending", "available", "reserved"}


class Balance(_Base):
    name = plugin_attrib = "balance"
    interfaces = {"jid"}  # an admin may name another member


class Earning(_Base):
    """Payload of a notification: one share earned (or reversed) by the recipient."""

    name = "earning"
    plugin_attrib = "earning"
    plugin_multi_attrib = "earnings"
    interfaces = {
        "payment",
        "refund",
        "merchant",
        "payer",
        "amount",
        "currency",
        "role",
        "level",
        "scope",
    }


class Store(ElementBase):
    """XEP-0334 store hint: offline members get the notification later."""

    name = "store"
    namespace = HINTS_NS
    plugin_attrib = "store_hint"
    interfaces: ClassVar[set[str]] = set()


# --- Payments: bots, policy, statements, withdrawals ---------------------------------


class Bot(_Base):
    """Link or unlink a bot JID to a merchant (admin, or the merchant itself)."""

    name = plugin_attrib = "bot"
    interfaces = {"jid", "merchant", "action", "status"}


class PolicyPayload(_Base):
    """The distribution policy in force (get) or its replacement (set, admin)."""

    name = "policy"
    plugin_attrib = "policy"
    interfaces = {
        "version",
        "pool-bp",
        "referral-bp",
        "district-bp",
        "city-bp",
        "province-bp",
        "allow-third-level",
        "reason",
    }


class Entry(_Base):
    """One ledger entry of a statement."""

    name = "entry"
    plugin_attrib = "entry"
    plugin_multi_attrib = "entries"
    interfaces = {
        "id",
        "at",
        "kind",
        "bucket",
        "amount",
        "currency",
        "payment",
        "refund",
        "withdrawal",
    }


class Statement(_Base):
    """A page of the sender's ledger entries (XEP-0059 <set/> inside)."""

    name = plugin_attrib = "statement"
    interfaces = {"jid", "currency"}


class Withdraw(_Base):
    """A member asks to withdraw an amount (reserved at once)."""

    name = plugin_attrib = "withdraw"
    interfaces = {"id", "amount", "currency"}


class Withdrawal(_Base):
    """A withdrawal (answer), or an admin's decision on one (action approve|reject)."""

    name = "withdrawal"
    plugin_attrib = "withdrawal"
    plugin_multi_attrib = "withdrawal_items"
    interfaces = {"id", "ref", "jid", "amount", "currency", "status", "at", "action", "reason"}


class Withdrawals(_Base):
    """A list of withdrawals (the sender's; an admin's: everyone's)."""

    name = plugin_attrib = "withdrawals"
    interfaces = {"status"}


def register_payment_stanzas() -> None:
    """Register the payment payloads (called by register_stanzas)."""
    from slixmpp.plugins.xep_0059.stanza import Set as RsmSet

    for cls in (Bot, PolicyPayload, Statement, Withdraw, Withdrawal, Withdrawals):
        register_stanza_plugin(Iq, cls)
    register_stanza_plugin(Statement, Entry, iterable=True)
    register_stanza_plugin(Statement, RsmSet)
    register_stanza_plugin(Withdrawals, Withdrawal, iterable=True)


REQUESTS: tuple[type[ElementBase], ...] = (
    Register, Chain, Merchant, Agent, Terminate, Delete, Payment, Refund, Balance,
)  # fmt: skip


def register_stanzas() -> None:
    """Register every payload on Iq and Message (idempotent)."""
    for cls in (*REQUESTS, Member, Distribution):
        register_stanza_plugin(Iq, cls)
    register_stanza_plugin(Chain, Member)
    register_stanza_plugin(Chain, Upline)
    register_stanza_plugin(Chain, Agents)
    register_stanza_plugin(Upline, Link, iterable=True)
    register_stanza_plugin(Agents, Link, iterable=True)
    register_stanza_plugin(Merchant, Location)
    register_stanza_plugin(Iq, Reassign)
    register_stanza_plugin(Iq, Audit)
    register_stanza_plugin(Audit, AuditItem, iterable=True)
    register_stanza_plugin(Distribution, Share, iterable=True)
    register_stanza_plugin(Balance, Amount, iterable=True)
    register_stanza_plugin(Message, Earning, iterable=True)
    register_stanza_plugin(Message, Store)
    register_payment_stanzas()
