"""Private parts of libraries that imserver relies on: what, where, and for which versions.

A library's private names can move in any release without notice. Each patched library
has one compat module that declares the versions its code was read against (a
:class:`Pin`) and every private name it uses (a :class:`Private`);
tests/test_compat.py fails when the installed version leaves the range or a name moves
or changes its signature, so an upgrade is a deliberate act: read the new source, adjust
the code, widen the pin. At start the component logs a warning when a pin does not hold
and refuses to start when a private name is gone (it would fail on first use anyway,
with a less clear message).

This module holds those two types (the XMPP layer's compat package uses them too: the
store sits below it) and the store's own entry, aiosqlite, used by
:mod:`imserver.store.sqlite_driver`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import aiosqlite

log = logging.getLogger(__name__)


def _numbers(text: str) -> tuple[int, ...]:
    """``"1.17.0rc1"`` -> ``(1, 17, 0)``: the leading release numbers of a version."""
    found = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(n) for n in found.group().split(".")) if found else ()


@dataclass(frozen=True)
class Pin:
    """The versions of a library whose private parts our code was written against."""

    distribution: str
    at_least: tuple[int, ...]
    below: tuple[int, ...]

    def installed(self) -> str:
        """The installed version ("" when the distribution is not installed)."""
        try:
            return version(self.distribution)
        except PackageNotFoundError:
            return ""

    def holds(self) -> bool:
        """True when the installed version is within ``[at_least, below)``."""
        got = _numbers(self.installed())
        return bool(got) and self.at_least <= got < self.below

    def __str__(self) -> str:
        low, high = (".".join(map(str, v)) for v in (self.at_least, self.below))
        return f"{self.distribution} >={low},<{high}"


@dataclass(frozen=True)
class Private:
    """One private (or overridden) name of a library that our code uses.

    ``params`` are the parameter names expected of a callable (None: an attribute that
    must exist, ``annotated``: declared on the class only as an annotation, as slixmpp
    does for attributes set in ``__init__``).
    """

    owner: type
    name: str
    params: tuple[str, ...] | None = None
    coroutine: bool = False
    annotated: bool = False
    used_by: str = ""

    def problem(self) -> str | None:
        """What is wrong with this name in the installed library, or None."""
        where = f"{self.owner.__module__}.{self.owner.__qualname__}.{self.name}"
        if self.annotated:
            found = any(self.name in getattr(k, "__annotations__", {}) for k in self.owner.__mro__)
            return None if found else f"{where} is no longer declared"
        if not hasattr(self.owner, self.name):
            return f"{where} is gone"
        if self.params is None:
            return None
        attr = inspect.getattr_static(self.owner, self.name)
        func = getattr(self.owner, self.name)
        if not callable(func) or isinstance(attr, property):
            return f"{where} is no longer a method"
        got = tuple(inspect.signature(func).parameters)
        if got != self.params:
            return f"{where} takes {got}, expected {self.params}"
        if inspect.iscoroutinefunction(func) != self.coroutine:
            return f"{where} is {'no longer' if self.coroutine else 'now'} a coroutine"
        return None


def verify(pin: Pin, names: tuple[Private, ...]) -> None:
    """Warn when ``pin`` does not hold; raise RuntimeError when a private name moved."""
    if not pin.holds():
        log.warning(
            "%s %s is installed; this code was written for %s: check the private names "
            "in %s (tests/test_compat.py)",
            pin.distribution, pin.installed() or "(none)", pin, __name__,
        )  # fmt: skip
    problems = [p for p in (n.problem() for n in names) if p]
    if problems:
        raise RuntimeError(
            f"{pin.distribution} {pin.installed()} changed what imserver relies on "
            f"(written for {pin}): " + "; ".join(problems)
        )


# aiosqlite: the worker thread's queue and the sqlite3 connection behind it.
# Read against 0.22.1 (the queue and the property are older, but that is what was checked).
AIOSQLITE = Pin("aiosqlite", at_least=(0, 22), below=(0, 23))
AIOSQLITE_PRIVATE: tuple[Private, ...] = (
    Private(
        aiosqlite.Connection,
        "_execute",
        ("self", "fn", "args", "kwargs"),
        coroutine=True,
        used_by="sqlite_driver.OneHopCursor: one function per statement on the worker thread",
    ),
    # A property (no parameters to check): the sqlite3 connection the worker thread owns.
    Private(aiosqlite.Connection, "_conn", used_by="sqlite_driver.OneHopCursor"),
)


@functools.cache
def verify_aiosqlite() -> None:
    """Check aiosqlite before the one-hop driver is first used (once per process)."""
    verify(AIOSQLITE, AIOSQLITE_PRIVATE)
