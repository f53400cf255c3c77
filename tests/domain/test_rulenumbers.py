"""Rule numbers: format, parse, order; no server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imserver.domain.rulenumbers import (
    MAX_SEQ,
    RuleNumberError,
    looks_like_rule_number,
    make_rule_number,
    parse_rule_number,
)


def test_format() -> None:
    assert make_rule_number("440305", "user", 123) == "440305-U00000123"
    assert make_rule_number("440305", "merchant", 1) == "440305-M00000001"
    assert make_rule_number("110000", "agent", MAX_SEQ) == "110000-A99999999"


@pytest.mark.parametrize(
    ("region", "role", "seq"),
    [
        ("44030X", "user", 1),
        ("440305", "boss", 1),
        ("440305", "user", 0),
        ("440305", "user", MAX_SEQ + 1),
    ],
)
def test_refuses_bad_parts(region: str, role: str, seq: int) -> None:
    with pytest.raises(RuleNumberError):
        make_rule_number(region, role, seq)


@pytest.mark.parametrize(
    "text", ["", "440305-U123", "440305-X00000001", "440305U00000001", "a-U00000001"]
)
def test_parse_refuses(text: str) -> None:
    assert not looks_like_rule_number(text)
    with pytest.raises(RuleNumberError):
        parse_rule_number(text)


@given(
    st.from_regex(r"[1-9]\d{5}", fullmatch=True),
    st.sampled_from(["user", "merchant", "agent"]),
    st.integers(1, MAX_SEQ),
)
def test_round_trip(region: str, role: str, seq: int) -> None:
    text = make_rule_number(region, role, seq)
    parsed = parse_rule_number(text)
    assert (parsed.region, parsed.seq) == (region, seq)
    assert str(parsed) == text


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[1-9]\d{5}", fullmatch=True),
            st.sampled_from(["user", "merchant", "agent"]),
            st.integers(1, MAX_SEQ),
        ),
        min_size=2,
        max_size=20,
    )
)
def test_string_order_groups_by_region_role_and_age(parts: list[tuple[str, str, int]]) -> None:
    texts = [make_rule_number(*p) for p in parts]
    by_text = sorted(texts)
    by_fields = [str(r) for r in sorted(parse_rule_number(t) for t in texts)]
    assert by_text == by_fields
