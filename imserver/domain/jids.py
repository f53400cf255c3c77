"""Bare-JID normalisation without an XMPP library (the domain layer has no I/O deps)."""

from __future__ import annotations

import re
import unicodedata

# RFC 7622 forbids these in a localpart; whitespace and controls are refused everywhere.
_LOCAL_FORBIDDEN = set("\"&'/:<>@")
_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9\u00a1-\uffff]([a-z0-9\u00a1-\uffff-]{0,61}[a-z0-9\u00a1-\uffff])?)(\.[a-z0-9\u00a1-\uffff]([a-z0-9\u00a1-\uffff-]{0,61}[a-z0-9\u00a1-\uffff])?)*$"
)
MAX_PART = 1023


class InvalidJid(ValueError):
    """A string that is not a usable bare JID."""


def _clean(part: str, what: str) -> str:
    part = unicodedata.normalize("NFC", part).lower()
    if not part:
        raise InvalidJid(f"empty {what}")
    if len(part.encode()) > MAX_PART:
        raise InvalidJid(f"{what} longer than {MAX_PART} bytes")
    for ch in part:
        cat = unicodedata.category(ch)
        if cat[0] in "CZ":
            raise InvalidJid(f"{what} contains a space or control character")
    # XMPP servers map compatibility forms (fullwidth letters, ligatures) and fold case
    # (nodeprep: ß -> ss) before they stamp a JID; such a part would never compare equal
    # to the JID its owner logs in with, so it is refused rather than stored.
    if unicodedata.normalize("NFKC", part.casefold()) != part:
        raise InvalidJid(f"{what} is not in canonical form (fullwidth, ligature or case-folded)")
    return part


def normalize_jid(raw: str, *, require_local: bool = True) -> str:
    """Return the normalised bare JID (``local@domain``), dropping any resource.

    Raises InvalidJid for anything that does not parse as a JID.
    """
    if not isinstance(raw, str):
        raise InvalidJid("not a string")
    text = raw.strip()
    bare = text.split("/", 1)[0]
    if "@" in bare:
        local, _, domain = bare.partition("@")
        local = _clean(local, "local part")
        if set(local) & _LOCAL_FORBIDDEN:
            raise InvalidJid("local part contains a forbidden character")
    else:
        if require_local:
            raise InvalidJid(f"{raw[:64]!r} has no local part (expected user@domain)")
        local = ""
    domain = _clean(domain if local else bare, "domain").rstrip(".")
    if not _DOMAIN_RE.match(domain):
        raise InvalidJid(f"{domain[:64]!r} is not a valid domain")
    return f"{local}@{domain}" if local else domain


def domain_of(bare_jid: str) -> str:
    """The domain part of a normalised bare JID."""
    return bare_jid.rpartition("@")[2]
