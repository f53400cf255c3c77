"""Commands over invites: a member's invite link and poster, and registrations per invite."""

from __future__ import annotations

from imserver.service.authz import Capability
from imserver.xmpp.commands.base import (
    Args,
    Cell,
    Column,
    Command,
    Field,
    Result,
    Table,
    Text,
    int_arg,
    optional,
)

_JID = Field(
    "jid", "Member's JID", "jid", required=False, desc="empty: your own (admins: anyone's)"
)


class Invite(Command):
    name = "My invite"
    node = "invite"
    keywords = ("invite", "my invite")
    help = "Your invite link (and poster): whoever opens it and sends joins under you."
    capabilities = frozenset({Capability.INVITE_OWN, Capability.INVITE_ANY})
    fields = (_JID,)

    async def run(self, actor: str, args: Args) -> Result:
        invite = await self.services.invites.invite(actor, optional(args, "jid"))
        details: list[tuple[str, Cell]] = [("Invite", invite.uri), ("Code", invite.code)]
        if invite.poster_pdf and invite.poster_png:
            details += [("Poster to print", invite.poster_pdf), ("Poster image", invite.poster_png)]
        return Text(
            f"Invite of {invite.code}: share the link, or put the poster up.",
            details,
            [f"Or tell people to send 'join {invite.code}' to this service."],
        )


class InviteCounts(Command):
    name = "Registrations through my invite"
    node = "invites"
    keywords = ("invites", "my invites")
    help = "How many joined through your invite, and how many of them are still active."
    capabilities = frozenset({Capability.INVITE_OWN, Capability.INVITE_ANY})
    fields = (_JID,)

    async def run(self, actor: str, args: Args) -> Result:
        stats = await self.services.invites.statistics(actor, optional(args, "jid"))
        last = stats.last_at.strftime("%Y-%m-%d %H:%M UTC") if stats.last_at else "nobody yet"
        return Text(
            f"{stats.registrations} joined through invite {stats.invite.code}",
            [
                ("Registrations", stats.registrations),
                ("Still active", stats.active),
                ("Last joined", last),
                ("Invite", stats.invite.uri),
            ],
        )


class InviteStatistics(Command):
    name = "Invite statistics"
    node = "invite-statistics"
    keywords = ("invite stats", "invite statistics")
    help = "The invites with the most registrations (by code or JID), for admins."
    capabilities = frozenset({Capability.INVITE_STATS})
    fields = (Field("max", "How many invites", "int", required=False, desc="20 by default"),)

    async def run(self, actor: str, args: Args) -> Result:
        table = await self.services.invites.top(actor, int_arg(args, "max", 20))
        return Table(
            f"Invites by registrations ({table.total} registrations through invites)",
            [
                Column("code", "Invite code"),
                Column("jid", "Member"),
                Column("name", "Name"),
                Column("status", "Status"),
                Column("registrations", "Registrations"),
                Column("active", "Still active"),
                Column("last", "Last joined"),
            ],
            [
                {
                    "code": row.rule_number,
                    "jid": row.jid,
                    "name": row.name,
                    "status": row.status,
                    "registrations": row.registrations,
                    "active": row.active,
                    "last": row.last_at.strftime("%Y-%m-%d") if row.last_at else None,
                }
                for row in table.rows
            ],
            empty="nobody joined through an invite yet",
        )
