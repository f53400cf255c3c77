"""The ``imserver`` command."""

from __future__ import annotations

import sys
from pathlib import Path

from imserver.devserver.stopping import note_interrupts

# The process that runs the command (`python -m imserver.cli`, the `imserver` script)
# notes a Ctrl-C from here on, before the imports below (see ``note_interrupts``).
if __name__ == "__main__" or Path(sys.argv[0]).name == "imserver":
    note_interrupts()

import argparse
import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

# At the top only modules built on the standard library and pydantic: they run before
# `imserver dev` and `imserver run` block their stop signals (once the config is read),
# while a SIGINT still raises KeyboardInterrupt wherever it lands, and a library that
# catches everything would swallow it. slixmpp does (its import tries `gnupg` inside a bare
# `except:`): a Ctrl-C that landed there was lost without a word, and `make run` served on
# as if never stopped. The rest is imported where it is used, after the block.
from imserver.config import Config, ConfigError, load_config
from imserver.devserver.prosody import ProsodyError, StartInterrupted, for_config
from imserver.devserver.stopping import Stopper, StopRequested
from imserver.logs import configure as configure_logging
from imserver.logs import reset as reset_logging
from imserver.logs import set_level as set_log_level
from imserver.posters.fonts import FontMissing

if TYPE_CHECKING:
    from imserver.app import App
    from imserver.progress import Progress
    from imserver.service.locations import Locations
    from imserver.service.regions import LoadReport

log = logging.getLogger("imserver")


def cmd_migrate(config: Config, _args: argparse.Namespace) -> int:
    from imserver.store.migrate import upgrade

    head = upgrade(config.database.url)
    print(f"database at revision {head}")
    return 0


async def _load_regions(
    config: Config, path: Path | None, only_if_empty: bool
) -> LoadReport | None:
    from imserver.geo.regions import load_regions_csv
    from imserver.service.context import Context
    from imserver.service.regions import load_regions, region_count
    from imserver.store.db import Database

    # Read and validate the whole file before touching the database.
    data = load_regions_csv(path)
    db = Database(config.database.url)
    try:
        ctx = Context(db, config)
        if only_if_empty and await region_count(ctx):
            return None
        return await load_regions(ctx, data)
    finally:
        await db.dispose()


def cmd_regions_load(config: Config, args: argparse.Namespace) -> int:
    """Load the shipped data set or a CSV (code,name,level,parent,lat,lon[,successor])."""
    from imserver.geo.regions import RegionDataError

    try:
        report = asyncio.run(_load_regions(config, Path(args.file) if args.file else None, False))
    except RegionDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    assert report is not None
    print(report.summary())
    return 0


def cmd_regions_resolve(config: Config, args: argparse.Namespace) -> int:
    """Print the region of "LAT,LON", an address or a code as JSON (no database needed);
    with ``--batch``, one JSON line per line of a file."""
    from imserver.service.errors import ServiceError
    from imserver.service.locations import Locations, parse_query, resolved_json

    locations = Locations.from_config(config.geo)
    if args.batch is not None:
        if args.location is not None or args.crs:
            print("error: give a location or --batch FILE, not both", file=sys.stderr)
            return 2
        return _resolve_batch(locations, args.batch)
    if args.location is None:
        print("error: give a location, or --batch FILE (- for standard input)", file=sys.stderr)
        return 2
    try:
        resolved = locations.resolve_blocking(parse_query(args.location, args.crs))
    except ServiceError as exc:
        print(f"error: {exc.text}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(resolved_json(resolved), ensure_ascii=False, indent=2))
    return 0


def _resolve_batch(locations: Locations, source: str) -> int:
    """One JSON answer per input line on stdout; the tally and the bad lines on stderr;
    exit 1 when any line could not be resolved."""
    from imserver.service.locations import resolve_lines

    try:
        stream = sys.stdin if source == "-" else open(source, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"error: cannot read {source}: {exc.strerror}", file=sys.stderr)
        return 2
    from imserver.progress import Progress

    bad: list[int] = []
    answered = uncertain = skipped = 0
    bar: Progress | None = None
    try:
        lines: Iterable[str] = stream
        if stream is not sys.stdin:  # a file's length is known: a bar on a terminal
            lines = stream.readlines()
            bar = Progress("resolving", len(lines), quiet=True)
        for answer in resolve_lines(locations, lines):
            print(json.dumps(answer, ensure_ascii=False))
            if bar is not None:
                bar.advance()
            if "error" in answer:
                bad.append(answer["line"])
            elif "skipped" in answer:
                skipped += 1
            else:
                answered += 1
                uncertain += bool(answer.get("uncertain"))
    except UnicodeDecodeError as exc:
        print(f"error: {source} is not UTF-8 text ({exc.reason})", file=sys.stderr)
        return 2
    finally:
        if stream is not sys.stdin:
            stream.close()
    if bar is not None:
        bar.done()
    tally = f"{answered} resolved ({uncertain} near a border), {len(bad)} errors"
    tally += f", {skipped} blank lines skipped" if skipped else ""
    if bad:
        shown = ", ".join(str(n) for n in bad[:20]) + (" …" if len(bad) > 20 else "")
        tally += f"; lines not resolved: {shown} (their answers say why)"
    print(tally, file=sys.stderr)
    return 1 if bad else 0


def cmd_accounts_add(config: Config, args: argparse.Namespace) -> int:
    for_config(config).add_account(args.jid, args.password)
    print(f"account {args.jid} created")
    return 0


# A stop asked for while the component starts waits this long for the start's database
# step (seeding the policy) to end before cutting it.
START_CUT_SECONDS = 5.0


async def _serve(config: Config, stopper: Stopper) -> None:
    """Run the component until a stop is asked for, and stop it in order at any moment.

    Nothing is cancelled in the middle of a database call when that can be avoided: a
    stop during start-up lets the policy seeding finish (see ``_cut_start``), and the
    serving itself is only a wait.
    """
    from imserver.app import App, tune_gc

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop() -> None:
        with contextlib.suppress(RuntimeError):  # the loop already closed: nothing to do
            loop.call_soon_threadsafe(stop.set)

    if not stopper.on_stop(request_stop):
        return  # asked to stop before we began
    app = App(config)
    stopping = asyncio.ensure_future(stop.wait())
    starting = asyncio.ensure_future(app.start(timeout=60.0))
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            starting.result()  # a start that failed ends the run with its error
            tune_gc()
            await stopping
    finally:
        stopper.on_stop(None)
        stopping.cancel()
        await _cut_start(app, starting)
        try:
            await app.stop()
        finally:
            await _wait_for_database_threads(timeout=2.0)


async def _cut_start(app: App, starting: asyncio.Future[None]) -> None:
    """End a start that a stop interrupted, without cutting a database call if possible.

    ``App.start`` seeds the policy, then starts the scheduler, then waits for the XMPP
    handshake: once the scheduler runs, only the wait is left, and cancelling it is
    harmless. Before that, the start gets ``START_CUT_SECONDS`` to get there.
    """
    if not starting.done():
        deadline = time.monotonic() + START_CUT_SECONDS
        while not (starting.done() or app.jobs.scheduler.running) and time.monotonic() < deadline:
            await asyncio.wait({starting}, timeout=0.01)
        starting.cancel()
        await asyncio.wait({starting})
    # Retrieved here, so that a start that failed as the stop came is reported once.
    if not starting.cancelled() and (error := starting.exception()) is not None:
        log.info("the start ended in an error: %s", error)


async def _wait_for_database_threads(timeout: float) -> None:
    """Give aiosqlite's worker threads time to end while the loop can still hear them.

    A database call cut by a stop (the scheduler cancels a running settlement job) leaves
    its worker thread finishing the call; should the loop close first, the thread fails
    reporting to it, and a thread that never ends keeps the process alive (the connection
    to Prosody with it).
    """
    deadline = time.monotonic() + timeout
    while True:
        busy = [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]
        if not busy:
            return
        if time.monotonic() >= deadline:
            log.warning("%d database worker threads still running at stop", len(busy))
            return
        await asyncio.sleep(0.01)


def cmd_run(config: Config, _args: argparse.Namespace) -> int:
    """Run the component against an existing XMPP server and database."""
    stopper = Stopper()
    stopper.install()
    asyncio.run(_serve(config, stopper))
    return 0


def cmd_dev(config: Config, _args: argparse.Namespace) -> int:
    """`make run`: private Prosody, migrated database, region data, then the component.

    SIGTERM, SIGINT or SIGHUP at any moment stops whatever was started and exits 0 (see
    ``devserver/stopping.py``); a second ``imserver dev`` on the same data dir is
    refused and leaves the first alone.
    """
    stopper = Stopper()
    stopper.install()  # first: the imports below take a while
    from imserver.store.migrate import upgrade

    prosody = for_config(config)
    # Before the database is touched: a second run must change nothing of the first's.
    prosody.claim()
    stopper.on_emergency(prosody.kill)
    try:
        stopper.check()
        upgrade(config.database.url)
        stopper.check()
        report = asyncio.run(_load_regions(config, None, only_if_empty=True))
        if report is not None:
            print(report.summary(), flush=True)
        for admin in config.admins:
            print(f"admin: {admin} (create its account: imserver accounts add {admin} PASSWORD)")
        stopper.check()
        prosody.start(stop=stopper.requested)
        print(
            f"prosody on 127.0.0.1:{config.xmpp.client_port} (clients), component "
            f"{config.xmpp.component} on :{config.xmpp.component_port}; Ctrl-C stops both",
            flush=True,
        )
        asyncio.run(_serve(config, stopper))
    except (StopRequested, StartInterrupted):
        pass
    finally:
        prosody.stop()
    if stopper.requested.is_set():
        log.info("stopped on %s; prosody and the component are down", stopper.describe())
    return 0


async def _ledger(config: Config, what: str) -> int:
    from imserver.service.context import Context
    from imserver.service.ledger import Ledger
    from imserver.service.settlement import Settlement
    from imserver.store.db import Database

    db = Database(config.database.url)
    try:
        ctx = Context(db, config)
        if what == "settle":
            # A payment with held shares (remote members') settles twice: counted twice.
            print(f"{await Settlement(ctx).settle()} settlements made")
            return 0
        report = await Ledger(ctx).check()
    finally:
        await db.dispose()
    sums = ", ".join(f"{c} {s}" for c, s in sorted(report.currencies.items())) or "no currency"
    print(
        f"{report.accounts} accounts, {report.movements} movements, {report.entries} entries; "
        f"sums: {sums}"
    )
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print("ledger OK" if report.ok else "ledger BROKEN")
    return 0 if report.ok else 1


def cmd_ledger_check(config: Config, _args: argparse.Namespace) -> int:
    """Prove that every currency sums to zero and that balances equal their entries."""
    return asyncio.run(_ledger(config, "check"))


def cmd_ledger_settle(config: Config, _args: argparse.Namespace) -> int:
    """Settle every payment whose hold has ended (what the scheduled job does)."""
    return asyncio.run(_ledger(config, "settle"))


def cmd_backup(config: Config, args: argparse.Namespace) -> int:
    """A consistent online copy of the database (see README "Backup and restore")."""
    from imserver.store.backup import BackupError, backup

    try:
        result = backup(config.database.url, args.dest)
    except BackupError as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 4
    print(
        f"{result.backend} backup written to {result.dest} ({result.size} bytes, {result.detail})"
    )
    return 0


def cmd_status(config: Config, _args: argparse.Namespace) -> int:
    """Link, database, outbox, settlement and counts; exit 1 when something is wrong."""
    from imserver.status import status

    # The report says it in one line with what to do; the driver's warning would repeat it.
    set_log_level("imserver.store.db", logging.ERROR)
    report = status(config)
    print(report.text())
    return 0 if report.ok else 1
def cmd_invite(config: Config, args: argparse.Namespace) -> int:
    """Write a member's invite poster (or QR code) and print its URI."""
    from imserver.service.errors import ServiceError
    from imserver.service.invites import write_invite

    try:
        invite = asyncio.run(write_invite(config, args.jid, Path(args.out), args.qr))
    except ServiceError as exc:
        print(f"error: {exc.text}", file=sys.stderr)
        return 1
    except (FontMissing, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{invite.uri}\nwritten to {args.out}")
    return 0


def cmd_demo(config: Config, args: argparse.Namespace) -> int:
    """Seed a small city by the protocol, trade for a day, print the summary and draw it."""
    from imserver.demo.run import DemoOptions, main

    options = DemoOptions(
        users=args.users,
        payments=args.payments,
        out=Path(args.out) if args.out else None,
        seed=args.seed,
        admin_password=args.admin_password,
        config_file=args.config,
    )
    return main(config, options)


def _count(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number within [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"give a number from {low:,} to {high:,}")
        return value

    return parse


class _TableBars:
    """The progress of a copy, one bar per table (on a terminal only, on stderr)."""

    def __init__(self) -> None:
        from imserver.progress import Progress

        self._make = Progress
        self.current: Progress | None = None

    def table(self, name: str, rows: int) -> None:
        self.close()
        self.current = self._make(name, rows, quiet=True)

    def advance(self, rows: int) -> None:
        if self.current is not None:
            self.current.advance(rows)

    def close(self) -> None:
        if self.current is not None:
            self.current.done()
            self.current = None


def cmd_db_copy(_config: Config, args: argparse.Namespace) -> int:
    """Copy a whole database into a new, empty one (SQLite or PostgreSQL, either way)."""
    from imserver.store.dbcopy import CopyError, copy_database

    bars = _TableBars()
    try:
        report = asyncio.run(copy_database(args.from_url, args.to_url, bars))
    except CopyError as exc:
        print(f"db copy failed: {exc}", file=sys.stderr)
        return 1
    finally:
        bars.close()
    for table in report.tables:
        print(f"{table.name:<20} {table.target:>12,} rows")
    print(
        f"copied {report.rows:,} rows in {report.seconds:.1f} s from {report.source} "
        f"to {report.target}; row counts equal, ledger OK"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imserver", description=__doc__)
    parser.add_argument(
        "--config", default="config.toml", help="config file (default: %(default)s)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--trace",
        action="append",
        default=[],
        metavar="LOGGER",
        help="log LOGGER at DEBUG, e.g. imserver.batches (batch commits); repeatable",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="bring the database to the newest schema").set_defaults(
        func=cmd_migrate
    )
    regions = sub.add_parser("regions", help="region data").add_subparsers(
        dest="sub", required=True
    )
    load = regions.add_parser("load", help="load the shipped data set or a CSV file")
    load.add_argument("file", nargs="?", help="CSV: code,name,level,parent,lat,lon[,successor]")
    load.set_defaults(func=cmd_regions_load)
    resolve = regions.add_parser(
        "resolve", help='print the region of "LAT,LON", an address or a code as JSON'
    )
    resolve.add_argument(
        "location", nargs="?", help='"22.5405,113.9345", an address, or a region code'
    )
    resolve.add_argument(
        "--crs", choices=("wgs84", "gcj02", "bd09"), help="coordinate system (default wgs84)"
    )
    resolve.add_argument(
        "--batch",
        metavar="FILE",
        help="resolve every line of FILE (- for standard input): LAT,LON[,CRS], an address "
        "or a code per line; one JSON line out per line in",
    )
    resolve.set_defaults(func=cmd_regions_resolve)
    accounts = sub.add_parser("accounts", help="accounts of the private Prosody").add_subparsers(
        dest="sub", required=True
    )
    add = accounts.add_parser("add", help="create an account")
    add.add_argument("jid")
    add.add_argument("password")
    add.set_defaults(func=cmd_accounts_add)
    ledger = sub.add_parser("ledger", help="the payment ledger").add_subparsers(
        dest="sub", required=True
    )
    ledger.add_parser(
        "check", help="prove every currency sums to zero and balances equal their entries"
    ).set_defaults(func=cmd_ledger_check)
    ledger.add_parser("settle", help="settle payments whose hold has ended").set_defaults(
        func=cmd_ledger_settle
    )
    backup = sub.add_parser(
        "backup", help="consistent online copy of the database (SQLite file or pg_dump)"
    )
    backup.add_argument("dest", help="the new backup file (never overwritten)")
    backup.set_defaults(func=cmd_backup)
    sub.add_parser(
        "status", help="is it well? link, database, outbox, settlement (exit 1 if not)"
    ).set_defaults(func=cmd_status)
    invite = sub.add_parser("invite", help="write a member's invite poster or QR code")
    invite.add_argument("jid", help="the member's bare JID")
    invite.add_argument(
        "--out", required=True, help="poster: FILE.pdf or FILE.png; with --qr: FILE.png or FILE.svg"
    )
    invite.add_argument("--qr", action="store_true", help="the QR code alone, not the poster")
    invite.set_defaults(func=cmd_invite)
    db = sub.add_parser("db", help="whole databases").add_subparsers(dest="sub", required=True)
    copy = db.add_parser(
        "copy",
        help="copy a database into a new, empty one (SQLite <-> PostgreSQL), then check it",
    )
    copy.add_argument(
        "from_url",
        metavar="FROM_URL",
        help="sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB (one snapshot)",
    )
    copy.add_argument("to_url", metavar="TO_URL", help="the empty target (migrated first)")
    copy.set_defaults(func=cmd_db_copy)
    sub.add_parser("run", help="run the component (existing XMPP server)").set_defaults(
        func=cmd_run
    )
    sub.add_parser("dev", help="private Prosody + component in the foreground").set_defaults(
        func=cmd_dev
    )
    demo = sub.add_parser(
        "demo",
        help="seed a small city by the protocol, run a day of payments, summarise and draw it",
    )
    demo.add_argument(
        "--users", type=_count(1, 5000), default=300, help="users who join (default %(default)s)"
    )
    demo.add_argument(
        "--payments",
        type=_count(1, 100_000),
        default=3000,
        help="payments in the day (default %(default)s)",
    )
    demo.add_argument("--out", help="folder for the pictures (default: var/demo/<time>-<tag>)")
    demo.add_argument("--seed", type=int, help="random seed, to replay the same day")
    demo.add_argument(
        "--admin-password",
        help="the password of the config's first admin, if its account exists already",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    finally:
        # A caller in a process that goes on (a test calling the CLI in-process while a
        # component serves beside it) gets its logging back as it was.
        reset_logging()


def _run(args: argparse.Namespace) -> int:
    """The command of ``args``, with the log configured; its exit status."""
    configure_logging(None, verbose=args.verbose, trace=args.trace)
    try:
        config = load_config(args.config)
        # The configured format from here on, with the secrets it must never write.
        configure_logging(config, verbose=args.verbose, trace=args.trace)
        return int(args.func(config, args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ProsodyError as exc:
        print(f"prosody: {exc}", file=sys.stderr)
        return 3
    except FontMissing as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from imserver.xmpp.hardening import UnsafeEnvironment  # slixmpp: see the top

        if isinstance(exc, UnsafeEnvironment):
            print(f"refusing to start: {exc}", file=sys.stderr)
            return 2
        explained = _explain_database_error(exc)
        if explained is None:
            raise  # a defect: its traceback is what a developer needs
        print(explained, file=sys.stderr)
        return 5


def _explain_database_error(exc: Exception) -> str | None:
    """What a person should read for a database that cannot serve a command, or None
    when ``exc`` is not about the database."""
    from sqlalchemy.exc import DBAPIError

    from imserver.store.db import Unavailable
    from imserver.store.migrate import MigrationError

    if isinstance(exc, Unavailable):
        return (
            f"database unavailable: {exc}\n"
            "  check that the database server runs and that [database] url "
            "(or IMSERVER_DATABASE__URL) points at it, then run the command again"
        )
    if isinstance(exc, MigrationError):
        return f"migrations: {exc}; run the imserver version that wrote this database, or newer"
    text = str(getattr(exc, "orig", exc)).lower()
    if isinstance(exc, DBAPIError) and ("no such table" in text or "does not exist" in text):
        first = str(exc.orig).splitlines()[0] if str(exc.orig) else type(exc.orig).__name__
        return (
            f"the database has no imserver schema yet, or an older one ({first}): "
            "run imserver migrate, then the command again"
        )
    return None


if __name__ == "__main__":
    sys.exit(main())
