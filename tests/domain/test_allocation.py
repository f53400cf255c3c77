"""Property tests of the allocation arithmetic (hypothesis, 5,000 examples per property)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from imserver.domain.allocation import Share, allocate, largest_remainder, reverse
from imserver.domain.policy import BP, Policy

MANY = settings(max_examples=5000, deadline=None)
amounts = st.integers(min_value=1, max_value=10**14)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """Any valid policy: up to two levels, or three with the override."""
    third = draw(st.booleans())
    levels = draw(st.integers(min_value=1, max_value=3 if third else 2))
    shares = draw(st.lists(st.integers(0, BP), min_size=levels + 3, max_size=levels + 3))
    # Scale down until referral + agent shares fit in the pool.
    while sum(shares) > BP:
        shares = [s // 2 for s in shares]
    policy = Policy(
        pool_bp=draw(st.integers(0, BP)),
        referral_bp=tuple(shares[:levels]),
        agent_bp=(shares[levels], shares[levels + 1], shares[levels + 2]),
        allow_third_level=third,
    )
    policy.validate()
    return policy


member_or_vacant = st.one_of(st.none(), st.integers(min_value=1, max_value=10**6))
uplines = st.lists(member_or_vacant, max_size=3)
agencies = st.tuples(member_or_vacant, member_or_vacant, member_or_vacant).map(
    lambda a: list(zip(("district", "city", "province"), a, strict=True))
)


def exact_values(
    amount: int, policy: Policy, upline: list[int | None], agents: list[tuple[str, int | None]]
) -> dict[tuple[str, int | None, str | None], Fraction]:
    """The exact (rational) share of each slot, vacancies to the platform."""
    out: dict[tuple[str, int | None, str | None], Fraction] = {}
    pool = Fraction(amount * policy.pool_bp, BP)
    paid = Fraction(0)
    for level, bp in enumerate(policy.referral_bp, start=1):
        member = upline[level - 1] if level - 1 < len(upline) else None
        if member is not None:
            out[("referrer", level, None)] = pool * bp / BP
            paid += pool * bp / BP
    for (scope, agent), bp in zip(agents, policy.agent_bp, strict=True):
        if agent is not None:
            out[("agent", None, scope)] = pool * bp / BP
            paid += pool * bp / BP
    out[("platform", None, None)] = pool - paid
    out[("merchant", None, None)] = amount - pool
    return out


def key(s: Share) -> tuple[str, int | None, str | None]:
    return (s.role, s.level, s.scope)


@MANY
@given(amounts, policies(), uplines, agencies)
def test_allocation_properties(
    amount: int, policy: Policy, upline: list[int | None], agents: list[tuple[str, int | None]]
) -> None:
    """Each drawn case checks every property, so each property sees 5,000 examples:
    the shares sum exactly to the amount, none is negative, each is within one minor unit
    of its exact value, vacant levels go to the platform."""
    shares = allocate(amount, policy, upline, agents, merchant_id=0)
    assert sum(s.amount for s in shares) == amount
    assert all(s.amount >= 0 for s in shares)
    got = {key(s): s.amount for s in shares}
    for slot, exact in exact_values(amount, policy, upline, agents).items():
        # A member's zero share is left out of the list.
        assert abs(got.get(slot, 0) - exact) < 1, (slot, got.get(slot, 0), exact)
    assert all(s.member_id is not None for s in shares if s.role in ("referrer", "agent"))
    assert [s.role for s in shares][-2:] == ["platform", "merchant"]


@MANY
@given(
    st.integers(min_value=0, max_value=10**15),
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=8).filter(
        lambda w: sum(w) > 0
    ),
)
def test_largest_remainder_is_exact_and_fair(total: int, weights: list[int]) -> None:
    parts = largest_remainder(total, weights)
    assert sum(parts) == total
    denominator = sum(weights)
    for part, w in zip(parts, weights, strict=True):
        assert part >= 0
        assert abs(part - Fraction(total * w, denominator)) < 1


def test_largest_remainder_breaks_ties_in_the_fixed_order() -> None:
    assert largest_remainder(1, [1, 1, 1]) == [1, 0, 0]
    assert largest_remainder(2, [1, 1, 1]) == [1, 1, 0]
    # 5/6, 10/6, 5/6, 10/6: the three leftover units go to remainders 5, 5, then the
    # earlier of the two 4s.
    assert largest_remainder(5, [1, 2, 1, 2]) == [1, 2, 1, 1]


@st.composite
def refunds(draw: st.DrawFn) -> tuple[list[int], int]:
    remaining = draw(st.lists(st.integers(0, 10**12), min_size=1, max_size=8))
    if sum(remaining) == 0:
        remaining[0] = 1
    return remaining, draw(st.integers(1, sum(remaining)))


@MANY
@given(refunds())
def test_reverse_takes_at_most_what_is_left_in_proportion(case: tuple[list[int], int]) -> None:
    remaining, refund = case
    parts = reverse(refund, remaining)
    assert sum(parts) == refund
    left = sum(remaining)
    for part, r in zip(parts, remaining, strict=True):
        assert 0 <= part <= r
        assert abs(part - Fraction(refund * r, left)) < 1


@MANY
@given(refunds(), st.lists(st.integers(1, 10**6), max_size=5))
def test_successive_refunds_end_with_every_share_returned(
    case: tuple[list[int], int], slices: list[int]
) -> None:
    remaining, _ = case
    original = list(remaining)
    returned = [0] * len(original)  # what the refunds gave back, per share
    for size in slices:
        left = sum(remaining)
        if left == 0:
            break
        parts = reverse(min(size, left), remaining)
        assert sum(parts) == min(size, left)
        assert all(0 <= p <= r for p, r in zip(parts, remaining, strict=True))
        remaining = [r - p for r, p in zip(remaining, parts, strict=True)]
        returned = [g + p for g, p in zip(returned, parts, strict=True)]
    if sum(remaining):
        # The last refund takes everything left (no bound checked here: the assertion
        # below is what says that it returns each share exactly).
        parts = reverse(sum(remaining), remaining)
        returned = [g + p for g, p in zip(returned, parts, strict=True)]
    # Every share came back whole, not merely the total.
    assert returned == original


def test_default_policy_example_of_the_protocol() -> None:
    shares = allocate(10000, Policy(), [11, 12], [("district", 21), ("city", 22),
                                                   ("province", 23)], 5)  # fmt: skip
    assert [(s.role, s.member_id, s.amount) for s in shares] == [
        ("referrer", 11, 300),
        ("referrer", 12, 200),
        ("agent", 21, 150),
        ("agent", 22, 100),
        ("agent", 23, 50),
        ("platform", None, 200),
        ("merchant", 5, 9000),
    ]
