"""register, chain, merchant, agent."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from slixmpp import Iq

from imserver.service.errors import bad_request
from imserver.service.membership import Location
from imserver.service.views import MemberView
from imserver.xmpp.payloads import fill_chain, fill_member, member_xml
from imserver.xmpp.routing import Route, as_text, forward, reply_with
from plugins.distribution import NS

if TYPE_CHECKING:
    from imserver.service.registry import Services


def register(s: Services, iq: Iq, sender: str) -> Awaitable[MemberView]:
    """The route matched exactly one ``<register/>`` child: its attribute is read directly
    and the answer written as text (slixmpp's plugin look-up, reply copy and serialiser
    took about a tenth of the component's CPU per registration, py-spy)."""
    return s.membership.register(sender, iq.xml[0].get("referrer") or None)


def add_merchant(s: Services, iq: Iq, sender: str) -> Awaitable[MemberView]:
    """A merchant at a business location (one of three forms)."""
    m = iq["merchant"]
    return s.membership.add_merchant(
        sender, m["jid"], m["name"], m["referrer"] or None, location_of(m)
    )


def assign_agent(s: Services, iq: Iq, sender: str) -> Awaitable[MemberView]:
    """An agent for a region."""
    a = iq["agent"]
    return s.membership.assign_agent(sender, a["jid"], a["region"])


ROUTES: list[Route[Any]] = [
    Route("set", "register", register, as_text(member_xml)),
    Route(
        "get",
        "chain",
        forward("chain", lambda s: s.membership.chain, "jid"),
        reply_with("chain", fill_chain),
    ),
    Route("set", "merchant", add_merchant, reply_with("member", fill_member)),
    Route("set", "agent", assign_agent, reply_with("member", fill_member)),
]


def location_of(merchant: Any) -> Location:
    """The ``<location/>`` of a merchant request (exactly one form), or bad-request."""
    if merchant.xml.find(f"{{{NS}}}location") is None:
        raise bad_request("a merchant needs a <location/>")
    loc = merchant["location"]
    region, lat, lon, address = loc["region"], loc["lat"], loc["lon"], loc["address"]
    accept = loc["accept"] or None
    forms = [bool(region), bool(lat or lon), bool(address)]
    if sum(forms) != 1:
        raise bad_request("give exactly one of region='…', lat='…' lon='…', or address='…'")
    if region:
        return Location(region=region, accept=accept)
    if address:
        return Location(address=address, accept=accept)
    try:
        return Location(lat=float(lat), lon=float(lon), crs=loc["crs"] or "wgs84", accept=accept)
    except ValueError:
        raise bad_request("lat and lon must be decimal degrees") from None
