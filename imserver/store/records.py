"""Plain records that leave the store (rows never do)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class MemberRecord:
    id: int
    jid: str
    rule_number: str
    role: str
    region_code: str
    referrer_id: int | None
    status: str
    name: str | None
    created_at: datetime

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class RegionRecord:
    code: str
    name: str
    level: int
    parent_code: str | None
    successor_code: str | None


@dataclass(frozen=True)
class UplineLink:
    level: int
    member_id: int
    jid: str
    rule_number: str


@dataclass(frozen=True)
class AgencyView:
    scope_level: int
    region_code: str
    agent_id: int | None
    agent_jid: str | None


@dataclass(frozen=True)
class ChainMember:
    """A beneficiary on a stored chain: its id, JID and whether it is active."""

    member_id: int
    jid: str
    active: bool


@dataclass(frozen=True)
class PayerChain:
    """What a payment needs of its payer: the member, its upline (nearest first, up to
    the asked levels) and its agency chain (scope level, agent or None; district first)."""

    member: MemberRecord
    upline: tuple[ChainMember, ...]
    agency: tuple[tuple[int, ChainMember | None], ...]
