"""Commands over the membership service: join, chain, add merchant, assign agent."""

from __future__ import annotations

import re

from imserver.domain.chains import SCOPES
from imserver.service.authz import Capability
from imserver.service.membership import Location
from imserver.service.views import ChainView, MemberView
from imserver.xmpp.commands.base import (
    Args,
    Cell,
    Command,
    Field,
    Result,
    Text,
    optional,
    required,
)

_POINT = re.compile(r"^\s*(-?\d{1,3}(?:\.\d+)?)\s*,\s*(-?\d{1,3}(?:\.\d+)?)\s*$")


def member_details(m: MemberView) -> list[tuple[str, Cell]]:
    """The labelled fields of a member, as both front-ends show them."""
    rows: list[tuple[str, Cell]] = [
        ("JID", m.jid),
        ("Rule number", m.rule_number),
        ("Role", m.role),
        ("Region", m.region),
        ("Status", m.status),
    ]
    if m.name:
        rows.insert(1, ("Name", m.name))
    if m.referrer:
        rows.append(("Referrer", m.referrer))
    return rows


def chain_details(view: ChainView) -> list[tuple[str, Cell]]:
    """A member's upline and agency chain as labelled lines."""
    rows = member_details(view.member)
    for link in view.upline:
        rows.append((f"Upline {link.level}", f"{link.jid} ({link.rule_number})"))
    for agent in view.agents:
        scope = SCOPES[agent.scope_level]
        rows.append(
            (f"{scope.capitalize()} agent {agent.region_code}", agent.agent_jid or "vacant")
        )
    return rows


def location_of(text: str) -> Location:
    """A merchant location typed by a person: a region code, ``lat,lon`` or an address."""
    text = text.strip()
    if text.isdigit():
        return Location(region=text)
    point = _POINT.match(text)
    if point:
        return Location(lat=float(point.group(1)), lon=float(point.group(2)))
    return Location(address=text)


class Join(Command):
    name = "Join the network"
    node = "join"
    keywords = ("join", "register")
    help = "Join through an invite: its code (e.g. 440305-M00000001) or the inviter's JID."
    capabilities = frozenset({Capability.REGISTER})
    # A jid-single field still: a rule number is a well-formed (domain-only) JID, so
    # clients accept it there, and the form stays what it was.
    fields = (Field("referrer", "Invite code or referrer's JID", "jid", desc="who invited you"),)

    async def run(self, actor: str, args: Args) -> Result:
        view = await self.services.membership.register(actor, required(args, "referrer"))
        return Text(f"Welcome! You joined as {view.rule_number}.", member_details(view))


class Chain(Command):
    name = "Show a chain"
    node = "chain"
    keywords = ("chain", "my chain")
    help = "Your referral upline and your region's agents (admins and agents: any member's)."
    capabilities = frozenset({Capability.CHAIN_OWN, Capability.CHAIN_ANY, Capability.CHAIN_REGION})
    fields = (Field("jid", "Member's JID", "jid", required=False, desc="empty: your own"),)

    async def run(self, actor: str, args: Args) -> Result:
        view = await self.services.membership.chain(actor, optional(args, "jid"))
        return Text(f"Chain of {view.member.jid}", chain_details(view))


class AddMerchant(Command):
    name = "Add a merchant"
    node = "add-merchant"
    keywords = ("merchant", "add merchant")
    help = "Add a merchant at a location: a region code (e.g. 440305), lat,lon or an address."
    capabilities = frozenset({Capability.MERCHANT_CREATE})
    fields = (
        Field("jid", "Merchant's JID", "jid"),
        Field("name", "Business name"),
        Field("location", "Region code, lat,lon or address"),
        Field("referrer", "Referrer's JID", "jid", required=False),
    )

    async def run(self, actor: str, args: Args) -> Result:
        view = await self.services.membership.add_merchant(
            actor,
            required(args, "jid"),
            required(args, "name"),
            optional(args, "referrer"),
            location_of(required(args, "location")),
        )
        return Text(f"Merchant added: {view.rule_number}", member_details(view))


class AssignAgent(Command):
    name = "Assign an agent"
    node = "assign-agent"
    keywords = ("agent", "assign agent")
    help = "Make a JID the agent of a region (district, city or province code)."
    capabilities = frozenset({Capability.AGENT_ASSIGN})
    fields = (Field("jid", "Agent's JID", "jid"), Field("region", "Region code"))

    async def run(self, actor: str, args: Args) -> Result:
        region = required(args, "region")
        view = await self.services.membership.assign_agent(actor, required(args, "jid"), region)
        return Text(f"{view.jid} is now the agent of {region}.", member_details(view))
