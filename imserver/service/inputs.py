"""Parsing of request inputs: every attribute a client sends becomes a typed value here,
or a ``bad-request`` that names it. One parser per kind of input, used by every use case."""

from __future__ import annotations

from collections.abc import Mapping

from imserver.domain.jids import InvalidJid, normalize_jid
from imserver.domain.money import parse_minor_units
from imserver.service.errors import bad_request

MAX_REF = 128  # a merchant's or member's idempotency key
MAX_REASON = 500  # the audit log's reason column
MAX_INT = 10**18  # what an integer input may be at most (fits a signed 64-bit column)


def parse_jid(raw: str | None, what: str) -> str:
    """A normalised bare JID from a payload attribute, or bad-request naming it."""
    if not raw:
        raise bad_request(f"{what} is missing")
    try:
        return normalize_jid(raw)
    except InvalidJid as exc:
        raise bad_request(f"{what}: {exc}") from None


def parse_ref(raw: str | None, what: str) -> str:
    """An idempotency key: 1 to 128 printable characters, no surrounding blanks."""
    if not raw or len(raw) > MAX_REF or not raw.isprintable() or raw != raw.strip():
        raise bad_request(f"{what} must be 1 to {MAX_REF} printable characters")
    return raw


def parse_reason(raw: str | None, *, required: bool = False) -> str | None:
    """The reason of an admin action: trimmed, at most MAX_REASON characters, no control
    characters other than new lines and tabs."""
    reason = (raw or "").strip()
    if not reason:
        if required:
            raise bad_request("a reason is required: reason='why'")
        return None
    if len(reason) > MAX_REASON:
        raise bad_request(f"reason is longer than {MAX_REASON} characters")
    if not all(ch.isprintable() or ch in "\n\t" for ch in reason):
        raise bad_request("reason contains control characters")
    return reason


def parse_currency(raw: str | None, accepted: Mapping[str, int]) -> str:
    """A currency code that the config accepts (``money.currencies``)."""
    code = (raw or "").strip()
    if code not in accepted:
        names = ", ".join(sorted(accepted))
        raise bad_request(f"currency {code[:8]!r} is not accepted (use one of {names})")
    return code


def parse_amount(raw: str | None, cap: int = MAX_INT) -> int:
    """A positive amount in minor units, at most ``cap``."""
    try:
        return parse_minor_units(raw or "", cap=cap)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def parse_positive_int(raw: str | None, what: str, default: int | None) -> int | None:
    """A positive integer (a page size, an id), or ``default`` when absent."""
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 18 or int(raw) < 1:
        raise bad_request(f"{what} must be a positive integer")
    return int(raw)
