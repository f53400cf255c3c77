"""Commands over the repair service: terminate, delete, reassign; the audit log."""

from __future__ import annotations

from imserver.service.authz import Capability
from imserver.service.repair import RepairView
from imserver.xmpp.commands.base import (
    Args,
    Cell,
    Column,
    Command,
    Confirmation,
    Field,
    Result,
    Table,
    Text,
    optional,
    required,
)
from imserver.xmpp.commands.membership import member_details

CHAT_AUDIT_PAGE = 20  # entries per chat answer (ad-hoc shows the service's default)


def repair_details(view: RepairView) -> list[tuple[str, Cell]]:
    """The member after the change, and what the repair touched."""
    rows = member_details(view.member)
    rows += [("Chains repaired", view.repaired), ("Referrals re-attached", view.reattached)]
    if view.vacated:
        rows.append(("Agent levels vacated", ", ".join(view.vacated)))
    return rows


async def _describe(command: Command, actor: str, jid: str) -> str:
    """``jid (rule number, role, N direct referrals)`` for a confirmation prompt."""
    found = await command.services.queries.find_member(actor, jid)
    m = found.member
    return f"{m.jid} ({m.rule_number}, {m.role}, {found.direct_referrals} direct referrals)"


class Terminate(Command):
    name = "Terminate a member"
    node = "terminate"
    keywords = ("terminate",)
    help = "End a member's service; its referrals move up to its upline."
    capabilities = frozenset({Capability.MEMBER_TERMINATE})
    fields = (
        Field("jid", "Member's JID", "jid"),
        Field("reason", "Reason", required=False, rest=True),
    )
    confirms = True

    async def run(self, actor: str, args: Args) -> Result:
        jid, reason = required(args, "jid"), optional(args, "reason")
        who = await _describe(self, actor, jid)

        async def proceed() -> Result:
            view = await self.services.repair.terminate(actor, jid, reason)
            return Text(f"Terminated {view.member.jid}.", repair_details(view))

        return Confirmation(
            f"Terminate {who}? It keeps its history and earns nothing more.", proceed
        )


class Delete(Command):
    name = "Delete a member"
    node = "delete"
    keywords = ("delete",)
    help = "Delete a member and erase its personal data (its JID becomes a pseudonym)."
    capabilities = frozenset({Capability.MEMBER_DELETE})
    fields = (
        Field("jid", "Member's JID", "jid"),
        Field("reason", "Reason", required=False, rest=True),
    )
    confirms = True

    async def run(self, actor: str, args: Args) -> Result:
        jid, reason = required(args, "jid"), optional(args, "reason")
        who = await _describe(self, actor, jid)

        async def proceed() -> Result:
            view = await self.services.repair.delete(actor, jid, reason)
            return Text(f"Deleted {jid}; now known as {view.member.jid}.", repair_details(view))

        return Confirmation(f"Delete {who} and erase its personal data? No undo.", proceed)


class Reassign(Command):
    name = "Reassign a member"
    node = "reassign"
    keywords = ("reassign", "move")
    help = "Move a member, with its downline, under another referrer (a reason is required)."
    capabilities = frozenset({Capability.MEMBER_REASSIGN})
    fields = (
        Field("jid", "Member's JID", "jid"),
        Field("referrer", "New referrer's JID", "jid"),
        Field("reason", "Reason", rest=True),
    )

    async def run(self, actor: str, args: Args) -> Result:
        view = await self.services.repair.reassign(
            actor, required(args, "jid"), required(args, "referrer"), required(args, "reason")
        )
        return Text(
            f"{view.member.jid} is now under {view.member.referrer}.",
            [*member_details(view.member), ("Chains repaired", view.repaired)],
        )


class AuditLog(Command):
    name = "Audit log"
    node = "audit"
    keywords = ("audit", "audit log")
    help = "Admin actions, newest first: who, when, what, why."
    capabilities = frozenset({Capability.AUDIT_READ})
    fields = (
        Field("max", "How many", "int", required=False),
        Field("before", "Older than entry number", "int", required=False),
    )

    async def run(self, actor: str, args: Args) -> Result:
        limit = optional(args, "max") or str(CHAT_AUDIT_PAGE)
        page = await self.services.repair.audit_log(actor, limit, optional(args, "before"))
        rows: list[dict[str, Cell]] = [
            {
                "id": f"#{e.id}",
                "at": e.at.strftime("%Y-%m-%d %H:%M"),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "reason": e.reason,
            }
            for e in page.entries
        ]
        more = ""
        # The service accepted ``limit`` as a positive integer.
        if page.entries and len(page.entries) >= int(limit):
            more = f"more: audit before={page.entries[-1].id}"
        return Table(
            "Audit log, newest first",
            [
                Column("id", "Entry"),
                Column("at", "When (UTC)"),
                Column("actor", "Who"),
                Column("action", "What"),
                Column("target", "On"),
                Column("reason", "Why"),
            ],
            rows,
            footer=more,
            empty="no entries",
        )
