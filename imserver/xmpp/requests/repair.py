"""terminate, delete, reassign (admin) and the audit log: the routes."""

from __future__ import annotations

from typing import Any

from imserver.xmpp.payloads import fill_audit, fill_repair
from imserver.xmpp.routing import Route, forward, reply_with

ROUTES: list[Route[Any]] = [
    Route(
        "set",
        "terminate",
        forward("terminate", lambda s: s.repair.terminate, "jid", "reason"),
        reply_with("member", fill_repair),
    ),
    Route(
        "set",
        "delete",
        forward("delete", lambda s: s.repair.delete, "jid", "reason"),
        reply_with("member", fill_repair),
    ),
    Route(
        "set",
        "reassign",
        forward("reassign", lambda s: s.repair.reassign, "jid", "referrer", "reason"),
        reply_with("member", fill_repair),
    ),
    Route(
        "get",
        "audit",
        forward("audit", lambda s: s.repair.audit_log, "max", "before"),
        reply_with("audit", fill_audit),
    ),
]
