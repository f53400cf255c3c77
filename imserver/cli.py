"""The ``imserver`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from imserver.config import Config, ConfigError, load_config
from imserver.devserver.prosody import ProsodyError, ProsodyInstance
from imserver.xmpp.hardening import UnsafeEnvironment

if TYPE_CHECKING:
    from imserver.service.membership import Location
    from imserver.service.regions import LoadReport

log = logging.getLogger("imserver")


def _prosody(config: Config) -> ProsodyInstance:
    x = config.xmpp
    return ProsodyInstance(
        Path(config.prosody.data_dir),
        domain=x.domain,
        client_port=x.client_port,
        component_port=x.component_port,
        components={x.component: x.secret},
    )


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


def _resolve_location(text: str, crs: str | None) -> Location:
    from imserver.service.membership import Location

    point = re.fullmatch(r"\s*([-+]?[0-9.]+)\s*[,，\s]\s*([-+]?[0-9.]+)\s*", text)
    if point:
        return Location(lat=float(point.group(1)), lon=float(point.group(2)), crs=crs or "wgs84")
    if crs:
        raise ValueError("--crs applies to coordinates (LAT,LON) only")
    if re.fullmatch(r"\s*[0-9]{6}(?:[0-9]{6})?\s*", text):
        return Location(region=text.strip())
    return Location(address=text)


def cmd_regions_resolve(config: Config, args: argparse.Namespace) -> int:
    """Print the region of "LAT,LON", an address or a code as JSON (no database needed)."""
    from imserver.service.errors import ServiceError
    from imserver.service.locations import Locations, resolved_json

    try:
        location = _resolve_location(args.location, args.crs)
        resolved = Locations.from_config(config.geo).resolve_blocking(location)
    except ServiceError as exc:
        print(f"error: {exc.text}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(resolved_json(resolved), ensure_ascii=False, indent=2))
    return 0


def cmd_accounts_add(config: Config, args: argparse.Namespace) -> int:
    _prosody(config).add_account(args.jid, args.password)
    print(f"account {args.jid} created")
    return 0


async def _serve(config: Config) -> None:
    from imserver.app import App

    app = App(config)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await app.run_forever()


def cmd_run(config: Config, _args: argparse.Namespace) -> int:
    """Run the component against an existing XMPP server and database."""
    asyncio.run(_serve(config))
    return 0


def cmd_dev(config: Config, _args: argparse.Namespace) -> int:
    """`make run`: private Prosody, migrated database, region data, then the component."""
    from imserver.store.migrate import upgrade

    upgrade(config.database.url)
    report = asyncio.run(_load_regions(config, None, only_if_empty=True))
    if report is not None:
        print(report.summary())
    prosody = _prosody(config)
    for admin in config.admins:
        print(f"admin: {admin} (create its account: imserver accounts add {admin} PASSWORD)")
    prosody.start()
    print(
        f"prosody on 127.0.0.1:{config.xmpp.client_port} (clients), "
        f"component {config.xmpp.component} on :{config.xmpp.component_port}; Ctrl-C stops both"
    )
    try:
        asyncio.run(_serve(config))
    finally:
        prosody.stop()
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
            print(f"{await Settlement(ctx).settle()} payments settled")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imserver", description=__doc__)
    parser.add_argument(
        "--config", default="config.toml", help="config file (default: %(default)s)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
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
    resolve.add_argument("location", help='"22.5405,113.9345", an address, or a region code')
    resolve.add_argument(
        "--crs", choices=("wgs84", "gcj02", "bd09"), help="coordinate system (default wgs84)"
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
    sub.add_parser("run", help="run the component (existing XMPP server)").set_defaults(
        func=cmd_run
    )
    sub.add_parser("dev", help="private Prosody + component in the foreground").set_defaults(
        func=cmd_dev
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        for noisy in ("alembic", "apscheduler"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
        return int(args.func(config, args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ProsodyError as exc:
        print(f"prosody: {exc}", file=sys.stderr)
        return 3
    except UnsafeEnvironment as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
