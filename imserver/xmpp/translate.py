"""Service views -> stanza payloads."""

from __future__ import annotations

from typing import Any

from imserver.domain.chains import SCOPES
from imserver.service.views import ChainView, MemberView
from plugins.distribution.stanza import Link


def fill_member(el: Any, m: MemberView) -> None:
    """Write a MemberView into a ``<member/>`` element."""
    el["jid"] = m.jid
    el["role"] = m.role
    el["rule-number"] = m.rule_number
    el["region"] = m.region
    el["status"] = m.status
    if m.referrer:
        el["referrer"] = m.referrer
    if m.name:
        el["name"] = m.name


def fill_chain(el: Any, view: ChainView) -> None:
    """Write a ChainView into a ``<chain/>`` element."""
    el["jid"] = view.member.jid
    fill_member(el["member"], view.member)
    upline = el["upline"]
    for u in view.upline:
        link = Link()
        link["level"] = str(u.level)
        link["jid"] = u.jid
        link["rule-number"] = u.rule_number
        upline.append(link)
    agents = el["agents"]
    for a in view.agents:
        link = Link()
        link["scope"] = SCOPES[a.scope_level]
        link["region"] = a.region_code
        if a.agent_jid:
            link["jid"] = a.agent_jid
        agents.append(link)
