"""Referral and agency chains: how they are built at registration and repaired.

The stored referral upline of a member is the list of its live ancestors, nearest first,
cut at MAX_LEVELS (the most any policy may pay). The agency chain is the region's
(district, city, province) agents, a vacant level being ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from imserver.domain.policy import MAX_LEVELS

SCOPES = {1: "province", 2: "city", 3: "district"}
SCOPE_LEVELS = {v: k for k, v in SCOPES.items()}


class ChainError(ValueError):
    """A chain change that the rules forbid (a cycle, a self-referral)."""


@dataclass(frozen=True)
class AgencyLink:
    """One level of a region's agency chain."""

    scope: str  # district | city | province
    region: str
    agent_id: int | None


def upline_below(referrer_id: int, referrer_upline: Sequence[int]) -> list[int]:
    """The upline of a member whose direct referrer is ``referrer_id``."""
    return [referrer_id, *referrer_upline][:MAX_LEVELS]


def check_no_cycle(member_id: int, new_parent_id: int, parent_ancestors: Sequence[int]) -> None:
    """Raise ChainError if attaching ``member_id`` under ``new_parent_id`` makes a cycle.

    ``parent_ancestors`` is the whole ancestor line of the new parent, not only the
    stored levels.
    """
    if member_id == new_parent_id or member_id in parent_ancestors:
        raise ChainError("that referrer is in the member's own downline: it would make a cycle")


def agency_chain(
    region_line: Sequence[tuple[str, int]], agents: Mapping[str, int]
) -> list[AgencyLink]:
    """The agency chain of a region, district first.

    ``region_line`` is the region and its ancestors as (code, level) pairs, any order;
    ``agents`` maps region codes to their active agent's member id.
    """
    links = [
        AgencyLink(SCOPES[level], code, agents.get(code))
        for code, level in region_line
        if level in SCOPES
    ]
    return sorted(links, key=lambda link: -SCOPE_LEVELS[link.scope])


def repaired_upline(
    upline: Sequence[int], removed: int, removed_upline: Sequence[int]
) -> list[int]:
    """The upline of a member after ``removed`` leaves every live chain.

    The removed member's place is taken by its own upline (so its direct referrals are
    re-attached to its nearest active upline). Used as the reference the SQL repair is
    tested against.
    """
    if removed not in upline:
        return list(upline)
    k = upline.index(removed)
    return [*upline[:k], *removed_upline][:MAX_LEVELS]


def moved_upline(upline: Sequence[int], moved: int, moved_new_upline: Sequence[int]) -> list[int]:
    """The upline of a member after its ancestor ``moved`` is put under another referrer,
    ``moved_new_upline`` being the moved member's new upline.

    Everything above the moved member is replaced by its new line; the reference the SQL
    reassignment is tested against.
    """
    if moved not in upline:
        return list(upline)
    k = upline.index(moved)
    return [*upline[: k + 1], *moved_new_upline][:MAX_LEVELS]


def ancestors(parent_of: Mapping[int, int | None], member_id: int) -> list[int]:
    """The whole live ancestor line of a member, nearest first, from a parent map."""
    line: list[int] = []
    seen = {member_id}
    node = parent_of.get(member_id)
    while node is not None:
        if node in seen:
            raise ChainError(f"cycle through member {node}")
        seen.add(node)
        line.append(node)
        node = parent_of.get(node)
    return line
