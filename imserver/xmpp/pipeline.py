"""One guarded path for every request: IQ routes, ad-hoc commands and chat commands.

Each request takes the same steps, in this order:

1. the sender: the bare JID of ``from``, normalised (:mod:`imserver.domain.jids`); one
   that does not parse is refused with ``bad-request``;
2. the sender's rate limit (:mod:`imserver.service.limits`), one bucket per sender for
   every kind of request: ``resource-constraint`` (type wait) over it;
3. the authorisation hook, where the route or command declares capabilities: the sender
   must have one of them (the use case checks its own again inside its transaction;
   this one refuses before any work, e.g. before an ad-hoc form is shown);
4. the work: the service call and the answer;
5. the outcome: a :class:`ServiceError` becomes the stanza error of its condition; a
   database out of service (:class:`~imserver.store.db.Unavailable`) becomes
   ``service-unavailable`` of type ``wait`` ("retry later", not "nothing here"); anything
   unexpected is logged and answered ``internal-server-error`` with "nothing
   was changed" (the use case's transaction was rolled back);
6. one log line per request (operation, sender as ``[log] jids`` allows, outcome,
   duration; at INFO, or DEBUG with ``[log] requests = false``) and, in memory, a
   :class:`~imserver.service.figures.Tally` of durations per (operation, outcome):
   :attr:`Pipeline.stats`, which the metrics endpoint reads.

Steps 1 and 2 refuse with :class:`Refused`, so that a front-end that answers in its own
words (chat) can tell them from the work's failures.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Final, TypeVar, cast
from xml.etree import ElementTree as ET

from slixmpp import Iq
from slixmpp.exceptions import XMPPError
from slixmpp.jid import InvalidJID
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.xmlstream import XMLStream

from imserver.domain.jids import InvalidJid, normalize_jid
from imserver.logs import JidView
from imserver.service.authz import Capability
from imserver.service.errors import Condition, ErrorType, ServiceError
from imserver.service.figures import Tally
from imserver.service.locations import NearBorder
from imserver.store.db import Unavailable
from imserver.xmpp.payloads import candidates_element
from imserver.xmpp.rawxml import send_result

if TYPE_CHECKING:
    from imserver.service.limits import SenderLimiter
    from imserver.service.registry import Services
    from imserver.xmpp.routing import Router

log = logging.getLogger(__name__)
# The request lines have a logger of their own, so an operator can route or mute them.
request_log = logging.getLogger("imserver.requests")

T = TypeVar("T")
OK = "ok"
INTERNAL: Final = "internal-server-error"
UNAVAILABLE: Final = "service-unavailable"
# Type wait: the request was fine and may succeed as it is later (RFC 6120 8.3.2).
UNAVAILABLE_TEXT: Final = "the database is unavailable; please retry the same request shortly"
ABORTED = "aborted"
NO_CAPABILITIES: frozenset[Capability] = frozenset()


class Refused(XMPPError):
    """A request refused before any work: its sender does not parse or is over its limit.

    ``sender`` is the normalised bare JID, or "" when it does not parse.
    """

    def __init__(self, condition: Condition, text: str, etype: ErrorType, sender: str = "") -> None:
        super().__init__(condition, text=text, etype=etype)
        self.sender = sender


class DetailedError(XMPPError):
    """A stanza error that carries a payload element of the protocol after its text
    (the candidate districts of a location near a border)."""

    def __init__(self, exc: ServiceError, payload: ET.Element) -> None:
        super().__init__(exc.condition, text=exc.text, etype=exc.etype)
        self.payload = payload


def stanza_error(exc: ServiceError) -> XMPPError:
    """The stanza error of a service refusal (with its payload where it has one)."""
    if isinstance(exc, NearBorder):
        return DetailedError(exc, candidates_element(exc))
    return XMPPError(exc.condition, text=exc.text, etype=exc.etype)


def sender_of(stanza: StanzaBase) -> str:
    """The normalised bare JID of a stanza's sender, or :class:`Refused` (bad-request)."""
    try:
        return normalize_jid(stanza["from"].bare)
    except (InvalidJid, InvalidJID):
        raise Refused("bad-request", "the sender's JID does not parse", "cancel") from None


class Pipeline:
    """The guarded path of one component (it holds the limiter and the counters)."""

    def __init__(
        self, services: Services, limiter: SenderLimiter, stream: XMLStream, show_jid: JidView
    ) -> None:
        self.services = services
        self.limiter = limiter
        self.stream = stream  # where raw answers are written (the component)
        self.show_jid = show_jid  # a sender as the log may name it
        requests = services.ctx.config.log.requests
        self.request_level = logging.INFO if requests else logging.DEBUG
        # (operation, outcome) -> durations. Operations come from declared routes and
        # commands, outcomes from stanza-error conditions: both bounded sets.
        self.stats: dict[tuple[str, str], Tally] = {}
        # Told of every refusal (a ServiceError) after it is counted: e.g. the admins'
        # alerts of a remote domain past its limits.
        self.refusal_listeners: list[Callable[[ServiceError], None]] = []

    async def run(
        self,
        operation: str,
        stanza: StanzaBase,
        work: Callable[[str], Awaitable[T]],
        *,
        capabilities: frozenset[Capability] = NO_CAPABILITIES,
        what: str = "request",
    ) -> T:
        """Run ``work(sender)`` guarded; every failure comes out as an XMPPError.

        ``what`` names the request in the internal-error text ("the request failed").
        """
        started = perf_counter()
        sender = ""
        outcome = OK
        try:
            sender = sender_of(stanza)
            try:
                await self.limiter.require(sender)
            except ServiceError as exc:
                raise Refused(exc.condition, exc.text, exc.etype, sender) from None
            if capabilities:
                await self.services.queries.require_any(sender, capabilities)
            return await work(sender)
        except ServiceError as exc:
            outcome = exc.condition
            self.refused(exc)
            raise stanza_error(exc) from None
        except XMPPError as exc:
            outcome = exc.condition
            raise
        except Unavailable:
            outcome = UNAVAILABLE  # the database layer logged why; no traceback per request
            raise XMPPError(UNAVAILABLE, text=UNAVAILABLE_TEXT, etype="wait") from None
        except Exception:
            outcome = INTERNAL
            log.exception("%s from %s failed", operation, self.show_jid(sender) or "?")
            raise XMPPError(INTERNAL, text=f"the {what} failed on our side; nothing was changed. "
                            "Try again; if it keeps failing, tell an admin") from None  # fmt: skip
        except BaseException:
            outcome = ABORTED  # cancelled (the component stopping): no answer
            raise
        finally:
            self._record(operation, sender, outcome, started)

    def refused(self, refusal: ServiceError) -> None:
        """Tell the listeners of a refusal (front-ends that answer it themselves, as the
        chat does, call this too)."""
        for listener in self.refusal_listeners:
            listener(refusal)

    def _record(self, operation: str, sender: str, outcome: str, started: float) -> None:
        elapsed = perf_counter() - started
        tally = self.stats.get((operation, outcome))
        if tally is None:
            tally = self.stats[(operation, outcome)] = Tally()
        tally.observe(elapsed)
        if request_log.isEnabledFor(self.request_level):
            fields = {
                "op": operation,
                "sender": self.show_jid(sender),
                "outcome": outcome,
                "ms": elapsed * 1e3,
            }
            request_log.log(self.request_level, "request", extra={"fields": fields})

    # -- IQ routes ------------------------------------------------------------------------

    def iq_handler(self, router: Router) -> Callable[[StanzaBase], Awaitable[None]]:
        """The slixmpp handler of every routed IQ request (matched by ``router``)."""
        services = self.services

        async def handle(stanza: StanzaBase) -> None:
            iq = cast(Iq, stanza)  # the router matches IQs only
            route = router.route_of(iq)
            if route is None:
                return  # matched, then changed: cannot happen, but never answer twice

            async def answer(sender: str) -> None:
                view = await route.call(services, iq, sender)
                self.send(iq, route.answer(iq, view))

            try:
                await self.run(route.name, iq, answer, capabilities=route.capabilities)
            except DetailedError as exc:
                # slixmpp's own error reply carries no child elements: written here.
                reply = iq.reply(clear=True)
                reply["error"]["condition"] = exc.condition
                reply["error"]["text"] = exc.text
                reply["error"]["type"] = exc.etype
                reply["error"].append(exc.payload)
                reply.send()

        return handle

    def send(self, iq: Iq, answer: Iq | str) -> None:
        """Send what a route's answer builder returned."""
        if isinstance(answer, str):
            send_result(self.stream, iq, answer)
        else:
            answer.send()
