"""A complete merchant bot: it links itself to its merchant, reports one payment and prints
how the payment was split.

Run it against ``make run`` (private Prosody on 127.0.0.1:5222, component
``dist.localhost``) once the merchant exists and the payer has joined (see README,
"Writing a merchant bot")::

    .venv/bin/imserver accounts add till-1@localhost secret
    .venv/bin/python examples/merchant_bot.py --bot till-1@localhost --bot-password secret \\
        --merchant shop@localhost --merchant-password secret \\
        --payer alice@localhost --amount 10000 --currency CNY

It needs only slixmpp and ``plugins/`` (the protocol plugin), never the server's code.

- **Linking.** With ``--merchant-password`` the bot first logs in as the merchant and
  links its own JID (``<bot action='link'/>``: harmless when it is linked already);
  without it, the bot is assumed linked (or to be the merchant itself).
- **Retries.** A payment that gets no answer within ``--timeout`` seconds, or an error
  of type ``wait`` (the component is away, over its rate limit, or its database is
  briefly unavailable), is sent again with the *same* payment id, after a growing
  pause, up to ``--attempts`` times: the id is the idempotency key, so a payment that
  was recorded while its answer was lost is answered again, never paid twice.
- **Exit status.** 0 with the distribution printed; 1 when the component refused the
  payment (the error's condition and text are printed: they say what to fix); 2 when
  it never answered or the bot could not log in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run from a checkout without installing anything but slixmpp: plugins/ is beside us.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slixmpp import ClientXMPP, Iq
from slixmpp.exceptions import IqError, IqTimeout

from plugins.distribution import XEP_Distribution, enable

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Failed(Exception):
    """The bot could not do its work; ``status`` is its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Server:
    """Where the bot logs in: the XMPP server's client port and the component's JID."""

    host: str
    port: int
    component: str


class Session:
    """One logged-in XMPP client with the distribution plugin (``async with``)."""

    def __init__(self, jid: str, password: str, server: Server) -> None:
        self.server = server
        plain = server.host in LOOPBACK
        # A development server on loopback (make run) offers no TLS; anywhere else the
        # connection must be encrypted, and slixmpp's defaults insist on it.
        config = {"feature_mechanisms": {"unencrypted_scram": True}} if plain else {}
        self.xmpp = ClientXMPP(jid, password, plugin_config=config)
        if plain:
            self.xmpp.enable_starttls = False
            self.xmpp.enable_direct_tls = False
            self.xmpp.enable_plaintext = True
        self.dist: XEP_Distribution = enable(self.xmpp)
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.xmpp.add_event_handler("session_start", self._started)
        self.xmpp.add_event_handler("failed_all_auth", self._refused)

    def _started(self, _event: Any) -> None:
        if not self._ready.done():
            self._ready.set_result(None)

    def _refused(self, _event: Any) -> None:
        if not self._ready.done():
            jid = self.xmpp.boundjid.bare
            self._ready.set_exception(
                Failed(f"{jid}: the server refused the password; check the account", 2)
            )

    async def __aenter__(self) -> Session:
        self.xmpp.connect(self.server.host, self.server.port)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), 30)
        except TimeoutError:
            await self.close()
            raise Failed(
                f"could not log in at {self.server.host}:{self.server.port} within 30 s; "
                "is the XMPP server running (make run)?",
                2,
            ) from None
        except Failed:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Log out (quietly: nothing is left to say to a server that is gone)."""
        with contextlib.suppress(Exception):
            await self.xmpp.disconnect(wait=1.0)


async def link(merchant: Session, bot_jid: str) -> None:
    """As the merchant, link ``bot_jid`` to it (a second link is answered the same)."""
    try:
        answer = await merchant.dist.bot(merchant.server.component, bot_jid, timeout=15)
    except IqError as exc:
        raise Failed(f"linking {bot_jid} was refused: {describe(exc.iq)}", 1) from None
    except IqTimeout:
        raise Failed("linking got no answer; is the component running?", 2) from None
    print(f"{answer['bot']['jid']} {answer['bot']['status']} to {answer['bot']['merchant']}")


async def pay(
    bot: Session,
    payment_id: str,
    payer: str,
    amount: int,
    currency: str,
    *,
    timeout: float,
    attempts: int,
) -> Iq:
    """Report the payment, sending it again (same id) while it goes unanswered."""
    pause = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return await bot.dist.pay(
                bot.server.component, payment_id, payer, amount, currency, timeout=timeout
            )
        except IqTimeout:
            why = f"no answer within {timeout:g} s"
        except IqError as exc:
            if exc.iq["error"]["type"] != "wait":
                raise Failed(f"payment {payment_id} refused: {describe(exc.iq)}", 1) from None
            why = describe(exc.iq)
        if attempt < attempts:
            print(f"attempt {attempt}: {why}; sending {payment_id} again in {pause:g} s",
                  file=sys.stderr, flush=True)  # fmt: skip
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)
    raise Failed(f"payment {payment_id}: {why} after {attempts} attempts; "
                 "send it again later with the same --payment-id", 2)  # fmt: skip


def describe(iq: Iq) -> str:
    """An error answer as a person reads it: its condition and its text."""
    error = iq["error"]
    return f"{error['condition']}: {error['text'] or '(no text)'}"


def distribution(answer: Iq) -> dict[str, Any]:
    """The ``<distribution/>`` answer as plain data."""
    d = answer["distribution"]
    return {
        "payment": d["payment"],
        "merchant": d["merchant"],
        "amount": int(d["amount"]),
        "currency": d["currency"],
        "policy": d["policy"],
        "shares": [
            {
                "role": s["role"],
                "level": s["level"] or s["scope"] or "",
                "jid": s["jid"] or "",
                "amount": int(s["amount"]),
            }
            for s in d["shares"]
        ],
    }


def print_table(dist: dict[str, Any]) -> None:
    """The split as a small table, with its sum (always the amount paid)."""
    print(f"payment {dist['payment']} of {dist['amount']} {dist['currency']} "
          f"at {dist['merchant']} (policy {dist['policy']}):")  # fmt: skip
    for s in dist["shares"]:
        print(f"  {s['role']:<9} {s['level']:<9} {s['jid'] or '-':<32} {s['amount']:>12}")
    total = sum(s["amount"] for s in dist["shares"])
    print(f"  {'sum':<9} {'':<9} {'':<32} {total:>12}")


async def run(args: argparse.Namespace) -> int:
    server = Server(args.host, args.port, args.component)
    try:
        if args.merchant_password:
            async with Session(args.merchant, args.merchant_password, server) as merchant:
                await link(merchant, args.bot)
        async with Session(args.bot, args.bot_password, server) as bot:
            answer = await pay(
                bot,
                args.payment_id,
                args.payer,
                args.amount,
                args.currency,
                timeout=args.timeout,
                attempts=args.attempts,
            )
    except Failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    dist = distribution(answer)
    if args.json:
        print(json.dumps(dist))
    else:
        print_table(dist)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bot", required=True, help="the bot's JID (it sends the payment)")
    p.add_argument("--bot-password", required=True)
    p.add_argument("--merchant", help="the merchant's JID (to link the bot)")
    p.add_argument("--merchant-password", help="link the bot first, logged in as the merchant")
    p.add_argument("--payer", required=True, help="the member who paid")
    p.add_argument("--amount", type=int, required=True, help="in minor units (fen, cents)")
    p.add_argument("--currency", default="CNY")
    p.add_argument(
        "--payment-id",
        default=f"order-{uuid.uuid4().hex[:12]}",
        help="the idempotency key: reuse it to resend a payment (default: a new one)",
    )
    p.add_argument("--component", default="dist.localhost")
    p.add_argument("--host", default="127.0.0.1", help="the XMPP server (default: %(default)s)")
    p.add_argument("--port", type=int, default=5222)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    p.add_argument("--attempts", type=int, default=5, help="sends of the payment at most")
    p.add_argument("--json", action="store_true", help="print the distribution as JSON")
    return p


def main() -> int:
    args = parser().parse_args()
    if args.merchant_password and not args.merchant:
        parser().error("--merchant-password needs --merchant")
    if args.amount <= 0 or args.attempts < 1 or args.timeout <= 0:
        parser().error("--amount, --attempts and --timeout must be positive")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
