"""One command definition, two front-ends (ad-hoc XEP-0050 and chat text).

A :class:`Command` declares its name, chat keywords, ad-hoc node, help text, the
capabilities (imserver.service.authz) that let a sender run it and the fields it needs.
Its ``run`` calls the service layer and returns a plain result object (:class:`Text`,
:class:`Table`, :class:`Confirmation` or :class:`Choice`); :mod:`.adhoc` and :mod:`.chat`
render them.
Nothing here knows about stanzas.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from imserver.domain.money import format_amount
from imserver.service.authz import Capability
from imserver.service.errors import bad_request

if TYPE_CHECKING:
    from imserver.service.registry import Services

FieldKind = Literal["text", "jid", "list", "bool", "int"]
Args = dict[str, str]


@dataclass(frozen=True)
class Field:
    """One input of a command: a form field in ad-hoc, a word of the text command in chat."""

    var: str
    label: str
    kind: FieldKind = "text"
    required: bool = True
    desc: str = ""
    options: tuple[tuple[str, str], ...] = ()  # (value, label) for kind "list"
    # In chat, the last field may take every remaining word (a reason, a name).
    rest: bool = False


@dataclass(frozen=True)
class Money:
    """An amount in minor units; both renderers show it with symbol and decimals."""

    minor: int
    currency: str

    def __str__(self) -> str:
        return format_amount(self.minor, self.currency)


Cell = str | int | Money | None


def cell_text(value: Cell) -> str:
    """The text of a result cell ("" for an empty one)."""
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Text:
    """A message, optionally with labelled details (a record)."""

    title: str
    details: list[tuple[str, Cell]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Column:
    var: str
    label: str


@dataclass(frozen=True)
class Table:
    """Rows of a result (XEP-0004 reported/items in ad-hoc, short lines in chat)."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Cell]]
    footer: str = ""
    empty: str = "nothing to show"


@dataclass(frozen=True)
class Confirmation:
    """A question before an irreversible action; ``proceed`` runs it once confirmed."""

    prompt: str
    proceed: Callable[[], Awaitable[Result]]


@dataclass(frozen=True)
class Choice:
    """A question a person answers by picking one option (a district near a border).

    ``options`` are ``(value, label)``; ``lines`` are shown with the question (the
    options' map links). The answer runs the command again with the value picked in
    its field ``var`` (its checks see the present, like a confirmed step).
    """

    prompt: str
    var: str
    options: tuple[tuple[str, str], ...]
    lines: tuple[str, ...] = ()

    def pick(self, answer: str) -> str | None:
        """The value an answer names: an option's value, or its number from 1; else None."""
        text = answer.strip()
        values = [value for value, _ in self.options]
        if text in values:
            return text
        if text.isdigit() and 1 <= int(text) <= len(values):
            return values[int(text) - 1]
        return None

    def field(self) -> Field:
        """The form field that asks for the pick."""
        return Field(self.var, "Choose", "list", options=self.options)


Result = Text | Table | Confirmation | Choice


@dataclass(frozen=True)
class Form:
    """The input prompt of a command, built from its fields."""

    title: str
    instructions: str
    fields: tuple[Field, ...]


class Command:
    """Base of every command. Subclasses set the class attributes and ``run``."""

    name: ClassVar[str]  # human name: the ad-hoc command's name
    node: ClassVar[str]  # the ad-hoc node
    keywords: ClassVar[tuple[str, ...]]  # chat keywords, canonical first; may hold spaces
    help: ClassVar[str]
    # Any one of these lets a sender run the command; empty: anyone may.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    fields: ClassVar[tuple[Field, ...]] = ()
    # False: the ad-hoc command runs at once, its fields being chat-only refinements.
    adhoc_form: ClassVar[bool] = True
    # True when ``run`` may answer a Confirmation (the ad-hoc form then offers "next").
    confirms: ClassVar[bool] = False

    def __init__(self, services: Services) -> None:
        self.services = services

    async def run(self, actor: str, args: Args) -> Result:
        """Call the service for ``actor`` (a normalised bare JID) with parsed ``args``."""
        raise NotImplementedError

    @property
    def keyword(self) -> str:
        """The canonical chat keyword."""
        return self.keywords[0]

    @property
    def usage(self) -> str:
        """``keyword <required> [optional]`` as typed in chat."""
        words = [self.keyword]
        for f in self.fields:
            words.append(f"<{f.var}>" if f.required else f"[{f.var}]")
        return " ".join(words)

    def form(self) -> Form:
        """The ad-hoc form that asks for the command's fields."""
        return Form(self.name, self.help, self.fields)

    def visible_to(self, capabilities: frozenset[Capability]) -> bool:
        """True when a sender with these capabilities may run the command."""
        return not self.capabilities or bool(self.capabilities & capabilities)


def required(args: Args, var: str) -> str:
    """A field's value, or bad-request naming it (front-ends check first; this is a guard)."""
    value = args.get(var, "").strip()
    if not value:
        raise bad_request(f"{var} is required")
    return value


def optional(args: Args, var: str) -> str | None:
    """A field's value, or None when empty."""
    value = args.get(var, "").strip()
    return value or None


def int_arg(args: Args, var: str, default: int = 0) -> int:
    """A non-negative integer field."""
    value = optional(args, var)
    if value is None:
        return default
    if not value.isdigit() or len(value) > 9:
        raise bad_request(f"{var} must be a whole number")
    return int(value)
