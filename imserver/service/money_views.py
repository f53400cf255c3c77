"""Answers of the payment use cases: plain dataclasses the XMPP layer turns into stanzas."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from imserver.store.ledger import StatementEntry
from imserver.store.payments import ShareRecord


class ShareView(NamedTuple):
    """One line of a distribution (negative in a refund)."""

    role: str
    amount: int
    jid: str | None = None
    level: int | None = None
    scope: str | None = None


@dataclass(frozen=True)
class DistributionView:
    """A payment's split, or a refund's reversal (``refund`` set, amounts negative)."""

    payment: str
    merchant: str
    amount: int
    currency: str
    policy: int
    shares: list[ShareView]
    refund: str | None = None


def share_views(shares: list[ShareRecord], amounts: list[int] | None = None) -> list[ShareView]:
    """Views of stored shares; ``amounts`` replaces their amounts (a refund's parts).

    Members' zero amounts are left out; the platform and the merchant always appear.
    """
    out = []
    for i, s in enumerate(shares):
        amount = s.amount if amounts is None else amounts[i]
        if amount == 0 and s.role not in ("platform", "merchant"):
            continue
        jid = None if s.role == "platform" else s.jid
        out.append(ShareView(s.role, amount, jid, s.level, s.scope))
    return out


@dataclass(frozen=True)
class BalanceLine:
    currency: str
    pending: int
    available: int
    reserved: int


@dataclass(frozen=True)
class BalanceView:
    jid: str
    lines: list[BalanceLine]


@dataclass(frozen=True)
class StatementPage:
    """A page of entries with XEP-0059 bookkeeping."""

    lines: list[StatementEntry]
    count: int
    first_index: int


@dataclass(frozen=True)
class WithdrawalView:
    id: int
    jid: str
    amount: int
    currency: str
    status: str
    created_at: datetime
    ref: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class BotView:
    jid: str
    merchant: str
    linked: bool


@dataclass(frozen=True)
class PolicyView:
    version: int
    pool_bp: int
    referral_bp: tuple[int, ...]
    agent_bp: tuple[int, int, int]
    allow_third_level: bool


@dataclass(frozen=True)
class Notice:
    """One chat message to send: a member's coalesced earnings."""

    ids: list[int]
    recipient: str
    body: str
    earnings: list[dict[str, str]] = field(default_factory=list)
    # The message's id: the lowest outbox row id it was first sent with (kept on repeats).
    message_id: int = 0
