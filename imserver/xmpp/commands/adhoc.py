"""The XEP-0050 front-end: each command as an ad-hoc command with XEP-0004 forms.

A session's pending step (the form to submit, the confirmation to give) is kept in the
database before the answer goes out (``services.sessions``), so that the next step may
reach any process (several share one component name behind ejabberd) or this one after
a restart: a process that does not hold the session rebuilds it from that record.
slixmpp's session objects (with their step functions) live in :class:`SessionStore`,
which frees a session as soon as its command has completed and expires abandoned ones:
slixmpp's default dict keeps every session forever, and ``add_command(timeout=…)`` would
send a cancel stanza *from the user's JID*, which the XMPP server refuses from a
component.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from slixmpp import JID, Iq
from slixmpp.exceptions import XMPPError
from slixmpp.plugins.xep_0004 import Form as XForm
from slixmpp.plugins.xep_0030.stanza.items import DiscoItems
from slixmpp.plugins.xep_0050.stanza import Command as AdHocCommand
from slixmpp.xmlstream import register_stanza_plugin

from imserver.domain.jids import InvalidJid, normalize_jid
from imserver.service.errors import ServiceError
from imserver.service.sessions import SessionRecord
from imserver.xmpp.commands.base import (
    Args,
    Command,
    Confirmation,
    Field,
    Form,
    Result,
    Table,
    Text,
    cell_text,
)
from imserver.xmpp.commands.registry import CommandSet
from imserver.xmpp.compat import slixmpp as slixmpp_compat
from imserver.xmpp.pipeline import sender_of

if TYPE_CHECKING:
    from imserver.xmpp.component import Component

log = logging.getLogger(__name__)

COMMANDS_NS = "http://jabber.org/protocol/commands"
SESSION_TTL = 600.0  # seconds an unfinished session waits for the next step
MAX_SESSIONS = 10_000  # beyond this, the oldest unfinished sessions are dropped
TRUE = {"1", "true", "yes"}
_SLUG = re.compile(r"[^a-z0-9]+")

FIELD_TYPES = {
    "text": "text-single",
    "jid": "jid-single",
    "list": "list-single",
    "bool": "boolean",
    "int": "text-single",
}

Session = dict[str, Any]


class SessionStore(MutableMapping[str, Session]):
    """XEP-0050 session storage (plugged in as the plugin's ``session_db``).

    slixmpp writes every session back after each step, completed or not; a completed
    session (no ``next`` step) is dropped right there, and an unfinished one expires
    ``ttl`` seconds after its last step.
    """

    def __init__(
        self,
        ttl: float = SESSION_TTL,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self.clock = clock
        self._data: dict[str, tuple[float, Session]] = {}

    def _purge(self) -> None:
        now = self.clock()
        for key in [k for k, (deadline, _) in self._data.items() if deadline <= now]:
            del self._data[key]
        # Insertion order is age order: drop the oldest when flooded.
        while len(self._data) > self.max_sessions:
            del self._data[next(iter(self._data))]

    def __setitem__(self, key: str, session: Session) -> None:
        if session.get("next") is None:
            self._data.pop(key, None)
            return
        self._data.pop(key, None)
        self._data[key] = (self.clock() + self.ttl, session)
        self._purge()

    def __getitem__(self, key: str) -> Session:
        self._purge()
        return self._data[key][1]

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        self._purge()
        return iter(list(self._data))

    def __len__(self) -> int:
        self._purge()
        return len(self._data)


def _slug(label: str) -> str:
    return _SLUG.sub("-", label.lower()).strip("-") or "value"


def render_form(form: Form) -> XForm:
    """The XEP-0004 form that asks for a command's fields."""
    x = XForm()
    x["type"] = "form"
    x["title"] = form.title
    x["instructions"] = form.instructions
    for f in form.fields:
        x.add_field(
            var=f.var,
            ftype=FIELD_TYPES[f.kind],
            label=f.label,
            desc=f.desc,
            required=f.required,
            options=[{"value": v, "label": lab} for v, lab in f.options] or None,
        )
    return x


def render_result(result: Text | Table) -> XForm:
    """A Text as a result form of labelled values; a Table as reported columns and items."""
    x = XForm()
    x["type"] = "result"
    x["title"] = result.title
    if isinstance(result, Text):
        if result.lines:
            x["instructions"] = "\n".join(result.lines)
        used: set[str] = set()
        for label, value in result.details:
            var = _slug(label)
            while var in used:
                var += "_"
            used.add(var)
            x.add_field(var=var, ftype="text-single", label=label, value=cell_text(value))
        return x
    notes = [result.footer] if result.footer else []
    if not result.rows:
        notes.insert(0, result.empty)
    if notes:
        x["instructions"] = "\n".join(notes)
    for col in result.columns:
        x.add_reported(col.var, ftype="text-single", label=col.label)
    for row in result.rows:
        x.add_item({col.var: cell_text(row.get(col.var)) for col in result.columns})
    return x


CONFIRM = Field("confirm", "Yes, do it", "bool")


def form_args(payload: Any, fields: tuple[Field, ...]) -> Args:
    """The submitted values of a command's fields, as text (unknown fields ignored)."""
    forms = payload if isinstance(payload, list) else [payload]
    values: dict[str, Any] = {}
    for item in forms:
        if isinstance(item, XForm) and item["type"] in ("submit", ""):
            values.update(item.get_values())
    args: Args = {}
    for f in fields:
        value = values.get(f.var)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = "\n".join(str(v) for v in value)
        else:
            text = str(value)
        if f.kind == "bool":
            text = "true" if text.strip().lower() in TRUE else "false"
        if text.strip():
            args[f.var] = text.strip()
    missing = [f.label for f in fields if f.required and f.var not in args]
    if missing:
        raise ServiceError("bad-request", "required: " + ", ".join(missing))
    return args


class AdHoc:
    """Serves a CommandSet over XEP-0050 on the component's own JID."""

    def __init__(self, component: Component, commands: CommandSet) -> None:
        self.component = component
        self.commands = commands
        self.services = component.services
        self.store = SessionStore()
        component.register_plugin("xep_0004")
        component.register_plugin("xep_0050", pconfig={"session_db": self.store})
        self.plugin = component.plugin["xep_0050"]
        # slixmpp parses a form inside <command/> only once this process has sent one (it
        # registers the payload class as it answers); a step of a session started by
        # another process may be the first command this one sees.
        register_stanza_plugin(AdHocCommand, XForm, iterable=True)
        # Only the JID that started a session may continue it (slixmpp does not check).
        self._handle_command = slixmpp_compat.guard_adhoc(component, self.plugin, self._guarded)
        for command in commands:
            self.add(command)
        component.plugin["xep_0030"].set_node_handler(
            "get_items", jid=component.boundjid, node=COMMANDS_NS, handler=self._list
        )

    def add(self, command: Command) -> None:
        """Offer one command on the component's JID."""
        self.plugin.add_command(
            jid=self.component.boundjid,
            node=command.node,
            name=command.name,
            handler=self._starter(command),
        )

    async def _guarded(self, iq: Iq) -> None:
        """Every ad-hoc request takes the guarded path, then slixmpp's XEP-0050 handling.

        Starting a command checks its capabilities first (before a form is shown); every
        later step rebuilds the session from the database, and only for the full JID that
        started it (slixmpp does not check).
        """
        sessionid = iq["command"]["sessionid"]
        command = self.commands.by_node.get(iq["command"]["node"])
        # slixmpp looks commands up by (to, node): one sent elsewhere is item-not-found.
        if iq["to"].full != self.component.boundjid.full:
            command = None
        capabilities = command.capabilities if command and not sessionid else frozenset()

        async def continue_(_sender: str) -> None:
            if sessionid:
                # The database holds the session's current step: another process may
                # have taken the last one, so what this one remembers may be behind.
                await self._restore(iq, sessionid)
            await self._handle_command(iq)

        # Operations are the offered nodes only: the counters must stay bounded.
        operation = f"adhoc {command.node}" if command else "adhoc ?"
        await self.component.pipeline.run(
            operation, iq, continue_, capabilities=capabilities, what="command"
        )

    async def _restore(self, iq: Iq, sessionid: str) -> None:
        """Rebuild a session at its current step, whichever process (or earlier run of
        this one) took the step before."""
        record = await self.services.sessions.find(_key(sessionid))
        if record is None:
            raise XMPPError(
                "bad-request",
                text="this command session has ended or expired: start the command again",
                extension="bad-sessionid",
                extension_ns=COMMANDS_NS,
            )
        command = self.commands.by_node.get(record.node)
        sender = iq["from"]
        if command is None or (record.owner, record.resource) != (
            sender_of(iq),
            sender.resource,
        ):
            raise XMPPError("item-not-found", text="no such session")
        if record.step == "submit":
            step = self._submitter(command, record.owner)
        else:
            step = self._confirmer(command, record.owner, record.args)
        self.store[sessionid] = {
            "id": sessionid,
            "from": JID(sender.full),
            "to": iq["to"],
            "node": record.node,
            "payload": None,
            "interfaces": {"form"},
            "payload_classes": {XForm},
            "notes": None,
            "has_next": record.step == "submit" and command.confirms,
            "allow_complete": False,
            "allow_prev": False,
            "past": [],
            "next": step,
            "prev": None,
            "cancel": self._cancel,
        }

    async def _list(self, jid: Any, node: Any, ifrom: Any, args: Any) -> DiscoItems:
        """disco#items on the commands node: only what the asking JID may run."""
        items = DiscoItems()
        items["node"] = COMMANDS_NS
        try:
            access = await self.services.queries.access(normalize_jid(ifrom.bare))
        except (InvalidJid, ServiceError):
            return items
        for command in self.commands.visible(access.capabilities):
            items.add_item(self.component.boundjid, command.node, command.name)
        return items

    def _starter(self, command: Command) -> Callable[[Iq, Session], Awaitable[Session]]:
        async def start(iq: Iq, session: Session) -> Session:
            actor = sender_of(iq)  # parsed already by the pipeline: it cannot fail here
            session["cancel"] = self._cancel

            async def step() -> Session:
                if not command.fields or not command.adhoc_form:
                    return await self._show(
                        session, command, actor, {}, await command.run(actor, {})
                    )
                session["payload"] = render_form(command.form())
                session["next"] = self._submitter(command, actor)
                session["has_next"] = command.confirms
                await self._keep(session, command, actor, "submit", {})
                return session

            return await self._freeing(session, step)

        return start

    def _submitter(
        self, command: Command, actor: str
    ) -> Callable[[Any, Session], Awaitable[Session]]:
        async def submit(payload: Any, session: Session) -> Session:
            async def step() -> Session:
                args = form_args(payload, command.fields)
                return await self._show(
                    session, command, actor, args, await command.run(actor, args)
                )

            return await self._freeing(session, step)

        return submit

    async def _freeing(self, session: Session, step: Callable[[], Awaitable[Session]]) -> Session:
        """Run a step; on failure free its session (the pipeline answers the error)."""
        try:
            return await step()
        except Exception:
            self.store.pop(session["id"], None)
            await self.services.sessions.drop(_key(session["id"]))
            raise

    async def _keep(
        self, session: Session, command: Command, actor: str, step: str, args: Args
    ) -> None:
        """Put the session's pending step where every process finds it, before the
        answer that offers it goes out."""
        record = SessionRecord(
            _key(session["id"]), actor, session["from"].resource, command.node, step, args
        )
        await self.services.sessions.keep(record, SESSION_TTL)

    async def _cancel(self, _iq: Iq, session: Session) -> None:
        await self.services.sessions.drop(_key(session["id"]))

    async def _show(
        self, session: Session, command: Command, actor: str, args: Args, result: Result
    ) -> Session:
        """Put a result into the session: a confirmation step, or the final answer."""
        session["has_next"] = False
        session["allow_prev"] = False
        if isinstance(result, Confirmation):
            form = Form("Confirm", result.prompt, (CONFIRM,))
            session["payload"] = render_form(form)
            session["next"] = self._confirmer(command, actor, args)
            await self._keep(session, command, actor, "confirm", args)
            return session
        session["payload"] = render_result(result)
        session["notes"] = [("info", result.title)]
        session["next"] = None
        await self.services.sessions.drop(_key(session["id"]))
        return session

    def _confirmer(
        self, command: Command, actor: str, args: Args
    ) -> Callable[[Any, Session], Awaitable[Session]]:
        async def confirm(payload: Any, session: Session) -> Session:
            async def step() -> Session:
                answer = form_args(payload, (Field("confirm", "Yes, do it", "bool", False),))
                if answer.get("confirm") != "true":
                    cancelled = Text("Cancelled: nothing was changed.")
                    return await self._show(session, command, actor, args, cancelled)
                # The command runs again (its checks see the present), then proceeds.
                result = await command.run(actor, args)
                if isinstance(result, Confirmation):
                    result = await result.proceed()
                return await self._show(session, command, actor, args, result)

            return await self._freeing(session, step)

        return confirm


def _key(sessionid: str) -> str:
    """The database key of an ad-hoc session."""
    return f"adhoc:{sessionid}"
