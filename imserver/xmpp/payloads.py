"""Service views written into the protocol's answer payloads, one writer per element.

In the order of the stanza classes of ``plugins/distribution/stanza.py`` (the plugin is
shared with bots and may not know the service's views, so the writers live here). The
hot answer, a payment's or refund's ``<distribution/>``, is written as text
(:mod:`imserver.xmpp.rawxml`); the others fill slixmpp stanza objects.
"""

from __future__ import annotations

import json
from datetime import UTC
from xml.etree import ElementTree as ET

from slixmpp.xmlstream import ElementBase

from imserver.domain.chains import SCOPES
from imserver.service.locations import NearBorder, candidate_json, geo_uri, osm_url
from imserver.service.money_views import (
    BalanceView,
    BotView,
    DistributionView,
    PolicyView,
    StatementPage,
    WithdrawalView,
)
from imserver.service.repair import AuditPage, AuditRecord, RepairView
from imserver.service.views import ChainView, MemberView
from imserver.xmpp.rawxml import element
from plugins.distribution import NS
from plugins.distribution.stanza import Amount, AuditItem, Entry, Link, Withdrawal

# -- <member/> ----------------------------------------------------------------------------


def fill_member(el: ElementBase, m: MemberView) -> None:
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


def candidates_element(refusal: NearBorder) -> ET.Element:
    """The ``<candidates/>`` of a location refused near a border: the point (WGS-84) and
    one ``<region/>`` per district it may lie in, with its distance and map links."""
    resolved = refusal.resolved
    lat, lon = resolved.point or (0.0, 0.0)
    el = ET.Element(
        f"{{{NS}}}candidates",
        {
            "lat": f"{lat:.6f}",
            "lon": f"{lon:.6f}",
            "band-km": f"{resolved.band_km or 0:g}",
            "geo": geo_uri(lat, lon),
            "osm": osm_url(lat, lon),
        },
    )
    for candidate in resolved.candidates:
        data = candidate_json(candidate)
        ET.SubElement(
            el,
            f"{{{NS}}}region",
            {
                "code": data["code"],
                "name": data["full_name"],
                "km": f"{candidate.km:.3f}",
                "geo": data["geo"],
                "osm": data["osm"],
            },
        )
    return el


def fill_repair(el: ElementBase, view: RepairView) -> None:
    """The member's ``<member/>`` plus what the repair changed (additive attributes)."""
    fill_member(el, view.member)
    el["repaired"] = str(view.repaired)
    el["reattached"] = str(view.reattached)
    if view.vacated:
        el["vacated"] = " ".join(view.vacated)


# -- <chain/> -----------------------------------------------------------------------------


def fill_chain(el: ElementBase, view: ChainView) -> None:
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


# -- <audit/> and its <entry/> ------------------------------------------------------------


def fill_audit_entry(item: ElementBase, entry: AuditRecord) -> None:
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


def fill_audit(el: ElementBase, page: AuditPage) -> None:
    """An ``<audit/>`` answer: entries newest first."""
    for entry in page.entries:
        item = AuditItem()
        fill_audit_entry(item, entry)
        el.append(item)


# -- <distribution/> (text: the hot answer) -----------------------------------------------


def member_xml(view: MemberView) -> str:
    """A MemberView as its ``<member/>`` element (serialised), as ``fill_member`` fills it."""
    return element(
        "member",
        (
            ("xmlns", NS),
            ("jid", view.jid),
            ("role", view.role),
            ("rule-number", view.rule_number),
            ("region", view.region),
            ("status", view.status),
            ("referrer", view.referrer or None),
            ("name", view.name or None),
        ),
    )


def distribution_xml(view: DistributionView) -> str:
    """A DistributionView as its ``<distribution/>`` element (serialised)."""
    shares = "".join(
        element(
            "share",
            (
                ("role", s.role),
                ("level", s.level),
                ("scope", s.scope or None),
                ("jid", s.jid or None),
                ("amount", s.amount),
            ),
        )
        for s in view.shares
    )
    head = (
        ("xmlns", NS),
        ("payment", view.payment),
        ("refund", view.refund or None),
        ("merchant", view.merchant),
        ("amount", view.amount),
        ("currency", view.currency),
        ("policy", view.policy),
    )
    return element("distribution", head, shares)


# -- <balance/> ---------------------------------------------------------------------------


def fill_balance(el: ElementBase, view: BalanceView) -> None:
    """Write a BalanceView into a ``<balance/>`` element (one ``<amount/>`` per currency)."""
    el["jid"] = view.jid
    for line in view.lines:
        amount = Amount()
        amount["currency"] = line.currency
        amount["pending"] = str(line.pending)
        amount["available"] = str(line.available)
        amount["reserved"] = str(line.reserved)
        el.append(amount)


# -- <bot/> -------------------------------------------------------------------------------


def fill_bot(el: ElementBase, view: BotView) -> None:
    """Write a BotView into a ``<bot/>`` element."""
    el["jid"], el["merchant"] = view.jid, view.merchant
    el["status"] = "linked" if view.linked else "unlinked"


# -- <policy/> ----------------------------------------------------------------------------


def fill_policy(el: ElementBase, view: PolicyView) -> None:
    """Write a PolicyView into a ``<policy/>`` element."""
    el["version"] = str(view.version)
    el["pool-bp"] = str(view.pool_bp)
    el["referral-bp"] = " ".join(str(x) for x in view.referral_bp)
    el["district-bp"], el["city-bp"], el["province-bp"] = (str(x) for x in view.agent_bp)
    el["allow-third-level"] = "true" if view.allow_third_level else "false"


# -- <statement/> -------------------------------------------------------------------------


def fill_statement(el: ElementBase, page: StatementPage) -> None:
    """Write a page of entries and its XEP-0059 ``<set/>``."""
    for line in page.lines:
        entry = Entry()
        entry["id"] = str(line.id)
        entry["at"] = line.at.isoformat()
        entry["kind"] = line.kind
        entry["bucket"] = line.bucket
        entry["amount"] = str(line.amount)
        entry["currency"] = line.currency
        if line.payment:
            entry["payment"] = line.payment
        if line.refund:
            entry["refund"] = line.refund
        if line.withdrawal is not None:
            entry["withdrawal"] = str(line.withdrawal)
        el.append(entry)
    rsm = el["rsm"]
    if page.lines:
        rsm["first"] = str(page.lines[0].id)
        rsm["first_index"] = str(page.first_index)
        rsm["last"] = str(page.lines[-1].id)
    rsm["count"] = str(page.count)


# -- <withdrawal/> and <withdrawals/> -----------------------------------------------------


def fill_withdrawal(el: ElementBase, view: WithdrawalView) -> None:
    """Write a WithdrawalView into a ``<withdrawal/>`` element."""
    el["id"] = str(view.id)
    if view.ref:
        el["ref"] = view.ref
    el["jid"] = view.jid
    el["amount"] = str(view.amount)
    el["currency"] = view.currency
    el["status"] = view.status
    el["at"] = view.created_at.isoformat()
    if view.reason:
        el["reason"] = view.reason


def fill_withdrawals(el: ElementBase, views: list[WithdrawalView]) -> None:
    """A ``<withdrawals/>`` listing: one ``<withdrawal/>`` per view."""
    for view in views:
        item = Withdrawal()
        fill_withdrawal(item, view)
        el.append(item)
