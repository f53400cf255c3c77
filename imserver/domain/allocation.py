"""Exact splits in integer minor units (largest-remainder, fixed tie order)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from imserver.domain.policy import BP, Policy


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to non-negative integer ``weights``, exactly.

    Each part is the floor or the ceiling of its exact value; the leftover units go to the
    largest remainders, ties to the earlier weight. The parts sum to ``total``.
    """
    if total < 0:
        raise ValueError("total must not be negative")
    denominator = sum(weights)
    if any(w < 0 for w in weights) or denominator <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    parts = []
    remainders = []
    for i, w in enumerate(weights):
        q, r = divmod(total * w, denominator)
        parts.append(q)
        remainders.append((-r, i))
    leftover = total - sum(parts)
    for _, i in sorted(remainders)[:leftover]:
        parts[i] += 1
    return parts


class Share(NamedTuple):
    """One beneficiary's part of a payment (negative in a refund)."""

    role: str  # referrer | agent | platform | merchant
    amount: int
    member_id: int | None = None
    level: int | None = None  # referral level
    scope: str | None = None  # agent scope


def allocate(
    amount: int,
    policy: Policy,
    upline: Sequence[int | None],
    agents: Sequence[tuple[str, int | None]],
    merchant_id: int,
) -> list[Share]:
    """Split a payment among upline, agents, platform and merchant.

    ``upline`` lists the referral ancestors nearest first (only ``policy.levels`` are paid);
    ``agents`` lists (scope, agent id or None) district first. Vacant levels go to the
    platform. Shares are in the fixed order referrers, agents, platform, merchant; zero
    shares of members are kept out.
    """
    if amount <= 0:
        raise ValueError("amount must be positive")
    scale = BP * BP  # weights are in 1/BP² of the amount
    slots: list[Share] = []
    weights: list[int] = []
    paid = 0
    for level, bp in enumerate(policy.referral_bp, start=1):
        member = upline[level - 1] if level - 1 < len(upline) else None
        if member is not None:
            slots.append(Share("referrer", 0, member, level=level))
            weights.append(policy.pool_bp * bp)
            paid += policy.pool_bp * bp
    agent_bp = dict(zip(("district", "city", "province"), policy.agent_bp, strict=True))
    for scope, agent in agents:
        if agent is not None and scope in agent_bp:
            slots.append(Share("agent", 0, agent, scope=scope))
            weights.append(policy.pool_bp * agent_bp[scope])
            paid += policy.pool_bp * agent_bp[scope]
    slots.append(Share("platform", 0))
    weights.append(policy.pool_bp * BP - paid)
    slots.append(Share("merchant", 0, merchant_id))
    weights.append((BP - policy.pool_bp) * BP)
    assert sum(weights) == scale
    parts = largest_remainder(amount, weights)
    return [
        Share(s.role, part, s.member_id, s.level, s.scope)
        for s, part in zip(slots, parts, strict=True)
        if part or s.role in ("platform", "merchant")
    ]


def reverse(refund: int, remaining: Sequence[int]) -> list[int]:
    """Split a refund over the shares still unrefunded, in proportion.

    Each part is at most its remaining share; a refund of everything left returns each
    remaining share exactly.
    """
    left = sum(remaining)
    if not 0 < refund <= left:
        raise ValueError("refund must be positive and at most what is left to refund")
    return largest_remainder(refund, remaining)
