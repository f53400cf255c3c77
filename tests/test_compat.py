"""The private parts of libraries we rely on are still where our code expects them.

One test per patched library: the installed version is within the range the code was
read against, and every private name is there with the expected signature. A failure
here after an upgrade means: read the library's new source where the compat module
points, adjust the code, then widen the pin.
"""

from __future__ import annotations

import inspect

import pytest
from slixmpp.stanza.error import Error
from slixmpp.xmlstream.xmlstream import XMLStream

from imserver.store import compat as store_compat
from imserver.store.compat import Pin, Private, verify
from imserver.xmpp.compat import slixmpp as slixmpp_compat


def _assert_pinned(pin: Pin, names: tuple[Private, ...]) -> None:
    assert pin.holds(), f"{pin.distribution} {pin.installed()} is outside {pin}"
    problems = [p for p in (n.problem() for n in names) if p]
    assert not problems, problems


def test_slixmpp() -> None:
    _assert_pinned(slixmpp_compat.PIN, slixmpp_compat.PRIVATE)
    # Our parser is only used if slixmpp still builds one per connection through
    # init_parser, and stops using it when the connection is lost.
    assert "self.init_parser()" in inspect.getsource(XMLStream.connection_made)
    assert "self.parser = None" in inspect.getsource(XMLStream.connection_lost)
    # The guarded ad-hoc path replaces the handler the plugin registers for "command".
    assert "'command', self._handle_command_all" in inspect.getsource(
        slixmpp_compat.XEP_0050.plugin_init
    )
    assert isinstance(Error.conditions, set)


def test_slixmpp_conditions_widened_once() -> None:
    slixmpp_compat.allow_conditions()
    widened = Error.conditions
    assert widened >= slixmpp_compat.RFC6120_CONDITIONS
    slixmpp_compat.allow_conditions()
    assert Error.conditions is widened  # nothing rebuilt the second time


def test_aiosqlite() -> None:
    _assert_pinned(store_compat.AIOSQLITE, store_compat.AIOSQLITE_PRIVATE)
    assert isinstance(inspect.getattr_static(store_compat.aiosqlite.Connection, "_conn"), property)


class _Library:
    """A stand-in library whose private method moved in a 'new release'."""

    async def _execute(self, fn: object) -> None:  # lost *args, **kwargs
        return None


def test_a_moved_name_is_reported() -> None:
    pin = Pin("aiosqlite", at_least=(0,), below=(999,))
    checks = (
        Private(_Library, "_execute", ("self", "fn", "args", "kwargs"), coroutine=True),
        Private(_Library, "_gone"),
        Private(_Library, "_declared", annotated=True),
    )
    problems = [c.problem() for c in checks]
    assert all(problems), problems
    with pytest.raises(RuntimeError, match="_gone is gone"):
        verify(pin, checks)
    assert not Pin("aiosqlite", at_least=(999,), below=(1000,)).holds()
    assert not Pin("no-such-distribution-here", at_least=(0,), below=(1,)).holds()
