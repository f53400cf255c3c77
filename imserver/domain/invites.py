"""Invites: a member's rule number as its invite code, and the XMPP URI that carries it.

A newcomer names its referrer either by JID or by the referrer's invite code. The two
cannot be confused: a member's JID always has a local part (``user@domain``) and a rule
number never holds an ``@``.
"""

from __future__ import annotations

from urllib.parse import quote

from imserver.domain.jids import normalize_jid
from imserver.domain.rulenumbers import looks_like_rule_number

JOIN_KEYWORD = "join"
POSTER_FORMATS = {"png": "image/png", "pdf": "application/pdf"}
# RFC 5122 section 2.2: characters a node identifier keeps unescaped besides iunreserved.
_NODE_ALLOWED = "!$()*+,;="


def invite_code(text: str) -> str | None:
    """The invite code (a rule number, upper-cased) that ``text`` names, or None when it
    is not one (then it is a JID, or nothing valid)."""
    candidate = text.strip().upper()
    if "@" in candidate or not looks_like_rule_number(candidate):
        return None
    return candidate


def xmpp_uri(jid: str, body: str) -> str:
    """An RFC 5122 URI that opens a chat with ``jid`` and has ``body`` typed:
    ``xmpp:<jid>?message;body=<body>``.

    The node and domain are percent-encoded as RFC 5122 allows (UTF-8, then RFC 3986);
    the body, as a query value, keeps only unreserved characters (a space is ``%20``).
    """
    bare = normalize_jid(jid, require_local=False)
    local, _, domain = bare.rpartition("@")
    path = quote(domain, safe="")
    if local:
        path = f"{quote(local, safe=_NODE_ALLOWED)}@{path}"
    return f"xmpp:{path}?message;body={quote(body, safe='')}"


def invite_uri(component_jid: str, code: str) -> str:
    """The invite of the member whose rule number is ``code``: one tap opens a chat with
    the component with ``join <code>`` typed, one send registers."""
    return xmpp_uri(component_jid, f"{JOIN_KEYWORD} {code}")


def poster_url(base_url: str, code: str, fmt: str) -> str:
    """Where the public HTTP endpoint serves a member's poster (``fmt``: png or pdf)."""
    if fmt not in POSTER_FORMATS:
        raise ValueError(f"poster format {fmt!r}: use one of {', '.join(POSTER_FORMATS)}")
    return f"{base_url.rstrip('/')}/invites/{code}.{fmt}"
