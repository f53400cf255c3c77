"""Driving the human interface from a test client: ad-hoc commands and chat text."""

from __future__ import annotations

import asyncio
from typing import Any

from slixmpp import Iq
from slixmpp.plugins.xep_0004 import Form

from tests.support.clients import NS, Client

COMMANDS_NS = "http://jabber.org/protocol/commands"


async def adhoc_start(client: Client, component: str, node: str) -> Iq:
    """Execute an ad-hoc command; the answer (a form to fill, or the result)."""
    adhoc = client.plugin["xep_0050"]
    return await adhoc.send_command(component, node, action="execute", timeout=10)


async def adhoc_submit(
    client: Client,
    component: str,
    step: Iq,
    values: dict[str, Any],
    action: str = "complete",
) -> Iq:
    """Submit the form of a step with these values (action complete, or next)."""
    form = Form()
    form["type"] = "submit"
    for var, value in values.items():
        form.add_field(var=var, value=value)
    adhoc = client.plugin["xep_0050"]
    return await adhoc.send_command(
        component,
        step["command"]["node"],
        action=action,
        sessionid=step["command"]["sessionid"],
        payload=form,
        timeout=10,
    )


async def adhoc_run(client: Client, component: str, node: str, values: dict[str, Any]) -> Iq:
    """Start a command and submit its form at once."""
    step = await adhoc_start(client, component, node)
    assert step["command"]["status"] == "executing", step
    return await adhoc_submit(client, component, step, values)


def form_fields(step: Iq) -> dict[str, tuple[str, bool]]:
    """The fields a step asks for: var -> (type, required)."""
    form = step["command"]["form"]
    assert form["type"] == "form"
    return {var: (f["type"], bool(f["required"])) for var, f in form.get_fields().items()}


def result_values(done: Iq) -> dict[str, str]:
    """A completed Text result: label -> value."""
    assert done["command"]["status"] == "completed", done
    form = done["command"]["form"]
    assert form["type"] == "result"
    return {f["label"]: f["value"] for f in form.get_fields().values()}


def result_table(done: Iq) -> tuple[list[str], list[dict[str, str]]]:
    """A completed Table result: the reported column labels and the items."""
    assert done["command"]["status"] == "completed", done
    form = done["command"]["form"]
    labels = [f["label"] for f in form.get_reported().values()]
    return labels, form.get_items()


async def command_nodes(client: Client, component: str) -> list[str]:
    """The ad-hoc command nodes that disco lists for this client."""
    iq = await client.plugin["xep_0030"].get_items(jid=component, node=COMMANDS_NS, timeout=10)
    return [node for _jid, node, _name in iq["disco_items"]["items"]]


async def say(client: Client, component: str, text: str, timeout: float = 10.0) -> str:
    """Send a chat text to the component and return the body of its answer."""
    while not client.messages.empty():
        client.messages.get_nowait()
    client.send_message(mto=component, mbody=text, mtype="chat")
    while True:
        msg = await asyncio.wait_for(client.messages.get(), timeout)
        if msg.xml.find(f"{{{NS}}}earning") is not None:
            continue  # an earning notification, not the answer
        if msg["from"].bare == component and msg["body"]:
            assert msg["type"] == "chat"
            return str(msg["body"])
