"""Answers of the service: plain dataclasses, translated to stanzas by the XMPP layer."""

from __future__ import annotations

from dataclasses import dataclass, field

from imserver.store.records import AgencyView, MemberRecord, UplineLink


@dataclass(frozen=True)
class MemberView:
    jid: str
    role: str
    rule_number: str
    region: str
    referrer: str | None
    status: str
    name: str | None = None


@dataclass(frozen=True)
class ChainView:
    member: MemberView
    upline: list[UplineLink] = field(default_factory=list)
    agents: list[AgencyView] = field(default_factory=list)


def member_view(m: MemberRecord, referrer_jid: str | None) -> MemberView:
    """The public view of a member record."""
    return MemberView(m.jid, m.role, m.rule_number, m.region_code, referrer_jid, m.status, m.name)
