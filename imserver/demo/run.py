"""`imserver demo` from end to end: places checked, servers found or started, the city
seeded, a day of trade, the summary from the database, the picture, the accounts."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from slixmpp.exceptions import IqError, IqTimeout

from imserver.config import Config
from imserver.demo.city import AREAS, CITY, SHOPS, CityError, check_places
from imserver.demo.day import CURRENCY, Tally, run_day
from imserver.demo.picture import Pictures, draw
from imserver.demo.seed import Cast, City, seed
from imserver.demo.servers import DemoError, servers
from imserver.demo.summary import disagreements, summary_table
from imserver.service.context import Context
from imserver.service.locations import Locations
from imserver.service.network_report import NetworkReport, network_report
from imserver.store.db import Database

PASSWORD = "demo-password"


@dataclass(frozen=True)
class DemoOptions:
    """What `imserver demo` was asked for."""

    users: int = 300
    payments: int = 3000
    out: Path | None = None
    seed: int | None = None
    password: str = PASSWORD
    admin_password: str | None = None  # default: ``password``
    config_file: str = "config.toml"  # for the servers the demo may start


@dataclass(frozen=True)
class DemoResult:
    """What the demo did, made and found."""

    city: City
    tally: Tally
    report: NetworkReport
    pictures: Pictures
    folder: Path
    accounts: list[tuple[str, str, str]]  # (what, JID, password)
    started: list[str]

    @property
    def ok(self) -> bool:
        """The ledger check passed and the database agrees with the bots."""
        return self.report.ledger.ok and not disagreements(self.report, self.tally)


def say(text: str) -> None:
    """A line of the demo's story, on stderr with the progress bars."""
    print(text, file=sys.stderr, flush=True)


async def run_demo(config: Config, options: DemoOptions) -> DemoResult:
    """Run the whole demo against the servers of ``config``; see the module's text."""
    found = await asyncio.to_thread(check_places, Locations.from_config(config.geo))
    say(f"The city: {CITY.name}; {len(SHOPS)} shops, each place resolved offline:")
    for shop in SHOPS:
        say(f"  {shop.name:<16} {shop.describe():<34} -> {shop.district} {found[shop.local]}")
    tag = secrets.token_hex(2)
    rng = random.Random(options.seed)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = options.out or Path("var") / "demo" / f"{stamp}-{tag}"
    cast = Cast(tag, config.xmpp.domain, options.password)
    admin_password = options.admin_password or options.password
    async with servers(config, options.config_file, admin_password, folder / "servers.log") as (
        srv,
        admin,
    ):
        where, component = f"127.0.0.1:{config.xmpp.client_port}", config.xmpp.component
        say(
            [
                f"Using the running Prosody ({where}) and component {component}.",
                f"Prosody runs on {where} but {component} was not connected: "
                "the demo started it (imserver run).",
                f"No Prosody on {where}: the demo started Prosody and {component} (imserver dev).",
            ][len(srv.started)]
        )
        say(f"Seeding by the protocol (accounts *.{tag}@{config.xmpp.domain}):")
        city = await seed(srv, admin, cast, options.users, rng)
        say(f"A day of trade: {options.payments:,} payments from {len(city.bots)} bots:")
        tally = await run_day(srv, city, options.payments, rng)
        report = await _read(config, city)
        title = (
            f"Demo city {CITY.name} ({tag}): {len(city.users)} users under "
            f"{len(city.merchants)} merchants, coloured by district"
        )
        pictures = await asyncio.to_thread(draw, report, folder, title)
    accounts = [
        ("admin", config.admins[0], admin_password),
        *[(f"{a.scope} agent", city.agents[a.code], cast.password) for a in AREAS],
        ("merchant", next(iter(city.merchants)), cast.password),
        ("its bot", next(iter(city.bots.values())), cast.password),
        ("busiest user", _busiest(city), cast.password),
    ]
    return DemoResult(city, tally, report, pictures, folder, accounts, srv.started)


async def _read(config: Config, city: City) -> NetworkReport:
    """The report of this run's merchants and members, from the database."""
    db = Database(config.database.url)
    try:
        jids = [*city.merchants, *city.users, *city.agents.values()]
        return await network_report(
            Context(db, config), list(city.merchants), jids, [a.code for a in AREAS], CURRENCY
        )
    finally:
        await db.dispose()


def _busiest(city: City) -> str:
    """The user with the most direct referrals (the most to look at)."""
    counts = {u: 0 for u in city.users}
    for ref in city.referrer.values():
        if ref in counts:
            counts[ref] += 1
    return max(city.users, key=lambda u: (counts[u], u))


def report_text(config: Config, result: DemoResult) -> str:
    """What the demo prints at the end: the table, the pictures, the accounts."""
    lines = [summary_table(result.report, result.tally), ""]
    lines += [
        f"The picture of the network: {result.pictures.svg} and {result.pictures.png}",
        "",
        f"Log in with any XMPP client on 127.0.0.1:{config.xmpp.client_port} (no TLS) and "
        f"send `help` to {config.xmpp.component}:",
    ]
    lines += [f"  {what:<18} {jid:<40} password {pw}" for what, jid, pw in result.accounts]
    if result.started:
        lines.append(
            f"The demo stopped what it started ({' and '.join(result.started)}); `make run` "
            "starts the servers again with these accounts and this database."
        )
    return "\n".join(lines)


def main(config: Config, options: DemoOptions) -> int:
    """The command: run, print, exit 0 when the ledger and the bots' answers agree."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # Hundreds of clients log in and out: slixmpp's lines would bury the progress.
        logging.getLogger("slixmpp").setLevel(logging.WARNING)
    try:
        result = asyncio.run(run_demo(config, options))
    except (DemoError, CityError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except IqError as exc:
        error = exc.iq["error"]
        print(
            f"demo: the component refused a request ({error['condition']}): {error['text']}",
            file=sys.stderr,
        )
        return 1
    except IqTimeout:
        print("demo: the component did not answer a request within 30 s", file=sys.stderr)
        return 1
    print(report_text(config, result))
    return 0 if result.ok else 1
