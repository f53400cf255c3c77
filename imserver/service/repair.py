"""Admin use cases that change the network's shape: terminate, delete, reassign; the audit log.

Each use case is one transaction: the member's status, every chain repair and the audit
entry commit together, before the answer is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imserver.domain import chains
from imserver.service.authz import Capability, resolve_actor
from imserver.service.context import Context
from imserver.service.errors import (
    bad_request,
    conflict,
    not_acceptable,
    not_found,
)
from imserver.service.inputs import parse_jid, parse_positive_int, parse_reason
from imserver.service.membership import find_referrer
from imserver.service.views import MemberView, member_view
from imserver.store import audit, members
from imserver.store import repair as store
from imserver.store.audit import AuditRecord
from imserver.store.db import Conn
from imserver.store.records import MemberRecord

__all__ = ["AuditPage", "AuditRecord", "Repair", "RepairView", "parse_reason"]

DEFAULT_PAGE = 50
MAX_PAGE = 200


@dataclass(frozen=True)
class RepairView:
    """The answer of terminate, delete and reassign: the member and what was repaired."""

    member: MemberView
    repaired: int = 0  # stored chains rewritten
    reattached: int = 0  # direct referrals moved to the member's upline
    vacated: tuple[str, ...] = ()  # regions whose agent level is now vacant


@dataclass(frozen=True)
class AuditPage:
    """Audit entries, newest first; ask again with ``before`` = the last id for more."""

    entries: list[AuditRecord] = field(default_factory=list)


class Repair:
    """terminate, delete and reassign (admin only), with chain repair; the audit log."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def terminate(self, sender: str, jid: str | None, reason: str | None) -> RepairView:
        """End a member's service: it keeps its history and leaves every live chain."""
        return await self._end(sender, jid, reason, "terminated")

    async def delete(self, sender: str, jid: str | None, reason: str | None) -> RepairView:
        """Terminate (if not yet) and erase personal data: the JID becomes a pseudonym."""
        return await self._end(sender, jid, reason, "deleted")

    async def _end(
        self, sender: str, jid: str | None, raw_reason: str | None, status: str
    ) -> RepairView:
        target_jid = parse_jid(jid, "jid")
        reason = parse_reason(raw_reason, required=False)
        capability = (
            Capability.MEMBER_TERMINATE if status == "terminated" else Capability.MEMBER_DELETE
        )

        async def use_case(conn: Conn) -> RepairView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(capability)
            found = await members.get_by_jid(conn, target_jid)
            if found is None:
                raise not_found(f"{target_jid} is not a member")
            member, _upline = await store.lock_line(conn, found.id, exclusive=True, as_read=found)
            if member.status == "deleted" or (status == "terminated" and not member.active):
                raise conflict(f"{target_jid} is already {member.status}")
            now = self.ctx.clock()
            referrer = await self._jid_of(conn, member.referrer_id)
            repaired = (
                await store.remove_from_chains(conn, member)
                if member.active
                else store.Repaired(0, 0)
            )
            details: dict[str, object] = {
                "rule_number": member.rule_number,
                "was": member.status,
                "chains": repaired.chains,
                "reattached": repaired.children,
            }
            if repaired.vacated:
                details["vacated"] = list(repaired.vacated)
            if status == "terminated":
                await store.mark_ended(conn, member.id, "terminated", now)
                shown = target_jid
            else:
                # Erase first, so that no entry written below holds the JID.
                shown = await store.erase(conn, member, self.ctx.erased_hash(target_jid), now)
            await audit.record(
                conn,
                at=now,
                actor=sender,
                action=f"member.{'terminate' if status == 'terminated' else 'delete'}",
                target=shown,
                details=details,
                reason=reason,
            )
            ended = await members.get_by_id(conn, member.id)
            assert ended is not None
            return RepairView(
                member_view(ended, referrer),
                repaired.chains,
                repaired.children,
                repaired.vacated,
            )

        return await self.ctx.db.transaction(use_case)

    async def reassign(
        self, sender: str, jid: str | None, referrer: str | None, raw_reason: str | None
    ) -> RepairView:
        """Move a member, with its whole downline, under another referrer."""
        member_jid = parse_jid(jid, "jid")
        ref_jid = parse_jid(referrer, "referrer")
        if ref_jid == member_jid:
            raise bad_request("a member cannot be its own referrer")
        reason = parse_reason(raw_reason, required=True)

        async def use_case(conn: Conn) -> RepairView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.MEMBER_REASSIGN)
            found = await members.get_by_jid(conn, member_jid)
            if found is None:
                raise not_found(f"{member_jid} is not a member")
            ref_found = await find_referrer(conn, self.ctx, ref_jid)
            # The new referrer's line first, then the member: both top-down.
            ref, ref_upline = await store.lock_line(conn, ref_found.id, as_read=ref_found)
            member, _upline = await store.lock_line(conn, found.id, exclusive=True, as_read=found)
            if not member.active:
                raise not_acceptable(f"{member_jid} is {member.status}")
            if not ref.active:
                raise not_acceptable(f"referrer {ref_jid} is {ref.status}")
            try:
                chains.check_no_cycle(member.id, ref.id, await store.ancestor_line(conn, ref.id))
            except chains.ChainError:
                raise not_acceptable(
                    f"{ref_jid} is in {member_jid}'s own downline: that would make a cycle"
                ) from None
            if member.referrer_id == ref.id:
                return RepairView(member_view(member, ref.jid))
            previous = await self._jid_of(conn, member.referrer_id)
            new_upline = chains.upline_below(ref.id, ref_upline)
            repaired = await store.move_under(conn, member.id, ref.id, new_upline)
            await audit.record(
                conn,
                at=self.ctx.clock(),
                actor=sender,
                action="member.reassign",
                target=member_jid,
                details={"from": previous, "to": ref.jid, "chains": repaired.chains},
                reason=reason,
            )
            moved = await members.get_by_id(conn, member.id)
            assert moved is not None
            return RepairView(member_view(moved, ref.jid), repaired.chains)

        return await self.ctx.db.transaction(use_case)

    async def audit_log(
        self, sender: str, max_entries: str | None, before: str | None
    ) -> AuditPage:
        """A page of the audit log, newest first (admins only)."""
        limit = parse_positive_int(max_entries, "max", DEFAULT_PAGE)
        assert limit is not None
        if limit > MAX_PAGE:
            raise bad_request(f"max is at most {MAX_PAGE}")
        before_id = parse_positive_int(before, "before", None)

        async def use_case(conn: Conn) -> AuditPage:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.AUDIT_READ)
            return AuditPage(await audit.recent(conn, limit=limit, before_id=before_id))

        return await self.ctx.db.transaction(use_case)

    @staticmethod
    async def _jid_of(conn: Conn, member_id: int | None) -> str | None:
        if member_id is None:
            return None
        found: MemberRecord | None = await members.get_by_id(conn, member_id)
        return found.jid if found else None
