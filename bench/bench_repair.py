#!/usr/bin/env python3
"""Benchmark chain repair: terminate cost against network size; prints one JSON object.

    python bench/bench_repair.py [--sizes 10000,100000] [--children 1000] [--pg URL]

For each size, a fresh migrated database (SQLite in a temporary folder; PostgreSQL when
``--pg`` names an admin DSN, e.g. postgresql://postgres:postgres@127.0.0.1/postgres)
gets a network of that many members written in bulk (a random referral forest with
stored uplines and agency chains, as registration would store them). In it, targets
with ``--children`` direct referrals (each with a few deeper levels) and small targets
with 10 are terminated through the service layer (``Repair.terminate``: the same use
case as the XMPP request, without the XMPP round trip). Reported per run: the chains
repaired, wall milliseconds and SQL statements executed. The claim being measured: the
cost follows the chains that change, not the size of the network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
from sqlalchemy import bindparam, event, insert, select, update
from sqlalchemy.engine import make_url

from imserver.config import load_config
from imserver.domain.chains import upline_below
from imserver.geo.regions import load_regions_csv
from imserver.service.context import Context
from imserver.service.regions import load_regions
from imserver.service.repair import Repair
from imserver.store.db import Database
from imserver.store.migrate import upgrade
from imserver.store.models import AgencyLink, Member, Upline

ADMIN = "admin@bench.localhost"
REGION_LINE = ((3, "440305"), (2, "440300"), (1, "440000"))
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 5000


def build_forest(size: int, targets: list[tuple[int, int]], rng: random.Random) -> list[int | None]:
    """Parent index per member (None for a root). ``targets`` are (member, children): those
    members get exactly that many direct referrals, plus a grandchild under every 10th child
    and a great-grandchild under every 100th, as a real downline would have."""
    parent: list[int | None] = [None]
    reserved = {t for t, _ in targets}
    # The bulk: a random forest (about 1 root in 1,000), never under a target.
    while len(parent) < size - sum(n + n // 10 + n // 100 for _, n in targets):
        i = len(parent)
        if rng.random() < 0.001:
            parent.append(None)
            continue
        p = rng.randrange(i)
        parent.append(None if p in reserved else p)
    for target, n in targets:
        kids = []
        for _ in range(n):
            parent.append(target)
            kids.append(len(parent) - 1)
        grand = []
        for kid in kids[::10]:
            parent.append(kid)
            grand.append(len(parent) - 1)
        for g in grand[::10]:
            parent.append(g)
    return parent


async def populate(db: Database, parent: list[int | None], tag: str) -> list[int]:
    """Write members, uplines and agency chains in bulk; the members' database ids."""
    uplines: list[list[int]] = []
    async with db.engine.begin() as conn:
        ids: list[int] = []
        for start in range(0, len(parent), BATCH):
            rows = [
                {
                    "jid": f"m{i}-{tag}@bench.localhost",
                    "rule_number": f"440305-U{i:08d}",
                    "role": "user",
                    "region_code": "440305",
                    "referrer_id": None,
                    "original_referrer_id": None,
                    "status": "active",
                    "created_at": NOW,
                }
                for i in range(start, min(start + BATCH, len(parent)))
            ]
            result = await conn.execute(insert(Member).returning(Member.id), rows)
            ids.extend(int(r[0]) for r in result)
        for p in parent:
            uplines.append([] if p is None else upline_below(ids[p], uplines[p]))
        # Parent pointers, as one executemany per batch.
        stmt = (
            update(Member)
            .where(Member.id == bindparam("mid"))
            .values(referrer_id=bindparam("rid"), original_referrer_id=bindparam("rid"))
        )
        pairs = [{"mid": ids[i], "rid": ids[p]} for i, p in enumerate(parent) if p is not None]
        for start in range(0, len(pairs), BATCH):
            await conn.execute(stmt, pairs[start : start + BATCH])
        up_rows = [
            {"member_id": ids[i], "level": lvl, "ancestor_id": a}
            for i, line in enumerate(uplines)
            for lvl, a in enumerate(line, 1)
        ]
        for start in range(0, len(up_rows), BATCH):
            await conn.execute(insert(Upline), up_rows[start : start + BATCH])
        ag_rows = [
            {"member_id": mid, "scope_level": lvl, "region_code": code, "agent_id": None}
            for mid in ids
            for lvl, code in REGION_LINE
        ]
        for start in range(0, len(ag_rows), BATCH):
            await conn.execute(insert(AgencyLink), ag_rows[start : start + BATCH])
    return ids


class StatementCounter:
    """Counts SQL statements sent on an engine while ``on`` is set."""

    def __init__(self, db: Database) -> None:
        self.count = 0
        self.on = False
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        if self.on:
            self.count += 1


async def fresh_pg(admin_dsn: str) -> tuple[str, str]:
    name = f"imserver_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(admin_dsn).set(drivername="postgresql+asyncpg", database=name)
    return name, url.render_as_string(hide_password=False)


async def drop_pg(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def one_size(size: int, children: int, pg: str | None, workdir: Path) -> dict[str, Any]:
    """Build a network of ``size`` members and terminate targets in it."""
    pg_name = None
    if pg:
        pg_name, url = await fresh_pg(pg)
    else:
        url = f"sqlite+aiosqlite:///{workdir / f'repair-{size}.sqlite3'}"
    try:
        await asyncio.to_thread(upgrade, url)
        config = load_config(
            None,
            env={
                "IMSERVER_ADMINS": f'["{ADMIN}"]',
                "IMSERVER_DATABASE__URL": url,
                "IMSERVER_XMPP__SECRET": "bench-secret",
            },
        )
        db = Database(url)
        ctx = Context(db, config, lambda: NOW)
        await load_regions(ctx, load_regions_csv())
        rng = random.Random(size)
        big = [(1 + k, children) for k in range(5)]  # five targets with many children
        small = [(10 + k, 10) for k in range(5)]  # five with ten
        parent = build_forest(size, [*big, *small], rng)
        t0 = time.perf_counter()
        ids = await populate(db, parent, uuid.uuid4().hex[:6])
        build_s = time.perf_counter() - t0
        if pg and pg_name:
            # Statistics and the visibility map, as autovacuum would make them after such a
            # load; done now so that autovacuum does not run during the measurements.
            raw = await asyncpg.connect(make_url(pg).set(database=pg_name).render_as_string(False))
            try:
                await raw.execute("VACUUM ANALYZE")
            finally:
                await raw.close()
        if db.is_sqlite:
            # Fold the bulk load's WAL into the database first: otherwise the first commit
            # measured would pay for checkpointing the whole network.
            path = str(db.url.database)
            await asyncio.to_thread(
                lambda: sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
            )
        counter = StatementCounter(db)
        repair = Repair(ctx)
        runs: dict[str, list[dict[str, Any]]] = {"large": [], "small": []}
        for label, targets in (("large", big), ("small", small)):
            for target, _n in targets:
                async with db.engine.connect() as conn:
                    jid = (
                        await conn.execute(select(Member.jid).where(Member.id == ids[target]))
                    ).scalar_one()
                counter.count, counter.on = 0, True
                t0 = time.perf_counter()
                view = await repair.terminate(ADMIN, jid, "benchmark")
                elapsed = time.perf_counter() - t0
                counter.on = False
                runs[label].append(
                    {
                        "chains_repaired": view.repaired,
                        "reattached": view.reattached,
                        "ms": round(elapsed * 1000, 2),
                        "statements": counter.count,
                    }
                )
        await db.dispose()
        return {
            "network": len(parent),
            "build_seconds": round(build_s, 1),
            "terminate_large": runs["large"],
            "terminate_small": runs["small"],
            "median_ms_large": statistics.median(r["ms"] for r in runs["large"]),
            "min_ms_large": min(r["ms"] for r in runs["large"]),
            "median_ms_small": statistics.median(r["ms"] for r in runs["small"]),
            "min_ms_small": min(r["ms"] for r in runs["small"]),
        }
    finally:
        if pg_name and pg:
            await drop_pg(pg, pg_name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("--pg", default=None, help="PostgreSQL admin DSN (default: SQLite)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-repair-") as tmp:
        results = [await one_size(n, args.children, args.pg, Path(tmp)) for n in sizes]
    print(
        json.dumps(
            {
                "benchmark": "repair",
                "backend": "postgresql" if args.pg else "sqlite",
                "children_per_large_target": args.children,
                "machine": {"python": platform.python_version(), "cpus": _cpus()},
                "results": results,
            },
            indent=2,
        )
    )


def _cpus() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    asyncio.run(main())
