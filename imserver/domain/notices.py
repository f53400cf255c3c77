"""The human text of earning notifications (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from imserver.domain.money import format_amount


def earning_line(earning: Mapping[str, str]) -> str:
    """One sentence for one earning (or its reversal by a refund).

    ``earning`` has ``amount`` (signed minor units as text), ``currency``, ``payer`` and
    ``merchant_name`` (or ``merchant``): "you earned ¥3.00 from bob@example.org's purchase
    at Tea House".
    """
    amount = int(earning["amount"])
    money = format_amount(abs(amount), earning["currency"])
    where = earning.get("merchant_name") or earning.get("merchant") or "a merchant"
    purchase = f"{earning.get('payer') or 'a member'}'s purchase at {where}"
    if earning.get("refund") or amount < 0:
        return f"you lost {money}: {purchase} was refunded"
    return f"you earned {money} from {purchase}"


def notification_body(earnings: Sequence[Mapping[str, str]]) -> str:
    """The body of one message listing one or more earnings (coalesced)."""
    lines = [earning_line(e) for e in earnings]
    if len(lines) == 1:
        return lines[0]
    return "\n".join(["Your latest earnings:", *(f"• {line}" for line in lines)])
