"""slixmpp's private parts that the component uses, read against slixmpp 1.17.

The only module that touches them (tests/test_compat.py checks each):

- The stream parser. The component parses its stream with its own guarded parser
  (:mod:`imserver.xmpp.hardening`), so it overrides ``XMLStream.init_parser`` (called by
  ``connection_made`` for every connection) and ``data_received`` (slixmpp 1.17's logic,
  kept: the root's attributes in ``xml_root``/``xml_depth``, ``start_stream_handler``,
  ``disconnect_reason`` then ``abort()`` at the end of the stream), and hands each
  complete stanza to slixmpp through ``XMLStream._spawn_event``, the call slixmpp's own
  ``data_received`` makes.
- Stanza-error conditions. ``Error.conditions`` is RFC 3920's list, and a condition
  missing from it is silently not written (the client reads ``feature-not-implemented``);
  RFC 6120's ``policy-violation`` is added once per process (it is a class attribute).
- Reconnecting. ``XMLStream.reschedule_connection_attempt`` (slixmpp's back-off grows to
  300 s) is overridden by the component; the retry restarts ``XMLStream._connect_loop``
  with our delay in ``_connect_loop_wait`` as slixmpp's own does.
- Ad-hoc commands. ``XEP_0050._handle_command_all`` is the ``command`` event handler the
  plugin registers; the component puts its guarded path in front of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp import Iq
from slixmpp.plugins.xep_0050.adhoc import XEP_0050
from slixmpp.stanza.error import Error
from slixmpp.xmlstream.xmlstream import XMLStream

from imserver.store.compat import Pin, Private, verify

PIN = Pin("slixmpp", at_least=(1, 17), below=(1, 18))

PRIVATE: tuple[Private, ...] = (
    Private(XMLStream, "init_parser", ("self",), used_by="hardening.HardenedStream overrides"),
    Private(
        XMLStream, "data_received", ("self", "data"), used_by="hardening.HardenedStream overrides"
    ),
    Private(XMLStream, "start_stream_handler", ("self", "xml"), used_by="data_received"),
    Private(XMLStream, "_spawn_event", ("self", "xml"), used_by="spawn_stanza"),
    Private(XMLStream, "parser", annotated=True, used_by="hardening.HardenedStream"),
    Private(XMLStream, "xml_depth", annotated=True, used_by="hardening.HardenedStream"),
    Private(XMLStream, "xml_root", annotated=True, used_by="hardening.HardenedStream"),
    Private(XMLStream, "disconnect_reason", annotated=True, used_by="hardening.HardenedStream"),
    Private(Error, "conditions", used_by="allow_conditions"),
    Private(
        XMLStream,
        "reschedule_connection_attempt",
        ("self",),
        used_by="component.Component overrides",
    ),
    Private(XMLStream, "_connect_loop", ("self",), coroutine=True, used_by="retry_connect"),
    Private(XMLStream, "_connect_loop_wait", annotated=True, used_by="retry_connect"),
    Private(XMLStream, "_current_connection_attempt", annotated=True, used_by="retry_connect"),
    Private(XEP_0050, "_handle_command_all", ("self", "iq"), coroutine=True, used_by="guard_adhoc"),
)

# Stanza-error conditions of RFC 6120 that slixmpp 1.17 does not know.
RFC6120_CONDITIONS = frozenset({"policy-violation"})


def check() -> None:
    """Warn on a slixmpp outside the pin; refuse one where a private name moved."""
    verify(PIN, PRIVATE)


def spawn_stanza(stream: XMLStream, xml: ET.Element) -> None:
    """Turn a parsed stanza into slixmpp's stanza object and run its handlers."""
    stream._spawn_event(xml)


def allow_conditions(conditions: frozenset[str] = RFC6120_CONDITIONS) -> None:
    """Let slixmpp write these stanza-error conditions (process-wide, once)."""
    missing = conditions - Error.conditions
    if missing:
        Error.conditions = Error.conditions | missing


def retry_connect(stream: XMLStream, delay: float) -> asyncio.Future[Any] | None:
    """Run slixmpp's connect loop again after ``delay`` seconds (its own retry, our delay)."""
    stream._connect_loop_wait = delay
    stream._current_connection_attempt = asyncio.ensure_future(stream._connect_loop())
    return stream._current_connection_attempt


AdHocHandler = Callable[[Iq], Awaitable[None]]


def guard_adhoc(stream: XMLStream, plugin: XEP_0050, guarded: AdHocHandler) -> AdHocHandler:
    """Put ``guarded`` in place of the plugin's ``command`` event handler.

    Returns the plugin's handler, for ``guarded`` to call once its checks passed.
    """
    original: AdHocHandler = plugin._handle_command_all
    stream.del_event_handler("command", original)
    stream.add_event_handler("command", guarded)
    return original
