"""Outages of the database under payment load: PostgreSQL stopped, SQLite's disk full.

The component is a real child process (``imserver run``) on a private Prosody, as in
tests/test_faults.py, whose world and checks these tests reuse. Two merchant bots report
payments with several in flight and resend an unanswered or refused payment *with the
same id*; every answer is timed and every error counted by (condition, type).

- PostgreSQL: a private server (``initdb`` in a temporary folder, run as the postgres
  user on a free port; never the shared one) is stopped (``pg_ctl stop -m fast`` or
  ``-m immediate``, alternately) for 5 to 30 s under load, then started again. The
  make-test run makes 2 short outages, the soak run 10.
- SQLite: the database lives on a small tmpfs that the test mounts; a filler file takes
  all the space that is left for a few seconds, then is removed.

What is asserted:

- every request is answered (no bot ever times out), errors within ERROR_BOUND seconds;
- every error is ``service-unavailable`` of type ``wait`` (retry the same request), and
  requests made while the database was out did get that error;
- the same component process serves again within RECOVERY_BOUND seconds of the database
  coming back (no restart, its XMPP link never dropped);
- nothing acknowledged is lost or doubled, every stored payment is whole, the ledger
  check passes and no notification is lost (``tests.test_faults._check``); on SQLite
  also ``PRAGMA integrity_check``.

Each prints its figures as one JSON line (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from slixmpp.exceptions import IqError, IqTimeout

from imserver.devserver.prosody import ProsodyInstance, free_port
from imserver.service.batching import GroupCommit
from imserver.service.errors import ServiceError
from imserver.store.db import Conn, Database, Unavailable
from imserver.store.migrate import upgrade
from tests.conftest import DOMAIN
from tests.support.faults import (
    Bot,
    ComponentProcess,
    FaultClient,
    LoadStats,
    component_env,
    load_shipped_regions,
    shares_of,
)
from tests.support.private_pg import PrivatePostgres, why_not_available
from tests.test_faults import SECRET, World, _check, _network

SEED = int(os.environ.get("IMSERVER_TEST_FAULT_SEED", "6"))
# A bot waits this long for an answer; the component must answer well within it.
BOT_TIMEOUT = 10.0
# Every error answer (a database out of service included) within this many seconds.
ERROR_BOUND = 6.0
# Payments answered again within this many seconds of the database being back.
RECOVERY_BOUND = 10.0
WAIT = ("service-unavailable", "wait")
T = TypeVar("T")


@dataclass
class Timed:
    """Every answer of a run, timed: what the bots got, and when."""

    stats: LoadStats = field(default_factory=LoadStats)
    # (condition, type) of each error answer.
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (sent at, answered at, (condition, type) or None for a result), wall clock.
    answers: list[tuple[float, float, tuple[str, str] | None]] = field(default_factory=list)


async def _pay(bot: Bot, component: str, ref: str, payer: str, amount: int, run: Timed) -> None:
    """One payment id, resent (same id) after every error until a result; a timeout is
    counted and resent too, and fails the test afterwards."""
    stats = run.stats
    key = (bot.merchant, ref)
    stats.sent.add(key)
    while True:
        await bot.client.ready.wait()
        stats.requests += 1
        sent = time.time()
        try:
            iq = await bot.client.dist.pay(
                component, ref, payer, amount, "CNY", timeout=BOT_TIMEOUT
            )
        except IqTimeout:
            stats.timeouts += 1
            continue
        except IqError as exc:
            err = exc.iq["error"]
            kind = (str(err["condition"]), str(err["type"]))
            run.errors[kind] += 1
            stats.errors[kind[0]] += 1
            run.answers.append((sent, time.time(), kind))
            stats.retries += 1
            await asyncio.sleep(random.uniform(0.1, 0.3))
            continue
        run.answers.append((sent, time.time(), None))
        got = shares_of(iq)
        if key in stats.answers:
            stats.changed_answers += got != stats.answers[key]
        else:
            stats.answers[key] = got
        return


async def _load(world: World, run: Timed, stop: asyncio.Event, prefix: str, per_bot: int) -> None:
    """Bots pay until ``stop``; each worker then gets its last payment answered."""
    rng = random.Random(prefix)

    async def worker(bot: Bot, w: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            ref = f"{prefix}-{bot.client.bare.split('@')[0]}-{w}-{n}"
            await _pay(
                bot, world.jid, ref, rng.choice(bot.payers), rng.randrange(100, 100_000), run
            )
            await asyncio.sleep(0.02)

    await asyncio.gather(*(worker(b, w) for b in world.bots for w in range(per_bot)))


@contextlib.asynccontextmanager
async def _world(backend: str, url: str, tmp: Path, jid: str) -> AsyncIterator[World]:
    """A private Prosody, ``imserver run`` on ``url``, the network of test_faults' world."""
    prosody = ProsodyInstance(
        tmp / "prosody",
        domain=DOMAIN,
        client_port=free_port(),
        component_port=free_port(),
        components={jid: SECRET},
        log_level="debug",  # _check tells where a lost notification died from it
    )
    await prosody.astart()
    env = component_env(prosody, jid, SECRET, url, f"admin@{DOMAIN}")
    clients: list[FaultClient] = []
    component = ComponentProcess(env, tmp / "imserver.log")
    try:
        await asyncio.to_thread(upgrade, url)
        await load_shipped_regions(env, url)
        component.start()
        await component.wait_connection(0, 60)
        clients, earners, bots = await _network(prosody, jid)
        yield World(backend, url, env, prosody, component, jid, clients, earners, bots)
    finally:
        await asyncio.gather(*(cl.close() for cl in clients))
        await asyncio.to_thread(component.stop)
        await prosody.astop()


def _outage_figures(run: Timed, windows: list[tuple[float, float]]) -> dict[str, Any]:
    """What the bots saw in and around each outage window (down, up)."""
    error_latency = [got - sent for sent, got, kind in run.answers if kind is not None]
    per_window = []
    for down, up in windows:
        # Sent while the database was out (after a margin for the stop itself): the
        # answers that must be errors of type wait.
        during = [(s, g, k) for s, g, k in run.answers if down + 0.5 <= s and g <= up]
        back = [g - up for s, g, k in run.answers if k is None and s >= up]
        per_window.append(
            {
                "seconds": round(up - down, 1),
                "answers_during": len(during),
                "wait_errors_during": sum(1 for _, _, k in during if k == WAIT),
                "results_during": sum(1 for _, _, k in during if k is None),
                "first_result_after_up_s": round(min(back), 2) if back else None,
            }
        )
    return {
        "errors_by_type": {f"{c}/{t}": n for (c, t), n in sorted(run.errors.items())},
        "error_answer_seconds_max": round(max(error_latency), 2) if error_latency else None,
        "outages": per_window,
    }


def _assert_outages(run: Timed, figures: dict[str, Any]) -> None:
    """The assertions of both kinds of outage (see the module's docstring)."""
    assert run.stats.timeouts == 0, f"{run.stats.timeouts} requests never answered in time"
    other = {k: n for k, n in run.errors.items() if k != WAIT}
    assert not other, f"errors other than {WAIT}: {other}"
    slow = figures["error_answer_seconds_max"]
    assert slow is None or slow <= ERROR_BOUND, f"an error answered after {slow}s"
    for i, window in enumerate(figures["outages"]):
        assert window["wait_errors_during"] > 0, f"outage {i}: no wait error seen: {window}"
        back = window["first_result_after_up_s"]
        assert back is not None and back <= RECOVERY_BOUND, f"outage {i}: not back: {window}"


# -- PostgreSQL stopped ---------------------------------------------------------------------


@dataclass
class PgWorld:
    """The fault world and the private server it runs on."""

    world: World
    pg: PrivatePostgres


@pytest.fixture(scope="module")
async def private_pg() -> AsyncIterator[PrivatePostgres]:
    """A private PostgreSQL server, started (tests that stop it start it again)."""
    reason = why_not_available()
    if reason is not None:
        pytest.skip(f"no private PostgreSQL: {reason}")
    pg = await asyncio.to_thread(PrivatePostgres)
    try:
        await asyncio.to_thread(pg.start)
        yield pg
    finally:
        await asyncio.to_thread(pg.close)


@pytest.fixture(scope="module")
async def pg_world(
    private_pg: PrivatePostgres, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PgWorld]:
    """The fault world on the private PostgreSQL server."""
    tmp = tmp_path_factory.mktemp("outages-pg")
    async with _world("postgresql", private_pg.url, tmp, "outagespg.localhost") as world:
        yield PgWorld(world, private_pg)


class CountingDatabase(Database):
    """A real Database that counts the transactions it was asked to run."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.transactions = 0

    async def transaction(self, use_case: Callable[[Conn], Awaitable[T]]) -> T:
        self.transactions += 1
        return await super().transaction(use_case)


async def test_store_unavailable_only_for_outages(private_pg: PrivatePostgres) -> None:
    """``Unavailable`` for a stopped server, never for bad SQL or a unique key; and a
    batch of the group-commit writer fails at once, not item by item."""
    db = CountingDatabase(private_pg.url)
    try:

        async def create(conn: Conn) -> None:
            await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS probe (k int PRIMARY KEY)")
            await conn.exec_driver_sql("INSERT INTO probe VALUES (1) ON CONFLICT DO NOTHING")

        await db.transaction(create)

        async def duplicate(conn: Conn) -> None:
            await conn.exec_driver_sql("INSERT INTO probe VALUES (1)")

        async def bad_sql(conn: Conn) -> None:
            await conn.exec_driver_sql("SELEC 1")

        for use_case in (duplicate, bad_sql):
            with pytest.raises(Exception) as refused:
                await db.transaction(use_case)
            assert not isinstance(refused.value, Unavailable), refused.value

        async def batch(conn: Conn, items: Sequence[int]) -> list[int | ServiceError]:
            await conn.exec_driver_sql("SELECT 1")
            return list(items)

        writer: GroupCommit[int, int] = GroupCommit(db, batch, name="test", cap=64)
        await asyncio.to_thread(private_pg.stop, "fast")
        try:
            db.transactions = 0
            t0 = time.monotonic()
            outcomes = await asyncio.gather(
                *(writer.submit(i) for i in range(16)), return_exceptions=True
            )
            took = time.monotonic() - t0
            assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
            # One batch of 16 (the first submit may run alone): at most 2 transactions,
            # not one more per item.
            assert db.transactions <= 2, db.transactions
            assert took < ERROR_BOUND, took
        finally:
            await writer.close()
            await asyncio.to_thread(private_pg.start)
        await db.transaction(create)  # back, on a new connection
        # A restart while the connection sits in the pool: the first use after it must
        # succeed (the pre-ping replaces the dead connection), not fail once per
        # pooled connection.
        await asyncio.to_thread(private_pg.stop, "immediate")
        await asyncio.to_thread(private_pg.start)
        await db.transaction(create)
    finally:
        await db.dispose()


async def run_pg_outages(
    pw: PgWorld, outages: int, prefix: str, seconds: tuple[float, float]
) -> dict[str, Any]:
    """Payment load while the private server is stopped ``outages`` times."""
    world, pg = pw.world, pw.pg
    rng = random.Random(f"{SEED}-{prefix}")
    comp = world.component
    assert await world.all_ready()
    links, starts = comp.connections(), comp.starts
    run, stop = Timed(), asyncio.Event()
    t0 = time.monotonic()
    load = asyncio.ensure_future(_load(world, run, stop, prefix, per_bot=4))
    windows: list[tuple[float, float]] = []
    modes: list[str] = []
    try:
        for i in range(outages):
            await asyncio.sleep(rng.uniform(1.0, 2.0))
            mode = ("fast", "immediate")[i % 2]
            down = time.time()
            await asyncio.to_thread(pg.stop, mode)
            # A request that is not a payment takes the same mapping (its own use case).
            with pytest.raises(IqError) as refused:
                await world.earners[4].dist.balance(world.jid, timeout=BOT_TIMEOUT)
            err = refused.value.iq["error"]
            assert (err["condition"], err["type"]) == WAIT, err
            await asyncio.sleep(max(0.0, down + rng.uniform(*seconds) - time.time()))
            await asyncio.to_thread(pg.start)
            windows.append((down, time.time()))
            modes.append(mode)
        await asyncio.sleep(2.0)  # load on the recovered database too
    finally:
        if not await asyncio.to_thread(pg.running):  # a failed check left it stopped
            await asyncio.to_thread(pg.start)
        stop.set()
        await asyncio.wait_for(load, 120)
    figures: dict[str, Any] = {"run": "postgresql_outages", "stops": modes}
    figures |= _outage_figures(run, windows)
    figures |= await _check(world, run.stats, prefix, windows)
    figures["component_starts"] = comp.starts
    figures["xmpp_handshakes_during_run"] = comp.connections() - links
    figures["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(figures))
    _assert_outages(run, figures)
    assert comp.alive and comp.starts == starts, "the component was restarted"
    assert figures["xmpp_handshakes_during_run"] == 0, "the component's XMPP link dropped"
    assert figures["notifications"]["lost_in_window"] == 0
    return figures


async def test_postgresql_stopped_under_payment_load(pg_world: PgWorld) -> None:
    await run_pg_outages(pg_world, 2, "pgout", (5.0, 7.0))


@pytest.mark.soak
async def test_soak_postgresql_stopped_10_times(pg_world: PgWorld) -> None:
    await run_pg_outages(pg_world, 10, "soakpgout", (5.0, 30.0))


# -- SQLite on a full disk -------------------------------------------------------------------


def _fill(folder: Path) -> Path:
    """Write a file until the file system is full (not one byte left); returns it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # Unbuffered writes, large then small: each ends at the first ENOSPC.
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size) > 0:
                    pass
    finally:
        os.close(fd)
    return filler


def _integrity(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


@contextlib.contextmanager
def _tmpfs(size: str) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted on a temporary folder (skips if refused)."""
    mount_point = Path(tempfile.mkdtemp(prefix="imserver-full-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"mounting a tmpfs was refused: {(done.stderr or done.stdout).strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)
        mount_point.rmdir()


async def test_sqlite_disk_full_under_payment_load(tmp_path: Path) -> None:
    """The disk fills under load, stays full FULL_SECONDS, then space is freed."""
    full_seconds = 6.0
    with _tmpfs("16m") as disk:
        db_path = disk / "imserver.sqlite3"
        url = f"sqlite+aiosqlite:///{db_path}"
        async with _world("sqlite", url, tmp_path, "outagesfull.localhost") as world:
            assert await world.all_ready()
            comp = world.component
            links, starts = comp.connections(), comp.starts
            run, stop = Timed(), asyncio.Event()
            t0 = time.monotonic()
            load = asyncio.ensure_future(_load(world, run, stop, "full", per_bot=4))
            filler: Path | None = None
            try:
                await asyncio.sleep(2.0)
                down = time.time()
                filler = await asyncio.to_thread(_fill, disk)
                await asyncio.sleep(full_seconds)
                filler.unlink()
                filler = None
                windows = [(down, time.time())]
                await asyncio.sleep(3.0)
            finally:
                if filler is not None:
                    filler.unlink()
                stop.set()
                await asyncio.wait_for(load, 120)
            figures: dict[str, Any] = {"run": "sqlite_disk_full", "full_seconds": full_seconds}
            figures |= _outage_figures(run, windows)
            figures |= await _check(world, run.stats, "full", windows)
            figures["integrity_check"] = await asyncio.to_thread(_integrity, db_path)
            figures["seconds"] = round(time.monotonic() - t0, 1)
            print(json.dumps(figures))
            _assert_outages(run, figures)
            assert figures["integrity_check"] == "ok"
            assert comp.alive and comp.starts == starts, "the component was restarted"
            assert comp.connections() == links, "the component's XMPP link dropped"
