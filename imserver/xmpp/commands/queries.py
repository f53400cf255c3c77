"""Commands over the read-only queries: find a member, region overview and members,
statistics."""

from __future__ import annotations

from imserver.service.authz import Capability
from imserver.service.queries import RegionLevel, Volume
from imserver.service.views import ChainView
from imserver.xmpp.commands.base import (
    Args,
    Cell,
    Column,
    Command,
    Field,
    Money,
    Result,
    Table,
    Text,
    int_arg,
    optional,
    required,
)
from imserver.xmpp.commands.membership import chain_details


class FindMember(Command):
    name = "Find a member"
    node = "find-member"
    keywords = ("find", "whois")
    help = "Find a member by JID or rule number, with its chains."
    capabilities = frozenset({Capability.MEMBER_FIND})
    fields = (Field("query", "JID or rule number"),)

    async def run(self, actor: str, args: Args) -> Result:
        found = await self.services.queries.find_member(actor, required(args, "query"))
        details = chain_details(ChainView(found.member, found.upline, found.agents))
        details.insert(5, ("Joined", found.joined.strftime("%Y-%m-%d")))
        details.append(("Direct referrals", found.direct_referrals))
        if found.agent_of:
            details.append(("Agent of", ", ".join(found.agent_of)))
        return Text(f"Member {found.member.rule_number}", details)


def volume_lines(volume: Volume) -> list[str]:
    """``CNY: 3 payments, ¥1,000.00 (¥100.00 refunded)`` per currency."""
    return [
        f"{c}: {n} payments, {Money(paid, c)}" + (f" ({Money(back, c)} refunded)" if back else "")
        for c, (n, paid, back) in sorted(volume.items())
    ]


def _level_row(r: RegionLevel, where: str) -> dict[str, Cell]:
    return {
        "where": where,
        "code": r.code,
        "name": r.name,
        "scope": r.scope,
        "agent": r.agent or "vacant",
        "members": r.members,
    }


class RegionOverviewCommand(Command):
    name = "Region overview"
    node = "region-overview"
    keywords = ("region",)
    help = "A region's agents and vacancies at each level, and its members."
    capabilities = frozenset({Capability.REGION_VIEW})
    fields = (Field("region", "Region code"),)

    async def run(self, actor: str, args: Args) -> Result:
        view = await self.services.queries.region_overview(actor, required(args, "region"))
        rows = [_level_row(view.region, "this")]
        rows += [_level_row(r, "above") for r in view.above]
        rows += [_level_row(r, "below") for r in view.below]
        r = view.region
        return Table(
            f"{r.name} {r.code} ({r.scope}): {r.members} members, agent {r.agent or 'vacant'}",
            [
                Column("where", "Where"),
                Column("code", "Code"),
                Column("name", "Name"),
                Column("scope", "Level"),
                Column("agent", "Agent"),
                Column("members", "Members"),
            ],
            rows,
            footer=f"{view.vacancies} vacant agent levels"
            + "".join(f"\nVolume {line}" for line in volume_lines(view.volume)),
        )


class RegionMembers(Command):
    name = "Region members"
    node = "region-members"
    keywords = ("members",)
    help = "The members of a region (agents: their own regions), 50 at a time."
    capabilities = frozenset({Capability.REGION_MEMBERS})
    fields = (
        Field("region", "Region code", required=False, desc="agents: empty for your region"),
        Field("offset", "Skip this many", "int", required=False),
    )

    async def run(self, actor: str, args: Args) -> Result:
        page = await self.services.queries.region_members(
            actor, optional(args, "region"), int_arg(args, "offset")
        )
        shown = len(page.members)
        footer = ""
        if page.offset + shown < page.total:
            footer = f"more: members {page.region} {page.offset + shown}"
        return Table(
            f"Members of {page.region}: {page.total}"
            + (f" (from {page.offset + 1})" if page.offset else ""),
            [
                Column("rule", "Rule number"),
                Column("jid", "JID"),
                Column("role", "Role"),
            ],
            [{"rule": m.rule_number, "jid": m.jid, "role": m.role} for m in page.members],
            footer=footer,
            empty="no members",
        )


class RegionEarnings(Command):
    name = "Region earnings"
    node = "region-earnings"
    keywords = ("earnings",)
    help = "An agent's earnings from a region's members, and what they paid there."
    capabilities = frozenset({Capability.REGION_MEMBERS})
    fields = (Field("region", "Region code", required=False, desc="agents: empty for your region"),)

    async def run(self, actor: str, args: Args) -> Result:
        view = await self.services.queries.region_earnings(actor, optional(args, "region"))
        details: list[tuple[str, Cell]] = [("Agent", view.agent or "vacant")]
        for currency, (n, earned) in sorted(view.earned.items()):
            details.append((f"Earned ({currency}, {n} payments)", Money(earned, currency)))
        if not view.earned:
            details.append(("Earned", "nothing yet"))
        return Text(
            f"Earnings in {view.region}",
            details,
            [f"Volume {line}" for line in volume_lines(view.volume)],
        )


class Statistics(Command):
    name = "Statistics"
    node = "statistics"
    keywords = ("stats", "statistics")
    help = "Members by role and status, agents, bots, policy version."
    capabilities = frozenset({Capability.STATS})

    async def run(self, actor: str, args: Args) -> Result:
        stats = await self.services.queries.statistics(actor)
        details: list[tuple[str, Cell]] = [("Active members", stats.active)]
        for (role, status), n in sorted(stats.members.items()):
            details.append((f"{role.capitalize()}s {status}", n))
        for currency, (n, paid, refunded) in sorted(stats.volume.items()):
            details.append((f"Payments {currency}", f"{n}, {Money(paid, currency)}"))
            details.append((f"Refunded {currency}", Money(refunded, currency)))
        details += [
            ("Regions with an agent", stats.agents),
            ("Bot JIDs", stats.bots),
            ("Policy version", stats.policy_version),
        ]
        return Text("Network statistics", details)
