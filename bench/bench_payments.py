#!/usr/bin/env python3
"""Benchmark payments through the real component on SQLite; prints one JSON object.

    python bench/bench_payments.py [--bots N] [--payments N] [--window N]

Starts a private Prosody on free loopback ports, a fresh SQLite database, the component,
an admin, a merchant in 440305 with agents at district, city and province, a chain of
three users (the payer has two referral levels: five earners per payment) and N bot
clients linked to the merchant. Each bot keeps ``window`` payments in flight. Two runs:
notifications on (outbox rows written and sent) and off (``Payments.notify = False``).
Reports payments/second, latency percentiles and, with notifications on, how many chat
messages the earners received (coalescing makes it fewer than earnings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from imserver.app import App
from imserver.config import load_config
from imserver.devserver.prosody import ProsodyInstance, free_port
from imserver.geo.regions import load_regions_csv
from imserver.service.regions import load_regions
from imserver.store.migrate import upgrade
from imserver.xmpp.requests.payments import notifier_of
from tests.support.clients import PASSWORD, Client
from tests.support.network import add_merchant, assign_agent

ROOT = Path(__file__).resolve().parents[1]
COMPONENT = "dist.localhost"
SECRET = "bench-secret"


async def run_load(
    app: App, bots: list[Client], payer: str, total: int, window: int, tag: str
) -> dict[str, Any]:
    """Send ``total`` payments spread over the bots, ``window`` in flight per bot."""
    latencies: list[float] = []
    per_bot = total // len(bots)

    async def one_bot(i: int, bot: Client) -> None:
        sem = asyncio.Semaphore(window)

        async def one(k: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                await bot.dist.pay(COMPONENT, f"{tag}-{i}-{k}", payer, 10000, "CNY", timeout=120)
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(one(k) for k in range(per_bot)))

    start = time.perf_counter()
    await asyncio.gather(*(one_bot(i, b) for i, b in enumerate(bots)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    done = per_bot * len(bots)
    return {
        "payments": done,
        "seconds": round(elapsed, 3),
        "payments_per_second": round(done / elapsed, 1),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-payments-"))
    prosody = ProsodyInstance(
        tmp / "prosody",
        domain="localhost",
        client_port=free_port(),
        component_port=free_port(),
        components={COMPONENT: SECRET},
    )
    prosody.start()
    url = f"sqlite+aiosqlite:///{tmp / 'imserver.sqlite3'}"
    env = {
        "IMSERVER_ADMINS": '["admin@localhost"]',
        "IMSERVER_XMPP__COMPONENT": COMPONENT,
        "IMSERVER_XMPP__SECRET": SECRET,
        "IMSERVER_XMPP__COMPONENT_PORT": str(prosody.component_port),
        "IMSERVER_XMPP__CLIENT_PORT": str(prosody.client_port),
        "IMSERVER_DATABASE__URL": url,
        # The benchmark measures the payment path, not the rate limiter.
        "IMSERVER_LIMITS__PRIVILEGED_RATE": "1000000",
        "IMSERVER_LIMITS__PRIVILEGED_BURST": "1000000",
    }
    config = load_config(ROOT / "config.toml", env=env)
    await asyncio.to_thread(upgrade, url)
    app = App(config)
    await load_regions(app.ctx, load_regions_csv())
    await app.start()
    clients: list[Client] = []

    async def client(jid: str) -> Client:
        await asyncio.to_thread(prosody.add_account, jid, PASSWORD)
        c = await Client(jid).open(prosody.client_port)
        clients.append(c)
        return c

    try:
        admin = await client("admin@localhost")
        merchant = await client("shop@localhost")
        for name, region in (("district", "440305"), ("city", "440300"), ("province", "440000")):
            await assign_agent(admin, COMPONENT, f"{name}@localhost", region)
        await add_merchant(admin, COMPONENT, merchant.bare)
        users = [await client(f"{n}@localhost") for n in ("alice", "bob", "carol")]
        await users[0].dist.register(COMPONENT, merchant.bare)
        await users[1].dist.register(COMPONENT, users[0].bare)
        await users[2].dist.register(COMPONENT, users[1].bare)
        bots = [await client(f"bot{i}@localhost") for i in range(args.bots)]
        for bot in bots:
            await merchant.dist.bot(COMPONENT, bot.bare)
        payer = users[2].bare
        # Warm up (connections, caches) outside the measurement.
        await run_load(app, bots, payer, len(bots) * 5, args.window, "warm")
        await notifier_of(app.component).idle()
        for u in users:
            while not u.messages.empty():
                u.messages.get_nowait()

        results: dict[str, Any] = {}
        app.services.payments.notify = False
        results["notifications_off"] = await run_load(
            app, bots, payer, args.payments, args.window, "off"
        )
        app.services.payments.notify = True
        on = await run_load(app, bots, payer, args.payments, args.window, "on")
        await notifier_of(app.component).idle(timeout=60)
        await asyncio.sleep(1.0)
        # bob and alice (levels 1 and 2) earn on every payment.
        on["earnings_notified_to_bob"] = on["payments"]
        on["messages_received_by_bob"] = users[1].messages.qsize()
        on["unsent_after_run"] = await app.services.outbox.unsent()
        results["notifications_on"] = on
        report = await app.services.ledger.check()
        return {
            "benchmark": "payments through the component (Prosody, SQLite)",
            "bots": args.bots,
            "window_per_bot": args.window,
            "earners_per_payment": 5,
            **results,
            "ledger_ok": report.ok,
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        await app.stop()
        prosody.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bots", type=int, default=4)
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--window", type=int, default=16)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
