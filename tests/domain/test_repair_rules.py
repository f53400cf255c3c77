"""The repair and reassignment rules, and the row-level algorithm the SQL implements.

``store.repair`` rewrites stored uplines as set operations on rows (member, level,
ancestor). These property tests run the same operations on plain Python rows and check
them against the pure rules (``repaired_upline``, ``moved_upline``) and against chains
recomputed from the parent pointers, over random forests and random sequences of
removals and moves; and that only chains through the changed member are touched.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from imserver.domain.chains import (
    ChainError,
    ancestors,
    check_no_cycle,
    moved_upline,
    repaired_upline,
    upline_below,
)
from imserver.domain.policy import MAX_LEVELS

Rows = set[tuple[int, int, int]]  # (member, level, ancestor), as in table `uplines`
Parents = dict[int, int | None]


@st.composite
def forests(draw: st.DrawFn, max_size: int = 40) -> Parents:
    """Random referral forests: each node's parent is an older node, or none (a root)."""
    n = draw(st.integers(1, max_size))
    parent: Parents = {0: None}
    for node in range(1, n):
        parent[node] = draw(st.one_of(st.none(), st.integers(0, node - 1)))
    return parent


def stored(parent: Parents) -> dict[int, list[int]]:
    return {m: ancestors(parent, m)[:MAX_LEVELS] for m in parent}


def to_rows(uplines: dict[int, list[int]]) -> Rows:
    return {(m, i, a) for m, line in uplines.items() for i, a in enumerate(line, 1)}


def from_rows(rows: Rows) -> dict[int, list[int]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for m, level, a in rows:
        out.setdefault(m, []).append((level, a))
    return {m: [a for _, a in sorted(pairs)] for m, pairs in out.items()}


def line_of(rows: Rows, member: int) -> list[int]:
    return [a for _m, _lvl, a in sorted(r for r in rows if r[0] == member)]


def sql_remove(rows: Rows, x: int) -> Rows:
    """store.repair.remove_from_chains, statement by statement, on Python rows."""
    ux = line_of(rows, x)
    through = {(m, k) for m, k, a in rows if a == x}
    k_of = dict(through)
    # DELETE levels beyond the removed member's level
    rows = {(m, lvl, a) for m, lvl, a in rows if not (m in k_of and lvl > k_of[m])}
    # INSERT … SELECT: (M, k + j - 1, U_X[j]) for j >= 2 while <= MAX_LEVELS
    rows |= {
        (m, k + j - 1, a)
        for m, k in through
        for j, a in enumerate(ux, 1)
        if j >= 2 and k + j - 1 <= MAX_LEVELS
    }
    # UPDATE level k to U_X[1], or DELETE it for a root
    rows = {(m, lvl, ux[0] if a == x else a) for m, lvl, a in rows if a != x or ux}
    # DELETE the removed member's own rows
    return {r for r in rows if r[0] != x}


def sql_move(rows: Rows, y: int, new_line: list[int]) -> Rows:
    """store.repair.move_under, statement by statement, on Python rows."""
    through = {(m, k) for m, k, a in rows if a == y}
    k_of = dict(through)
    rows = {(m, lvl, a) for m, lvl, a in rows if not (m in k_of and lvl > k_of[m])}
    rows = {r for r in rows if r[0] != y}
    rows |= {(y, i, a) for i, a in enumerate(new_line[:MAX_LEVELS], 1)}
    rows |= {
        (m, k + j, a) for m, k in through for j, a in enumerate(new_line, 1) if k + j <= MAX_LEVELS
    }
    return rows


def remove(parent: Parents, x: int) -> Parents:
    """The rule on parent pointers: x's children go to x's parent; x leaves."""
    return {m: (parent[x] if p == x else p) for m, p in parent.items() if m != x}


def subtree(parent: Parents, y: int) -> set[int]:
    return {m for m in parent if m == y or y in ancestors(parent, m)}


@given(forests(), st.data())
def test_removal_rows_match_the_rule_and_the_recomputation(
    parent: Parents, data: st.DataObject
) -> None:
    x = data.draw(st.sampled_from(sorted(parent)))
    before = stored(parent)
    after_rows = sql_remove(to_rows(before), x)
    after = from_rows(after_rows)
    expected = stored(remove(parent, x))
    for m in expected:
        assert after.get(m, []) == expected[m] == repaired_upline(before[m], x, before[x])
    assert x not in after
    # Only chains that ran through x changed; the others' rows are untouched.
    untouched = {r for r in to_rows(before) if x not in before[r[0]] and r[0] != x}
    assert untouched <= after_rows


@given(forests(), st.data())
def test_move_rows_match_the_rule_and_the_recomputation(
    parent: Parents, data: st.DataObject
) -> None:
    y = data.draw(st.sampled_from(sorted(parent)))
    candidates = sorted(set(parent) - subtree(parent, y))
    if not candidates:
        return
    z = data.draw(st.sampled_from(candidates))
    check_no_cycle(y, z, ancestors(parent, z))  # never raises for these
    before = stored(parent)
    new_line = upline_below(z, before[z])
    after = from_rows(sql_move(to_rows(before), y, new_line))
    moved_parent = {**parent, y: z}
    expected = stored(moved_parent)
    for m in parent:
        assert after.get(m, []) == expected[m]
        if m != y:
            assert expected[m] == moved_upline(before[m], y, new_line)


@given(forests(), st.data())
def test_moving_under_the_own_downline_is_a_cycle(parent: Parents, data: st.DataObject) -> None:
    y = data.draw(st.sampled_from(sorted(parent)))
    for z in subtree(parent, y):
        try:
            check_no_cycle(y, z, ancestors(parent, z))
        except ChainError:
            continue
        raise AssertionError(f"moving {y} under {z} must be refused")


@settings(max_examples=60)
@given(forests(max_size=30), st.data())
def test_any_sequence_of_changes_keeps_the_stored_chains_right(
    parent: Parents, data: st.DataObject
) -> None:
    """Removals and moves in any order: the rows always equal the recomputation."""
    parent = dict(parent)
    rows = to_rows(stored(parent))
    for _ in range(data.draw(st.integers(1, 8))):
        if len(parent) < 2:
            break
        member = data.draw(st.sampled_from(sorted(parent)))
        if data.draw(st.booleans()):
            rows = sql_remove(rows, member)
            parent = remove(parent, member)
        else:
            targets = sorted(set(parent) - subtree(parent, member))
            if not targets:
                continue
            z = data.draw(st.sampled_from(targets))
            rows = sql_move(rows, member, upline_below(z, line_of(rows, z)))
            parent[member] = z
        assert from_rows(rows) == {m: line for m, line in stored(parent).items() if line}


def test_moved_upline_examples() -> None:
    # 4 <- 3 <- 2 <- 1; move 2 under 9 (whose upline is [8]).
    assert moved_upline([3, 2, 1], 2, [9, 8]) == [3, 2, 9]
    assert moved_upline([2, 1], 2, [9, 8]) == [2, 9, 8]
    assert moved_upline([5, 6], 2, [9]) == [5, 6]
