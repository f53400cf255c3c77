#!/usr/bin/env python3
"""The ceiling: a bare slixmpp component that answers every IQ get/set with an empty result.

    python bench/bare_component.py JID SECRET HOST PORT [--answer FILE]

Runs until SIGTERM/SIGINT. It does what any slixmpp component must do for a request
(parse the stanza, match a handler, build and serialize the reply) and nothing else,
so the load generator's rate against it is what the XMPP server and slixmpp allow:
the ceiling that the product is compared with.

With ``--answer FILE`` every result carries the payload in FILE instead of nothing (its
``payment`` attribute set to the request payload's ``id``): a payment-shaped ceiling,
whose answers are as large as the product's ``<distribution/>``, so that the XMPP
server's cost of carrying them is in the ceiling too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

from slixmpp import ComponentXMPP
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

log = logging.getLogger("bare_component")


class BareComponent(ComponentXMPP):
    """Answers every IQ request with an empty result."""

    def __init__(
        self, jid: str, secret: str, host: str, port: int, answer: str | None = None
    ) -> None:
        super().__init__(jid, secret, host, port)
        self.connected_event = asyncio.Event()
        # Parsed once: a reply is serialised as it is sent, so one element can be
        # re-stamped with each request's id and appended to every reply.
        self.answer = ET.fromstring(answer) if answer is not None else None
        # A plain (not coroutine) callback: the cheapest handler slixmpp has.
        self.register_handler(
            Callback("answer every IQ", MatchXPath(f"{{{self.default_ns}}}iq"), self._answer)
        )
        self.add_event_handler("session_start", self._on_session_start)

    def _answer(self, iq: Any) -> None:
        if iq["type"] not in ("get", "set"):
            return
        reply = iq.reply(clear=True)
        if self.answer is not None:
            payload = iq.xml[0] if len(iq.xml) else None
            self.answer.set("payment", payload.get("id", "") if payload is not None else "")
            reply.xml.append(self.answer)
        reply.send()

    def _on_session_start(self, _event: Any) -> None:
        self.connected_event.set()
        log.info("bare component %s connected", self.boundjid)


async def serve(jid: str, secret: str, host: str, port: int, answer: str | None) -> None:
    """Connect and answer until cancelled (SIGTERM/SIGINT cancel this task)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    component = BareComponent(jid, secret, host, port, answer)
    component.connect()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(component.disconnect(wait=0.5), 2.0)


def main() -> None:
    """Entry point: JID SECRET HOST PORT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("jid")
    parser.add_argument("secret")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--answer", type=Path, help="payload of every result ({ref}: the id)")
    args = parser.parse_args()
    answer = args.answer.read_text() if args.answer else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args.jid, args.secret, args.host, args.port, answer))


if __name__ == "__main__":
    main()
