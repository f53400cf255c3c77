"""The human interface: every command as an ad-hoc command and as a chat text command.

``install(component)`` builds the command set over the component's services and wires
both front-ends (:mod:`.adhoc`, :mod:`.chat`). A concern adds its commands by listing
their classes in :func:`command_classes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imserver.xmpp.commands.adhoc import AdHoc
from imserver.xmpp.commands.base import Command
from imserver.xmpp.commands.chat import Chat
from imserver.xmpp.commands.federation import Domains, SetTrust
from imserver.xmpp.commands.help import Help
from imserver.xmpp.commands.invites import Invite, InviteCounts, InviteStatistics
from imserver.xmpp.commands.membership import AddMerchant, AssignAgent, Chain, Join
from imserver.xmpp.commands.money import (
    Approve,
    Balance,
    LinkBot,
    Reject,
    Sales,
    SetPolicy,
    ShowPolicy,
    Statement,
    UnlinkBot,
    Withdraw,
    Withdrawals,
)
from imserver.xmpp.commands.queries import (
    FindMember,
    RegionEarnings,
    RegionMembers,
    RegionOverviewCommand,
    Statistics,
)
from imserver.xmpp.commands.registry import CommandSet
from imserver.xmpp.commands.repair import AuditLog, Delete, Reassign, Terminate

if TYPE_CHECKING:
    from imserver.service.registry import Services
    from imserver.xmpp.component import Component


def command_classes() -> list[type[Command]]:
    """Every command besides help, in the order help lists them (users' first)."""
    return [
        Join,
        Chain,
        Invite,
        InviteCounts,
        Balance,
        Statement,
        Withdraw,
        Withdrawals,
        ShowPolicy,
        LinkBot,
        UnlinkBot,
        Sales,
        FindMember,
        AddMerchant,
        AssignAgent,
        RegionOverviewCommand,
        RegionMembers,
        RegionEarnings,
        Statistics,
        InviteStatistics,
        Terminate,
        Delete,
        Reassign,
        AuditLog,
        Approve,
        Reject,
        SetPolicy,
        SetTrust,
        Domains,
    ]


def build(services: Services) -> CommandSet:
    """The command set of one component."""
    commands = CommandSet(cls(services) for cls in command_classes())
    commands.add(Help(services, commands))
    return commands


def install(component: Component) -> None:
    """Offer every command over XEP-0050 and as chat text."""
    commands = build(component.services)
    AdHoc(component, commands)
    Chat(component, commands)
