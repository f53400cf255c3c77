"""Rule numbers: ``<region code>-<role letter><8-digit sequence>``, assigned once, never reused."""

from __future__ import annotations

import re
from dataclasses import dataclass

ROLE_LETTERS = {"user": "U", "merchant": "M", "agent": "A"}
SEQ_DIGITS = 8
MAX_SEQ = 10**SEQ_DIGITS - 1
_RULE_RE = re.compile(r"^(\d{6,12})-([UMA])(\d{8})$")


class RuleNumberError(ValueError):
    """A malformed rule number or an exhausted sequence."""


@dataclass(frozen=True, order=True)
class RuleNumber:
    """A parsed rule number; its string form sorts by region, role and age."""

    region: str
    letter: str
    seq: int

    def __str__(self) -> str:
        return f"{self.region}-{self.letter}{self.seq:0{SEQ_DIGITS}d}"


def role_letter(role: str) -> str:
    """The rule-number letter of a member role."""
    try:
        return ROLE_LETTERS[role]
    except KeyError:
        raise RuleNumberError(f"unknown role {role!r}") from None


def make_rule_number(region: str, role: str, seq: int) -> str:
    """Format the rule number of the ``seq``-th member of ``role`` in ``region``."""
    if not region.isdigit():
        raise RuleNumberError(f"region code {region!r} is not numeric")
    if not 1 <= seq <= MAX_SEQ:
        raise RuleNumberError(f"sequence {seq} out of range for region {region}")
    return str(RuleNumber(region, role_letter(role), seq))


def parse_rule_number(text: str) -> RuleNumber:
    """Parse a rule number or raise RuleNumberError."""
    m = _RULE_RE.match(text)
    if not m:
        raise RuleNumberError(f"{text[:40]!r} is not a rule number")
    return RuleNumber(m.group(1), m.group(2), int(m.group(3)))


def looks_like_rule_number(text: str) -> bool:
    """True when ``text`` has the shape of a rule number."""
    return bool(_RULE_RE.match(text))
