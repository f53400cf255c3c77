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
    interfaces = {"region", "lat", "lon", "crs", "address"}


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
    interfaces = {"id", "payer", "amount", "currency"}


class Refund(_Base):
    name = plugin_attrib = "refund"
    interfaces = {"id", "payment", "amount"}


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
