"""Chain computation and repair rules; no server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imserver.domain.chains import (
    ChainError,
    agency_chain,
    ancestors,
    check_no_cycle,
    repaired_upline,
    upline_below,
)
from imserver.domain.policy import MAX_LEVELS


def test_upline_below_is_cut_at_the_level_cap() -> None:
    assert upline_below(7, []) == [7]
    assert upline_below(7, [5]) == [7, 5]
    assert upline_below(7, [5, 3, 1]) == [7, 5, 3][:MAX_LEVELS]


def test_agency_chain_is_district_first_with_vacancies() -> None:
    line = [("440000", 1), ("440305", 3), ("440300", 2)]
    links = agency_chain(line, {"440305": 11, "440000": 33})
    assert [(link.scope, link.region, link.agent_id) for link in links] == [
        ("district", "440305", 11),
        ("city", "440300", None),
        ("province", "440000", 33),
    ]


def test_cycle_is_refused() -> None:
    check_no_cycle(1, 2, [3, 4])
    with pytest.raises(ChainError):
        check_no_cycle(1, 1, [])
    with pytest.raises(ChainError):
        check_no_cycle(1, 2, [3, 1])


def test_ancestors_detects_a_corrupt_cycle() -> None:
    assert ancestors({3: 2, 2: 1, 1: None}, 3) == [2, 1]
    with pytest.raises(ChainError):
        ancestors({1: 2, 2: 1}, 1)


def test_repair_replaces_the_removed_member_by_its_upline() -> None:
    # 5 <- 4 <- 3 <- 2 <- 1 (1 is the root); remove 3.
    assert repaired_upline([4, 3, 2], 3, [2, 1]) == [4, 2, 1]
    assert repaired_upline([3, 2, 1], 3, [2, 1]) == [2, 1]
    assert repaired_upline([2, 1], 3, [2, 1]) == [2, 1]
    assert repaired_upline([3], 3, []) == []


@st.composite
def forests(draw: st.DrawFn) -> dict[int, int | None]:
    n = draw(st.integers(1, 40))
    parent: dict[int, int | None] = {0: None}
    for node in range(1, n):
        parent[node] = draw(st.one_of(st.none(), st.integers(0, node - 1)))
    return parent


@given(forests(), st.data())
def test_repair_matches_recomputation_from_parents(
    parent: dict[int, int | None], data: st.DataObject
) -> None:
    removed = data.draw(st.sampled_from(sorted(parent)))
    stored = {m: ancestors(parent, m)[:MAX_LEVELS] for m in parent}
    # The rule: the removed member's children move to its parent; it leaves every chain.
    after = {m: (parent[removed] if p == removed else p) for m, p in parent.items() if m != removed}
    for member, upline in stored.items():
        if member == removed:
            continue
        expected = ancestors(after, member)[:MAX_LEVELS]
        assert repaired_upline(upline, removed, stored[removed]) == expected
