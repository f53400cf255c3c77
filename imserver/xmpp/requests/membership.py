"""register, chain, merchant, agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imserver.service.errors import bad_request
from imserver.service.membership import Location
from imserver.service.views import MemberView
from imserver.xmpp.rawxml import element, send_result
from imserver.xmpp.translate import fill_chain, fill_member
from plugins.distribution import NS

if TYPE_CHECKING:
    from imserver.xmpp.component import Component


def install(component: Component) -> None:
    """Route this module's payloads to the membership service."""
    membership = component.services.membership

    async def register(iq: Any, sender: str) -> None:
        # The route matched exactly one <register/> child: its attribute is read directly,
        # and the answer written as text (slixmpp's plugin look-up, reply copy and
        # serialiser took about a tenth of the component's CPU per registration, py-spy).
        view = await membership.register(sender, iq.xml[0].get("referrer") or None)
        send_result(component, iq, member_xml(view))

    async def chain(iq: Any, sender: str) -> None:
        view = await membership.chain(sender, iq["chain"]["jid"] or None)
        reply = iq.reply(clear=True)
        fill_chain(reply["chain"], view)
        reply.send()

    async def merchant(iq: Any, sender: str) -> None:
        m = iq["merchant"]
        view = await membership.add_merchant(
            sender, m["jid"], m["name"], m["referrer"] or None, location_of(m)
        )
        reply = iq.reply(clear=True)
        fill_member(reply["member"], view)
        reply.send()

    async def agent(iq: Any, sender: str) -> None:
        a = iq["agent"]
        view = await membership.assign_agent(sender, a["jid"], a["region"])
        reply = iq.reply(clear=True)
        fill_member(reply["member"], view)
        reply.send()

    component.route("set", "register", register)
    component.route("get", "chain", chain)
    component.route("set", "merchant", merchant)
    component.route("set", "agent", agent)


def member_xml(view: MemberView) -> str:
    """A MemberView as its ``<member/>`` element (serialised), as ``fill_member`` fills it."""
    return element(
        "member",
        (
            ("xmlns", NS),
            ("jid", view.jid),
            ("role", view.role),
            ("rule-number", view.rule_number),
            ("region", view.region),
            ("status", view.status),
            ("referrer", view.referrer or None),
            ("name", view.name or None),
        ),
    )


def location_of(merchant: Any) -> Location:
    """The ``<location/>`` of a merchant request (exactly one form), or bad-request."""
    if merchant.xml.find(f"{{{NS}}}location") is None:
        raise bad_request("a merchant needs a <location/>")
    loc = merchant["location"]
    region, lat, lon, address = loc["region"], loc["lat"], loc["lon"], loc["address"]
    forms = [bool(region), bool(lat or lon), bool(address)]
    if sum(forms) != 1:
        raise bad_request("give exactly one of region='…', lat='…' lon='…', or address='…'")
    if region:
        return Location(region=region)
    if address:
        return Location(address=address)
    try:
        return Location(lat=float(lat), lon=float(lon), crs=loc["crs"] or "wgs84")
    except ValueError:
        raise bad_request("lat and lon must be decimal degrees") from None
