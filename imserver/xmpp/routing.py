"""IQ routes as data: (IQ type, payload element) -> service call -> answer builder.

A feature module declares its routes in a ``ROUTES`` list::

    Route("get", "balance",
          forward("balance", lambda s: s.ledger.balance, "jid"),
          reply_with("balance", fill_balance))

The call (here: the service method with the sender's normalised bare JID, then the
payload's ``jid`` attribute) reads the request and calls the service;
``answer`` turns the service's view into the answer: a reply stanza, or for the hot
answers the payload as text (:mod:`imserver.xmpp.rawxml`). The component adds every
module's routes to one :class:`Router`, which slixmpp asks through a single matcher, and
runs each request through the guarded path of :mod:`imserver.xmpp.pipeline`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from slixmpp import Iq
from slixmpp.xmlstream import ElementBase, StanzaBase
from slixmpp.xmlstream.matcher.base import MatcherBase

from imserver.service.authz import Capability
from plugins.distribution import NS

if TYPE_CHECKING:
    from imserver.service.registry import Services

V = TypeVar("V")

# Reads the request and calls the service: (services, request, sender's bare JID).
Call = Callable[["Services", Iq, str], Awaitable[V]]
# The answer: a reply stanza to send, or the payload of a result as text.
Answer = Callable[[Iq, V], "Iq | str"]

# Payloads that slixmpp's own plugins answer; any other IQ get/set gets service-unavailable.
PLUGIN_PAYLOADS = frozenset(
    {
        ("http://jabber.org/protocol/disco#info", "query"),
        ("http://jabber.org/protocol/disco#items", "query"),
        ("http://jabber.org/protocol/commands", "command"),
        ("urn:xmpp:ping", "ping"),
    }
)
_NS_PREFIX = f"{{{NS}}}"


@dataclass(frozen=True, slots=True)
class Route(Generic[V]):
    """One request of the protocol: an IQ of ``itype`` with one ``<payload xmlns=NS/>``."""

    itype: Literal["get", "set"]
    payload: str
    call: Call[V]
    answer: Answer[V]
    # Checked by the pipeline before the call, for a refusal before any work; the use
    # case checks its own capability anyway, inside its transaction.
    capabilities: frozenset[Capability] = frozenset()
    name: str = field(init=False)  # "set payment": the operation in logs and metrics

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"{self.itype} {self.payload}")


def forward(
    payload: str, method: Callable[[Services], Callable[..., Awaitable[V]]], *names: str
) -> Call[V]:
    """A call that passes the sender, then the payload's attributes ``names`` in order
    (None for an absent or empty one), to the service method ``method(services)``."""

    def call(services: Services, iq: Iq, sender: str) -> Awaitable[V]:
        el = iq[payload]
        return method(services)(sender, *(el[name] or None for name in names))

    return call


def reply_with(payload: str, fill: Callable[[ElementBase, V], None]) -> Answer[V]:
    """An answer that fills the reply's ``<payload/>`` with the view (``fill(el, view)``)."""

    def answer(iq: Iq, view: V) -> Iq:
        reply = iq.reply(clear=True)
        fill(reply[payload], view)
        return reply

    return answer


def as_text(write: Callable[[V], str]) -> Answer[V]:
    """An answer whose payload is written as text (the hot answers: no stanza objects)."""

    def answer(_iq: Iq, view: V) -> str:
        return write(view)

    return answer


class Router(MatcherBase):
    """Every route, and the slixmpp matcher of IQ requests that have one.

    One matcher and one dict look-up for every route: slixmpp tries each registered
    handler's matcher on every stanza, and twenty StanzaPath matchers cost a tenth of the
    component's CPU under a payment load (py-spy).
    """

    def __init__(self) -> None:
        super().__init__(None)
        self.routes: dict[tuple[str, str], Route[Any]] = {}
        # (namespace, element) of every payload answered: ours and the plugins'.
        self.known: set[tuple[str, str]] = set(PLUGIN_PAYLOADS)

    def add(self, *routes: Route[Any]) -> None:
        """Route IQs of each route's type carrying its payload to it."""
        for route in routes:
            key = (route.itype, route.payload)
            if key in self.routes:
                raise ValueError(f"two routes for {route.name}")
            self.routes[key] = route
            self.known.add((NS, route.payload))

    def match(self, xml: StanzaBase) -> bool:
        return self.route_of(xml) is not None

    def route_of(self, stanza: StanzaBase) -> Route[Any] | None:
        """The route of a request, or None when it is not one of ours."""
        xml = stanza.xml
        if len(xml) != 1 or stanza.name != "iq":
            return None
        tag: str = xml[0].tag
        if not tag.startswith(_NS_PREFIX):
            return None
        return self.routes.get((xml.get("type", ""), tag[len(_NS_PREFIX) :]))


class UnknownRequest(MatcherBase):
    """Matches IQ requests whose payload nothing answers (or that carry no payload)."""

    def __init__(self, known: set[tuple[str, str]]) -> None:
        super().__init__(None)
        self.known = known

    def match(self, xml: StanzaBase) -> bool:
        if xml.name != "iq" or xml["type"] not in ("get", "set"):
            return False
        children = list(xml.xml)
        if len(children) != 1:
            return True
        tag: str = children[0].tag
        ns, _, name = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
        return (ns, name) not in self.known
