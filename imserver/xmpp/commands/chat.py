"""The chat front-end: the same commands as text in a chat message to the component.

Most chat clients (Conversations, Dino) show no ad-hoc commands, so this is the main way
people use the network. Answers are short, for a phone's chat window.
"""

from __future__ import annotations

import logging
import shlex
from typing import TYPE_CHECKING

from slixmpp import Message
from slixmpp.exceptions import XMPPError

from imserver.service.errors import ServiceError
from imserver.service.sessions import SessionRecord
from imserver.xmpp.commands.base import (
    Args,
    Choice,
    Command,
    Confirmation,
    Result,
    Table,
    Text,
    cell_text,
)
from imserver.xmpp.commands.registry import CommandSet
from imserver.xmpp.pipeline import Refused
from plugins.distribution import NS

if TYPE_CHECKING:
    from imserver.xmpp.component import Component

log = logging.getLogger(__name__)

CHAT = "chat"  # the operation of a text message, in the pipeline's log and counters
MAX_BODY = 2000  # characters of a command worth parsing
MAX_ROWS = 30  # table rows in one chat answer
CONFIRM_TTL = 120.0  # seconds a question waits for "yes"
# What a person reads when the work failed: the database is out of service for a while
# (an error of type wait), or the request failed in a way they cannot fix.
BRIEFLY_UNAVAILABLE = (
    "The service is briefly unavailable (it cannot reach its database); nothing was "
    "changed. Please send the same command again in a minute."
)
FAILED = (
    "That failed on our side; nothing was changed. Please try again; if it keeps "
    "failing, tell an admin (the time of your message helps them find it in the log)."
)
YES = {"yes", "y", "ok", "confirm"}
NO = {"no", "n", "cancel"}
BOOL_WORDS = {
    "yes": "true",
    "y": "true",
    "true": "true",
    "1": "true",
    "on": "true",
    "no": "false",
    "n": "false",
    "false": "false",
    "0": "false",
    "off": "false",
}


class UsageError(Exception):
    """A text command whose words do not fit the command's fields."""


def tokenize(body: str) -> list[str]:
    """Words of a text command; double or single quotes group words ("Tea House")."""
    try:
        return shlex.split(body)
    except ValueError:  # an unbalanced quote: take the words as typed
        return body.split()


def bind(command: Command, words: list[str]) -> Args:
    """Map the words after the keyword to the command's fields.

    Words fill the fields in order; ``field=value`` names one; a ``rest`` field takes
    every remaining word.
    """
    args: Args = {}
    positional: list[str] = []
    names = {f.var for f in command.fields}
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key.lower() in names and key.lower() not in args:
            args[key.lower()] = value
        else:
            positional.append(word)
    pending = [f for f in command.fields if f.var not in args]
    for f in pending:
        if not positional:
            break
        if f.rest:
            args[f.var] = " ".join(positional)
            positional = []
        else:
            args[f.var] = positional.pop(0)
    if positional:
        raise UsageError(f"too many words: {' '.join(positional)[:80]}")
    for f in command.fields:
        if f.kind == "bool" and f.var in args:
            word = args[f.var].lower()
            if word not in BOOL_WORDS:
                raise UsageError(f"{f.var} must be yes or no")
            args[f.var] = BOOL_WORDS[word]
    missing = [f.var for f in command.fields if f.required and not args.get(f.var, "").strip()]
    if missing:
        raise UsageError("missing " + ", ".join(missing))
    return args


def render(result: Text | Table) -> str:
    """The chat text of a result."""
    lines = [result.title]
    if isinstance(result, Text):
        lines += [f"{label}: {cell_text(value)}" for label, value in result.details]
        lines += result.lines
        return "\n".join(lines)
    if not result.rows:
        lines.append(result.empty)
    for row in result.rows[:MAX_ROWS]:
        cells = [cell_text(row.get(c.var)) for c in result.columns]
        lines.append(" · ".join(c for c in cells if c))
    if len(result.rows) > MAX_ROWS:
        lines.append(f"… and {len(result.rows) - MAX_ROWS} more")
    if result.footer:
        lines.append(result.footer)
    return "\n".join(lines)


def choice_text(choice: Choice) -> str:
    """A choice as a numbered list, for a reply with a number or a value."""
    lines = [choice.prompt]
    lines += [f"{n}. {label}" for n, (_, label) in enumerate(choice.options, start=1)]
    lines += choice.lines
    lines.append("Reply with the number or the code to choose; anything else cancels.")
    return "\n".join(lines)


def usage_text(command: Command) -> str:
    """How to type a command."""
    return f"Usage: {command.usage}\n{command.help}"


class Chat:
    """Answers text commands sent to the component's JID."""

    def __init__(self, component: Component, commands: CommandSet) -> None:
        self.component = component
        self.commands = commands
        self.services = component.services
        component.add_event_handler("message", self._on_message)

    def _wanted(self, msg: Message) -> bool:
        if msg["type"] not in ("chat", "normal"):
            return False
        me = self.component.boundjid
        to = msg["to"]
        if to.bare != me.bare:
            return False  # addressed to some JID under the component, not to it
        sender = msg["from"]
        if sender.domain == me.domain or not sender.user:
            return False  # our own notifications, or a server echoing a message
        if msg.xml.find(f"{{{NS}}}earning") is not None:
            return False
        return bool(msg["body"].strip())

    async def _on_message(self, msg: Message) -> None:
        if not self._wanted(msg):
            return
        body = msg["body"].strip()
        try:
            answer = await self.component.pipeline.run(
                CHAT, msg, lambda actor: self.answer(actor, body), what="command"
            )
        except Refused as refused:
            self._refused(msg, refused)
            return
        except XMPPError as exc:
            # Logged by the pipeline; a person gets a sentence, not a stanza error.
            answer = BRIEFLY_UNAVAILABLE if exc.etype == "wait" else FAILED
        self.component.make_message(
            mto=msg["from"], mfrom=self.component.boundjid, mbody=answer, mtype="chat"
        ).send()

    def _refused(self, msg: Message, refused: Refused) -> None:
        """A sender JID that does not parse is ignored; over the rate limit, the first
        refused message of a run gets a ``resource-constraint`` error back and later ones
        are dropped silently, so that a flood is not answered by a flood."""
        if refused.condition != "resource-constraint":
            return
        if self.component.limiter.first_refusal(refused.sender) and msg["type"] != "error":
            reply = msg.reply(clear=True)
            reply["type"] = "error"
            reply["error"]["type"] = "wait"
            reply["error"]["condition"] = "resource-constraint"
            reply["error"]["text"] = "too many messages: wait a moment before sending more"
            reply.send()

    async def answer(self, actor: str, body: str) -> str:
        """The reply to one text from ``actor``."""
        if len(body) > MAX_BODY:
            return f"That is too long ({len(body)} characters); say help for the commands."
        # A question waits in the database, so that the "yes" may reach any process (or
        # this one after a restart); whatever the next message is, the question ends.
        pending = await self.services.sessions.take(_question(actor))
        if pending is not None:
            word = body.lower().strip(" .!")
            command = self.commands.by_node.get(pending.node)
            if pending.step == "choose" and command is not None and word not in NO:
                picked = await self._pick(actor, command, pending.args, body.strip(" .!"))
                if picked is not None:
                    return picked
            elif word in YES and command is not None:
                return await self._run(actor, command, pending.args, confirmed=True)
            if word in NO or word in YES:
                return "Cancelled: nothing was changed."
        words = tokenize(body)
        found = self.commands.match(words)
        if found is None:
            return await self._not_understood(actor, words)
        command, used = found
        try:
            args = bind(command, words[used:])
        except UsageError as exc:
            # Tell how to use a command only to those who may run it.
            try:
                if command.capabilities:
                    await self.services.queries.require_any(actor, command.capabilities)
            except ServiceError as refusal:
                return self._error(refusal)
            return f"{exc}.\n{usage_text(command)}"
        # The service decides, with its own precise refusal (e.g. "already a member").
        return await self._run(actor, command, args)

    async def _run(
        self, actor: str, command: Command, args: Args, *, confirmed: bool = False
    ) -> str:
        """Run a command; a confirmed one runs again (its checks see the present) and
        then proceeds."""
        try:
            result: Result = await command.run(actor, args)
            if confirmed and isinstance(result, Confirmation):
                result = await result.proceed()
        except ServiceError as exc:
            return self._failed(command, exc)
        return await self._shown(actor, command, args, result)

    async def _pick(self, actor: str, command: Command, args: Args, reply: str) -> str | None:
        """A reply to a choice: the command again with the value picked, or None when the
        reply picks no option (it is then read as a command of its own)."""
        try:
            result = await command.run(actor, args)  # again: its checks see the present
        except ServiceError as exc:
            return self._failed(command, exc)
        if not isinstance(result, Choice):
            return await self._shown(actor, command, args, result)
        value = result.pick(reply)
        if value is None:
            return None
        return await self._run(actor, command, {**args, result.var: value})

    def _failed(self, command: Command, exc: ServiceError) -> str:
        self.component.pipeline.refused(exc)  # answered here, not by the pipeline
        text = self._error(exc)
        if exc.condition == "bad-request":
            text += f"\nUsage: {command.usage}"
        return text

    async def _shown(self, actor: str, command: Command, args: Args, result: Result) -> str:
        """A result as the reply; a question is kept for the sender's next message."""
        if isinstance(result, Confirmation | Choice):
            step = "confirm" if isinstance(result, Confirmation) else "choose"
            question = SessionRecord(_question(actor), actor, "", command.node, step, args)
            await self.services.sessions.keep(question, CONFIRM_TTL)
            if isinstance(result, Choice):
                return choice_text(result)
            return f"{result.prompt}\nReply yes to confirm; anything else cancels."
        return render(result)

    def _error(self, exc: ServiceError) -> str:
        text = f"Not done: {exc.text}."
        if exc.condition == "registration-required":
            join = self.commands.by_node.get("join")
            if join is not None:
                text += f"\nTo join: {join.usage}"
        return text

    async def _not_understood(self, actor: str, words: list[str]) -> str:
        access = await self.services.queries.access(actor)
        visible = self.commands.visible(access.capabilities)
        typed = words[0][:40] if words else ""
        close = self.commands.suggest(words, visible)
        if not close:
            return f"I don't know “{typed}”. Say help for what you can do."
        lines = [f"I don't know “{typed}”. Did you mean:"]
        lines += [f"{c.usage} — {c.help}" for c in close]
        return "\n".join(lines)


def _question(actor: str) -> str:
    """The key of the question waiting for ``actor``'s yes."""
    return f"chat:{actor}"
