"""Defences of the component's XML stream against hostile or broken input.

slixmpp 1.17 parses the stream with ``xml.etree.ElementTree.XMLPullParser``, which has
no limit on the size of a stanza, builds any nesting depth (slixmpp then hits
RecursionError while copying such a stanza, before any handler runs, and the request is
dropped unanswered), and accepts an internal DTD subset with entity declarations. The
XMPP server in front of us (Prosody: 256 KiB client stanzas, no DTDs, UTF-8 checked)
refuses most of that already, but the component must not depend on the server's
configuration: ejabberd or a misconfigured Prosody may pass more.

So the component parses its stream with :class:`GuardedParser`, a small tree builder
over pyexpat that

- refuses any DTD (``<!DOCTYPE``) and with it every entity declaration, so entity
  expansion (billion laughs, external entities) cannot happen at all; RFC 6120 §11.1
  forbids DTDs on an XMPP stream. The stream is closed with ``restricted-xml``;
- forces UTF-8 whatever the XML declaration says (RFC 6120 §11.6); invalid UTF-8, control
  characters and any other well-formedness error close the stream with
  ``not-well-formed``, as there is no way to resynchronise an XML stream;
- stops building a stanza once it is larger than ``limits.max_stanza_bytes`` or nested
  deeper than ``limits.max_stanza_depth``: the rest of it is parsed only to find its end,
  nothing of it is kept, and the sender of an IQ request gets a stanza error
  (``policy-violation`` / ``bad-request``) while the link stays up;
- closes the stream with ``policy-violation`` when a single token (a start tag with its
  attributes) grows beyond the stanza limit, since expat must buffer a whole token.

The component also refuses to start with an expat older than 2.4.1 (the first release
with its billion-laughs protection fixed), in case anything else in the process parses
XML with the standard library.
"""

from __future__ import annotations

import logging
import pyexpat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from imserver.config import DEFAULT_SECRET, Config
from imserver.xmpp.compat import slixmpp as slixmpp_compat
from imserver.xmpp.compat.slixmpp import spawn_stanza

log = logging.getLogger(__name__)

# Billion-laughs protection arrived in expat 2.4.0; 2.4.1 fixed its false positives.
MIN_EXPAT = (2, 4, 1)

STREAMS_NS = "urn:ietf:params:xml:ns:xmpp-streams"


class UnsafeEnvironment(RuntimeError):
    """The component must not start: the message says why and what to do."""


def check_expat(version: tuple[int, int, int] | None = None) -> None:
    """Refuse an expat library without protection against entity-expansion attacks."""
    got = version or pyexpat.version_info
    if tuple(got) < MIN_EXPAT:
        raise UnsafeEnvironment(
            f"the XML parser library expat {'.'.join(map(str, got))} is vulnerable to "
            f"entity-expansion attacks (billion laughs); imserver needs expat >= "
            f"{'.'.join(map(str, MIN_EXPAT))}: upgrade libexpat1 / Python"
        )


def check_secret(config: Config) -> None:
    """Refuse the repository's default component secret off loopback (and an empty one).

    The config model already refuses it when loading; this repeats the check at start so
    that a config built in code (or with validation bypassed) cannot slip through.
    """
    x = config.xmpp
    if not x.secret:
        raise UnsafeEnvironment("xmpp.secret is empty; set IMSERVER_XMPP__SECRET")
    if x.secret == DEFAULT_SECRET and not x.on_loopback:
        raise UnsafeEnvironment(
            "xmpp.secret: the repository's default secret is refused when the XMPP server "
            f"({x.host}) is not on loopback; set IMSERVER_XMPP__SECRET"
        )


def check_startup(config: Config) -> None:
    """Everything the component verifies before it connects."""
    check_expat()
    check_secret(config)
    slixmpp_compat.check()
    # Our stanza errors use RFC 6120's conditions; slixmpp writes only those it knows.
    slixmpp_compat.allow_conditions()


@dataclass(frozen=True)
class StreamLimits:
    """What one stanza may weigh, in bytes on the wire and in nesting depth."""

    max_stanza_bytes: int = 512 * 1024
    max_stanza_depth: int = 32


@dataclass(frozen=True)
class Rejected:
    """A stanza that was not built: its name, attributes and why."""

    tag: str
    attrib: dict[str, str]
    condition: str  # RFC 6120 stanza-error condition for the reply
    text: str


class StreamClosed(Exception):
    """The stream cannot go on: ``condition`` is the RFC 6120 stream-error condition."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


# Events of GuardedParser.read_events()
STREAM_START = "stream-start"
STANZA = "stanza"
STREAM_END = "stream-end"


def _fixname(name: str) -> str:
    # pyexpat reports "uri}local" with our separator; ElementTree spells it "{uri}local".
    return "{" + name if "}" in name else name


class GuardedParser:
    """An XMPP stream parser with limits; see the module docstring.

    ``feed`` never raises: a fatal error is kept in ``error`` after the events that came
    before it, and every later ``feed`` is ignored.
    """

    def __init__(self, limits: StreamLimits, on_reject: Callable[[Rejected], None]) -> None:
        self.limits = limits
        self.on_reject = on_reject
        self.error: StreamClosed | None = None
        self._events: list[tuple[str, ET.Element | None]] = []
        # Force UTF-8 whatever the XML declaration claims; "}" separates namespace URIs.
        p = pyexpat.ParserCreate("UTF-8", "}")
        p.buffer_text = True
        p.ordered_attributes = True
        # No parameter entities, and (below) no DTD at all: nothing can ever be expanded.
        p.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._data
        p.StartDoctypeDeclHandler = self._refuse_dtd
        p.EntityDeclHandler = self._refuse_entity
        p.ExternalEntityRefHandler = self._refuse_external
        # Comments and processing instructions are dropped, as ElementTree does.
        self._parser = p
        self._fed = 0  # bytes fed so far
        self._mark = 0  # byte index of the last event: a token may not grow past the limit
        self._depth = 0  # 1 = the stream's root, 2 = a stanza
        self._stanza_start = 0
        self._stack: list[ET.Element] = []
        self._data_parts: list[str] = []
        self._last: ET.Element | None = None
        self._tail = False
        self._rejecting: Rejected | None = None

    # -- public -----------------------------------------------------------------

    def feed(self, data: bytes | str) -> None:
        """Parse more of the stream."""
        if self.error is not None:
            return
        raw = data.encode() if isinstance(data, str) else data
        self._fed += len(raw)
        try:
            self._parser.Parse(raw, False)
        except StreamClosed as exc:
            self.error = exc
        except pyexpat.ExpatError as exc:
            self.error = StreamClosed("not-well-formed", f"the stream is not well-formed: {exc}")
        except RecursionError:  # pragma: no cover - the depth limit keeps us far from it
            self.error = StreamClosed("policy-violation", "nesting too deep")
        else:
            if self._fed - self._mark > self.limits.max_stanza_bytes:
                self.error = StreamClosed(
                    "policy-violation",
                    f"a single XML token is larger than {self.limits.max_stanza_bytes} bytes",
                )

    def read_events(self) -> Iterator[tuple[str, ET.Element | None]]:
        """The events parsed so far: stream start, complete stanzas, stream end."""
        events, self._events = self._events, []
        return iter(events)

    def close(self) -> None:
        """Release the expat parser."""
        self._parser.StartElementHandler = None
        self._parser.CharacterDataHandler = None

    # -- expat handlers ---------------------------------------------------------

    def _position(self) -> int:
        index = int(self._parser.CurrentByteIndex)
        self._mark = max(self._mark, index)
        return index

    def _refuse_dtd(self, *_args: Any) -> None:
        raise StreamClosed(
            "restricted-xml", "a DTD (<!DOCTYPE …>) is not allowed on an XMPP stream"
        )

    def _refuse_entity(self, *_args: Any) -> None:
        raise StreamClosed("restricted-xml", "entity declarations are not allowed")

    def _refuse_external(self, *_args: Any) -> int:
        raise StreamClosed("restricted-xml", "external entities are not allowed")

    def _start(self, name: str, attr_list: list[str]) -> None:
        pos = self._position()
        self._depth += 1
        tag = _fixname(name)
        if self._depth == 1:
            attrib = {_fixname(k): v for k, v in zip(attr_list[::2], attr_list[1::2], strict=True)}
            self._events.append((STREAM_START, ET.Element(tag, attrib)))
            return
        if self._depth == 2:
            attrib = {_fixname(k): v for k, v in zip(attr_list[::2], attr_list[1::2], strict=True)}
            self._stanza_start = pos
            self._rejecting = None
            self._data_parts = []
            elem = ET.Element(tag, attrib)
            self._stack = [elem]
            self._last, self._tail = elem, False
            return
        if self._rejecting is not None or self._over_limits(pos):
            return
        self._flush()
        attrib = {_fixname(k): v for k, v in zip(attr_list[::2], attr_list[1::2], strict=True)}
        elem = ET.SubElement(self._stack[-1], tag, attrib)
        self._stack.append(elem)
        self._last, self._tail = elem, False

    def _end(self, _name: str) -> None:
        pos = self._position()
        depth, self._depth = self._depth, self._depth - 1
        if depth == 1:
            self._events.append((STREAM_END, None))
            return
        if depth == 2:
            stanza = self._stack[0] if self._stack else None
            if self._rejecting is None:
                self._over_limits(pos)
            if self._rejecting is not None:
                rejected = self._rejecting
                self._reset_stanza()
                self.on_reject(rejected)
                return
            self._flush()
            self._reset_stanza()
            if stanza is not None:
                self._events.append((STANZA, stanza))
            return
        if self._rejecting is not None or self._over_limits(pos):
            return
        self._flush()
        self._last, self._tail = self._stack.pop(), True

    def _data(self, text: str) -> None:
        pos = self._position()
        # Text between stanzas is only whitespace keep-alives: never kept.
        if self._depth < 2 or self._rejecting is not None:
            return
        if self._over_limits(pos + len(text)):
            return
        self._data_parts.append(text)

    # -- helpers ----------------------------------------------------------------

    def _over_limits(self, pos: int) -> bool:
        """Start rejecting the current stanza when it is too big or too deep."""
        limits = self.limits
        if pos - self._stanza_start > limits.max_stanza_bytes:
            self._reject(
                "policy-violation", f"the stanza is larger than {limits.max_stanza_bytes} bytes"
            )
        elif self._depth - 1 > limits.max_stanza_depth:
            self._reject(
                "bad-request",
                f"the stanza nests elements deeper than {limits.max_stanza_depth} levels",
            )
        return self._rejecting is not None

    def _reject(self, condition: str, text: str) -> None:
        top = self._stack[0]
        self._rejecting = Rejected(top.tag, dict(top.attrib), condition, text)
        # Drop everything built so far: only the stanza's name and attributes are kept.
        self._stack = []
        self._data_parts = []
        self._last = None

    def _reset_stanza(self) -> None:
        self._stack = []
        self._data_parts = []
        self._last = None
        self._rejecting = None

    def _flush(self) -> None:
        if not self._data_parts:
            return
        text = "".join(self._data_parts)
        self._data_parts = []
        if self._last is None:
            return
        if self._tail:
            self._last.tail = (self._last.tail or "") + text
        else:
            self._last.text = (self._last.text or "") + text


class HardenedStream:
    """Mixin for the component: parses its stream with :class:`GuardedParser`.

    Replaces slixmpp's ``init_parser`` and ``data_received`` (slixmpp 1.17's logic, with
    the guard's events; :mod:`imserver.xmpp.compat.slixmpp` pins what they rely on);
    everything else of slixmpp is untouched.
    """

    parser: Any
    xml_depth: int
    xml_root: ET.Element | None
    stream_limits: StreamLimits = StreamLimits()
    # How a sender is named in the log ([log] jids); the component sets its own.
    show_jid: Callable[[str], str] = staticmethod(lambda jid: "-" if jid else "")

    def init_parser(self) -> None:
        """A fresh guarded parser for each connection."""
        self.xml_depth = 0
        self.xml_root = None
        self.parser = GuardedParser(self.stream_limits, self._answer_rejected)

    def data_received(self, data: bytes | str) -> None:
        """Feed the guard; hand complete stanzas to slixmpp, close the stream on errors."""
        stream: Any = self
        parser = self.parser
        if not isinstance(parser, GuardedParser):
            log.warning("data before the connection is established: %d bytes", len(data))
            return
        parser.feed(data)
        for kind, xml in parser.read_events():
            if kind == STREAM_START:
                assert xml is not None
                self.xml_root = xml
                self.xml_depth = 1
                stream.start_stream_handler(xml)
            elif kind == STANZA:
                assert xml is not None
                try:
                    spawn_stanza(stream, xml)
                except Exception:
                    # One stanza that slixmpp cannot digest must not take the link down.
                    log.exception("dropped a stanza that could not be processed: <%s>", xml.tag)
            elif kind == STREAM_END:
                log.debug("end of stream received")
                stream.disconnect_reason = "End of stream"
                stream.abort()
                return
            if self.parser is not parser:  # the connection was reset by a handler
                return
        if parser.error is not None:
            self._close_stream(parser.error)

    def _close_stream(self, error: StreamClosed) -> None:
        stream: Any = self
        log.error("closing the stream: %s (%s)", error.condition, error.text)
        if stream.transport is None:
            return
        # Written by hand: slixmpp 1.17 serialises its StreamError as <stream:stream:error>.
        text = escape(error.text[:200])
        stream.send_raw(
            f"<stream:error><{error.condition} xmlns='{STREAMS_NS}'/>"
            f"<text xmlns='{STREAMS_NS}'>{text}</text></stream:error>"
        )
        stream.disconnect(wait=1.0, reason=f"stream error: {error.condition}")

    def _answer_rejected(self, rejected: Rejected) -> None:
        """Answer an IQ request that was too big or too deep; drop anything else."""
        a = rejected.attrib
        log.warning(
            "rejected <%s> from %r: %s",
            rejected.tag.rpartition("}")[2],
            self.show_jid(a.get("from") or ""),
            rejected.text,
        )
        if rejected.tag.rpartition("}")[2] != "iq" or a.get("type") not in ("get", "set"):
            return
        if "id" not in a or "from" not in a:
            return
        stream: Any = self
        try:
            iq = stream.Iq()
            iq["type"] = "error"
            iq["id"] = a["id"]
            iq["to"] = a["from"]
            iq["from"] = a.get("to") or stream.boundjid
            iq["error"]["type"] = "modify"
            iq["error"]["condition"] = rejected.condition
            iq["error"]["text"] = rejected.text
            iq.send()
        except Exception:
            # A sender JID that does not even parse cannot be answered.
            log.warning(
                "could not answer the rejected stanza from %r", self.show_jid(a.get("from") or "")
            )
