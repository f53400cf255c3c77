#!/usr/bin/env python3
"""``imserver db copy`` of a larger database: seconds and peak memory.

The source is the realistic population (``bench_e2e.seed``: regions, policy, merchants,
agents and bots through the service layer; the users bulk-loaded by ``bulkload``), plus
``--payments`` payments through the service layer (shares, ledger, outbox). The copy
runs as an operator runs it, ``imserver db copy FROM_URL TO_URL`` in its own process,
whose wall time and peak RSS (its VmHWM) are measured; then the copy's
row counts are read back. Several ``--members`` sizes show whether memory stays flat
as the database grows (it should: the copy holds one page of rows at a time).

    python bench/bench_dbcopy.py [--from sqlite|postgresql] [--members 10000 100000]
        [--payments 5000] [--no-save]

The JSON goes to stdout and to ``bench/results/dbcopy-<from>-<to>-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path[:0] = [str(ROOT), str(BENCH)]

import bench_e2e as e2e  # noqa: E402
import bulkload  # noqa: E402

from imserver.store.models import Base  # noqa: E402

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
OTHER = {"sqlite": "postgresql", "postgresql": "sqlite"}


async def _pay(url: str, pop: e2e.Population, payments: int) -> float:
    """``payments`` payments through the service layer, 64 at a time; their seconds."""
    from imserver.app import App

    app = App(bulkload.bench_config(url))
    rng = random.Random(5)
    sem = asyncio.Semaphore(64)
    t0 = time.monotonic()

    async def one(k: int) -> None:
        async with sem:
            bot, payer = rng.choice(pop.bots), rng.choice(pop.payers)
            await app.services.payments.pay(bot, f"copy-bench-{k}", payer, "10000", "CNY")

    try:
        await asyncio.gather(*(one(k) for k in range(payments)))
    finally:
        await app.services.payments.close()
        await app.db.dispose()
    return time.monotonic() - t0


def _peak_rss_kb(pid: int) -> int | None:
    """The process's peak RSS so far (VmHWM), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _copy(source: str, target: str) -> dict[str, Any]:
    """``imserver db copy`` in its own process: exit code, seconds, peak RSS, its output.

    The peak is the process's own VmHWM, read until it ends: ``wait4``'s ``ru_maxrss``
    would count the peak of the forked copy of this (large) process before ``exec``.
    """
    exe = Path(sys.executable).parent / "imserver"
    argv = [str(exe), "--config", "/nonexistent.toml", "db", "copy", source, target]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _peak_rss_kb(proc.pid) or 0)
        time.sleep(0.05)
    seconds = time.monotonic() - t0
    out, err = proc.communicate()
    return {
        "exit_code": proc.returncode,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak / 1024, 1),
        "output": out.strip().splitlines()[-1:] + err.strip().splitlines()[-3:],
    }


def one_size(kind: str, members: int, payments: int, tmp: Path) -> dict[str, Any]:
    """Seed a source of ``members`` members, copy it to the other backend, measure."""
    made: list[e2e.Db] = []
    try:
        t0 = time.monotonic()
        source, _info = asyncio.run(
            bulkload._seeded(kind, members, True, tmp, f"src{members}", PG_ADMIN_DSN)
        )
        made.append(source)
        seed_seconds = time.monotonic() - t0
        pay_seconds = 0.0
        if payments:
            pay_seconds = asyncio.run(_pay(source.url, _population(source.url), payments))
        sub = tmp / f"dst{members}"
        sub.mkdir()
        target = e2e.Db.create(OTHER[kind], sub, PG_ADMIN_DSN)
        made.append(target)
        load = os.getloadavg()
        copy = _copy(source.url, target.url)
        counts = {t.name: target.count(t.name) for t in Base.metadata.sorted_tables}
        return {
            "members": members,
            "payments": payments,
            "seed_seconds": round(seed_seconds, 1),
            "pay_seconds": round(pay_seconds, 1),
            "loadavg_before_copy": list(load),
            "copy": copy,
            "rows": sum(counts.values()),
            "rows_per_second": round(sum(counts.values()) / copy["seconds"]),
            "tables": counts,
        }
    finally:
        for db in made:
            db.drop(PG_ADMIN_DSN)


def _population(url: str) -> e2e.Population:
    """Bots and payers of the seeded database, read back (bench_e2e.seed's names)."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    async def read() -> e2e.Population:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                bots = list((await conn.execute(sa.text("SELECT jid FROM bots"))).scalars())
                payers = list(
                    (
                        await conn.execute(
                            sa.text(
                                "SELECT jid FROM members WHERE role = 'user' "
                                "ORDER BY id DESC LIMIT 2000"
                            )
                        )
                    ).scalars()
                )
        finally:
            await engine.dispose()
        return e2e.Population(bots, payers, [], [], len(payers))

    return asyncio.run(read())


def main() -> int:
    """Measure the copy at each size; prints JSON, exit 1 when a copy failed."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--from", dest="kind", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--members", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--payments", type=int, default=5000)
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = p.parse_args()
    report: dict[str, Any] = {
        "benchmark": "imserver db copy of a bulk-loaded population plus payments",
        "from": args.kind,
        "to": OTHER[args.kind],
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": e2e.code_version(),
        "machine": {
            "nproc": os.cpu_count(),
            "loadavg_before": list(os.getloadavg()),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "runs": [],
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-dbcopy-"))
    try:
        for members in args.members:
            report["runs"].append(one_size(args.kind, members, args.payments, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["machine"]["loadavg_after"] = list(os.getloadavg())
    text = json.dumps(report, indent=2, default=str)
    if not args.no_save:
        bulkload.save_result(f"dbcopy-{args.kind}-{OTHER[args.kind]}", text)
    print(text)
    return 0 if all(r["copy"]["exit_code"] == 0 for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
