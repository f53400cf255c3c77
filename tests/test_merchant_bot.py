"""examples/merchant_bot.py, run as a person runs it: a subprocess against a real Prosody and
a real component process. It links itself, pays, prints the split, and resends the same
payment id when the component does not answer (the component is paused with SIGSTOP)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

from tests.conftest import DOMAIN
from tests.support.clients import PASSWORD
from tests.support.running import PAYER, SHOP, Running, running_component

BOT = Path(__file__).parents[1] / "examples" / "merchant_bot.py"
TILL = f"till-1@{DOMAIN}"
# The payer joined at the shop directly, in a region without agents: the shop is its
# level-1 referrer, the platform takes the rest of the pool (1000 of 10000).
SPLIT = [
    {"role": "referrer", "level": "1", "jid": SHOP, "amount": 300},
    {"role": "platform", "level": "", "jid": "", "amount": 700},
    {"role": "merchant", "level": "", "jid": SHOP, "amount": 9000},
]


async def start_bot(run: Running, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(BOT),
        "--port", str(run.prosody.client_port), "--component", run.jid,
        "--bot", TILL, "--bot-password", PASSWORD, "--payer", PAYER, "--json", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def finish(bot: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(bot.communicate(), 90)
    assert bot.returncode is not None
    return bot.returncode, out.decode(), err.decode()


def payments_with_ref(run: Running, ref: str) -> int:
    db = run.env["IMSERVER_DATABASE__URL"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute("SELECT count(*) FROM payments WHERE ref = ?", (ref,)).fetchone()[0]
        )


async def test_merchant_bot_links_pays_and_retries_the_same_id(tmp_path: Path) -> None:
    async with running_component(tmp_path) as run:
        await run.shop_and_payer()
        await asyncio.to_thread(run.prosody.add_account, TILL, PASSWORD)

        # Linked by the merchant, then paid by the bot: the split comes back and is printed.
        bot = await start_bot(run, "--merchant", SHOP, "--merchant-password", PASSWORD,
                              "--amount", "10000", "--payment-id", "order-1")  # fmt: skip
        rc, out, err = await finish(bot)
        assert rc == 0, err
        assert f"{TILL} linked to {SHOP}" in out
        dist = json.loads(out.splitlines()[-1])
        assert (dist["payment"], dist["merchant"], dist["amount"]) == ("order-1", SHOP, 10000)
        assert dist["shares"] == SPLIT

        # The component paused: the first send goes unanswered, the bot sends the same id
        # again; once the component runs again both copies are handled and one is paid.
        pid = run.component.process.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            bot = await start_bot(run, "--amount", "10000", "--payment-id", "order-2",
                                  "--timeout", "2", "--attempts", "10")  # fmt: skip
            assert bot.stderr is not None
            line = await asyncio.wait_for(bot.stderr.readline(), 60)
            assert line.startswith(b"attempt 1: no answer within 2 s; sending order-2 again")
        finally:
            os.kill(pid, signal.SIGCONT)
        rc, out, err = await finish(bot)
        assert rc == 0, err
        assert json.loads(out.splitlines()[-1])["shares"] == SPLIT
        assert payments_with_ref(run, "order-2") == 1

        # A refusal is not retried: it says what was wrong, exit status 1.
        bot = await start_bot(run, "--amount", "10000", "--currency", "XXX")
        rc, out, err = await finish(bot)
        assert rc == 1
        assert "refused: bad-request:" in err and "attempt" not in err
        rc, out = await run.cli("ledger", "check")
        assert rc == 0, out
