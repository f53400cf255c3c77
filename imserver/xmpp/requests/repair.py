"""terminate, delete, reassign (admin) and the audit log."""

from __future__ import annotations

import json
from datetime import UTC
from typing import TYPE_CHECKING, Any

from imserver.service.repair import AuditPage, AuditRecord, RepairView
from imserver.xmpp.translate import fill_member
from plugins.distribution.stanza import AuditItem

if TYPE_CHECKING:
    from imserver.xmpp.component import Component


def fill_repair(el: Any, view: RepairView) -> None:
    """The member's ``<member/>`` plus what the repair changed (additive attributes)."""
    fill_member(el, view.member)
    el["repaired"] = str(view.repaired)
    el["reattached"] = str(view.reattached)
    if view.vacated:
        el["vacated"] = " ".join(view.vacated)


def fill_entry(item: Any, entry: AuditRecord) -> None:
    """One ``<entry/>`` of the audit log; the details JSON is its text."""
    at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=UTC)  # SQLite drops the zone
    item["id"] = str(entry.id)
    item["at"] = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    item["actor"] = entry.actor
    item["action"] = entry.action
    if entry.target:
        item["target"] = entry.target
    if entry.reason:
        item["reason"] = entry.reason
    if entry.details:
        item["details"] = json.dumps(entry.details, ensure_ascii=False, sort_keys=True)


def fill_audit(el: Any, page: AuditPage) -> None:
    """An ``<audit/>`` answer: entries newest first."""
    for entry in page.entries:
        item = AuditItem()
        fill_entry(item, entry)
        el.append(item)


def install(component: Component) -> None:
    """Route this module's payloads to the repair service."""
    repair = component.services.repair

    async def terminate(iq: Any, sender: str) -> None:
        t = iq["terminate"]
        view = await repair.terminate(sender, t["jid"], t["reason"] or None)
        reply = iq.reply(clear=True)
        fill_repair(reply["member"], view)
        reply.send()

    async def delete(iq: Any, sender: str) -> None:
        d = iq["delete"]
        view = await repair.delete(sender, d["jid"], d["reason"] or None)
        reply = iq.reply(clear=True)
        fill_repair(reply["member"], view)
        reply.send()

    async def reassign(iq: Any, sender: str) -> None:
        r = iq["reassign"]
        view = await repair.reassign(sender, r["jid"], r["referrer"], r["reason"] or None)
        reply = iq.reply(clear=True)
        fill_repair(reply["member"], view)
        reply.send()

    async def audit(iq: Any, sender: str) -> None:
        a = iq["audit"]
        page = await repair.audit_log(sender, a["max"] or None, a["before"] or None)
        reply = iq.reply(clear=True)
        fill_audit(reply["audit"], page)
        reply.send()

    component.route("set", "terminate", terminate)
    component.route("set", "delete", delete)
    component.route("set", "reassign", reassign)
    component.route("get", "audit", audit)
