"""``imserver db copy``: a database made through the real component, copied to the other
backend (and, in ``make soak``, the same one) while the component runs; same rows, ledger
check passes, and the copy serves a new payment; a non-empty target and bad URLs are
refused.

The source is the session's service (Prosody fixture, SQLite or PostgreSQL): payments
with shares, a refund, settlement, withdrawals (approved, rejected, pending), a member
moved under one who joined after it (its referrer id is higher than its own), a deleted
member (erasure), notifications and the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Select, func, select, text

from imserver import cli
from imserver.store import ledger
from imserver.store.db import Database
from imserver.store.dbcopy import CopyError, copy_database
from imserver.store.migrate import upgrade
from imserver.store.models import Member, OutboxMessage, Payment
from tests.conftest import (
    FAR_DOMAIN,
    Service,
    _drop_pg_database,
    _fresh_pg_database,
    empty_database,
)
from tests.support.clients import Client
from tests.support.commands import say
from tests.support.dbsnap import snapshot
from tests.support.faults import wait_for
from tests.support.network import add_merchant
from tests.support.private import private_config, private_prosody, start_service, stop_service
from tests.test_payments import Chain, full_chain

COMPONENT = "distcopy.localhost"


@pytest.fixture(params=["sqlite", "postgresql"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a database that does not exist yet (SQLite) or is new and empty."""
    async with empty_database(request.param, tmp_path / "copy") as url:
        yield url


async def _scalar(db: Database, stmt: Select[Any]) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def fill(service: Service) -> Chain:
    """Real content through the real protocol (see the module's docstring)."""
    c = await full_chain(service)
    admin = await service.admin()
    sid = service.jid
    for n in range(3):
        await c.bot.dist.pay(sid, f"copy-{n}", c.carol.bare, 100000, "CNY")
    await c.bot.dist.pay(sid, "copy-3", c.bob.bare, 5000, "CNY")
    await c.bot.dist.refund(sid, "copy-r1", "copy-3", 2000)
    service.clock.advance(days=8)
    await service.app.services.settlement.settle()
    await c.bot.dist.pay(sid, "copy-4", c.carol.bare, 10000, "CNY")  # still pending
    ids = []
    for amount in (2000, 1500, 1000):
        ids.append((await c.bob.dist.withdraw(sid, amount, "CNY"))["withdrawal"]["id"])
    await admin.dist.decide_withdrawal(sid, ids[0], "approve", reason="paid")
    await admin.dist.decide_withdrawal(sid, ids[1], "reject", reason="no")
    # Alice moves under a member who joined after her: a reference to a higher id.
    other = await service.client(service.new_jid("shop"))
    await add_merchant(admin, sid, other.bare, name="Other Shop")
    later = await service.client(service.new_jid("later"))
    await later.dist.register(sid, other.bare)
    await admin.dist.reassign(sid, c.alice.bare, later.bare, "moved shops")
    leaving = await service.client(service.new_jid("leaving"))
    await leaving.dist.register(sid, c.carol.bare)
    await c.bot.dist.pay(sid, "copy-5", leaving.bare, 3000, "CNY")
    await admin.dist.delete(sid, leaving.bare, reason="asked to leave")
    # A member of another server, whose earnings are held longer, and an admin's trust.
    far = await service.client(service.new_jid("far", FAR_DOMAIN))
    await far.dist.register(sid, c.carol.bare)
    referred = await service.client(service.new_jid("referred"))
    await referred.dist.register(sid, far.bare)
    await c.bot.dist.pay(sid, "copy-6", referred.bare, 8000, "CNY")
    await say(admin, sid, "trust example.net blocked a farm")
    return c


async def quiet(service: Service) -> None:
    """Wait until the component has sent every notification (its only background write)."""
    unsent = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))

    async def all_sent() -> bool:
        return await _scalar(service.app.db, unsent) == 0

    assert await wait_for(all_sent, 30), "notifications still unsent after 30 s"


async def copy_cli(*argv: str) -> int:
    """``imserver db copy`` as an operator runs it (no config file needed)."""
    args = ["--config", "/nonexistent/config.toml", "db", "copy", *argv]
    return await asyncio.wait_for(asyncio.to_thread(cli.main, args), 300)


# The copies across backends take every path of the copy (dbcopy branches on the source's
# backend and on the target's, never on the pair): the same-backend ones are soak.
@pytest.mark.soak_when(service="sqlite", target="sqlite")
@pytest.mark.soak_when(service="postgresql", target="postgresql")
async def test_copy_has_every_row_and_serves_payments(
    service: Service, target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = await fill(service)
    await quiet(service)
    source = service.app.db
    before = await snapshot(source)
    assert await copy_cli(service.config.database.url, target) == 0
    out = capsys.readouterr().out
    assert "\r" not in out, "a progress bar was drawn on a stream that is no terminal"
    assert "row counts equal, ledger OK" in out
    assert await snapshot(source) == before, "the component wrote during the copy"

    copy = Database(target)
    try:
        copied = await snapshot(copy)
        assert list(copied) == list(before)
        for table, rows in before.items():
            assert copied[table] == rows, f"{table} differs"
        assert before["withdrawals"] and before["refunds"] and before["audit_log"]
        moved = select(func.count()).select_from(Member).where(Member.referrer_id > Member.id)
        assert await _scalar(copy, moved) >= 1  # the forward reference came through
        report = await copy.transaction(ledger.check)
        assert report.ok, report.problems
        last_payment = await _scalar(copy, select(func.max(Payment.id)))
        last_member = await _scalar(copy, select(func.max(Member.id)))
    finally:
        await copy.dispose()

    # The copy runs: a new payment and a new member get fresh ids, the ledger holds.
    async with private_prosody(tmp_path / "prosody", COMPONENT) as prosody:
        backend = "sqlite" if target.startswith("sqlite") else "postgresql"
        svc = await start_service(
            prosody, private_config(prosody, COMPONENT, target), backend=backend, fresh=False
        )
        try:
            bot = await svc.client(c.bot.bare)
            answer = await bot.dist.pay(svc.jid, "after-copy", c.carol.bare, 10000, "CNY")
            assert answer["distribution"]["payment"] == "after-copy"
            again = await bot.dist.pay(svc.jid, "copy-1", c.carol.bare, 100000, "CNY")
            assert again["distribution"]["payment"] == "copy-1"  # idempotency came along
            newcomer: Client = await svc.client()
            await newcomer.dist.register(svc.jid, c.carol.bare)
            db = svc.app.db
            fresh = select(Payment.id).where(Payment.ref == "after-copy")
            assert await _scalar(db, fresh) == last_payment + 1
            joined = select(Member.id).where(Member.jid == newcomer.bare)
            assert await _scalar(db, joined) == last_member + 1
            assert await _scalar(db, select(func.count()).select_from(Payment)) == (
                len(before["payments"]) + 1
            )
            report = await svc.app.services.ledger.check()
            assert report.ok, report.problems
        finally:
            await stop_service(svc)

    # Into a target that holds rows now: refused, and nothing changes.
    copy = Database(target)
    try:
        held = await snapshot(copy)
        assert await copy_cli(service.config.database.url, target) == 1
        err = capsys.readouterr().err
        assert "is not empty" in err and "members (" in err
        assert await snapshot(copy) == held
    finally:
        await copy.dispose()


class PauseAt:
    """A Progress that holds the copy (run in its own thread) when it reaches a table,
    until the test lets it go on."""

    def __init__(self, table: str) -> None:
        self.at = table
        self.reached = threading.Event()
        self.resume = threading.Event()

    def table(self, name: str, rows: int) -> None:
        if name == self.at:
            self.reached.set()
            assert self.resume.wait(60), "the test never let the copy go on"

    def advance(self, rows: int) -> None:
        pass


@pytest.mark.soak_when(service="sqlite", target="sqlite")
@pytest.mark.soak_when(service="postgresql", target="postgresql")
async def test_a_copy_during_payments_is_one_committed_state(service: Service, target: str) -> None:
    c = await full_chain(service)
    sid = service.jid
    ref = f"during-{uuid.uuid4().hex[:8]}-"  # the session's database has earlier runs'
    for n in range(3):
        await c.bot.dist.pay(sid, f"{ref}{n}", c.carol.bare, 10000, "CNY")
    pause = PauseAt("payments")
    # Small pages, so that the copy reads payments in several statements of one snapshot.
    copying = asyncio.ensure_future(
        asyncio.to_thread(
            asyncio.run, copy_database(service.config.database.url, target, pause, chunk=2)
        )
    )
    try:
        assert await asyncio.to_thread(pause.reached.wait, 60)
        # Members are copied, payments not yet: these commit meanwhile, with new rows in
        # every table the copy has already passed (accounts, ledger) or not (outbox).
        for n in range(3, 6):
            await c.bot.dist.pay(sid, f"{ref}{n}", c.carol.bare, 10000, "CNY")
    finally:
        pause.resume.set()
    report = await asyncio.wait_for(copying, 120)
    assert report.ok
    copy = Database(target)
    try:
        mine = select(Payment.ref).where(Payment.ref.startswith(ref)).order_by(Payment.ref)
        async with copy.engine.connect() as conn:
            refs = list((await conn.execute(mine)).scalars())
        assert refs == [f"{ref}{n}" for n in range(3)]
    finally:
        await copy.dispose()
    async with service.app.db.engine.connect() as conn:
        assert len(list((await conn.execute(mine)).scalars())) == 6


async def _migrated_sqlite(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    return url


async def test_a_target_with_one_row_is_refused_before_anything_is_done(tmp_path: Path) -> None:
    source = await _migrated_sqlite(tmp_path / "source.sqlite3")
    # An old schema (the first revision) with one region: not migrated, not touched.
    target = f"sqlite+aiosqlite:///{tmp_path / 'target.sqlite3'}"
    await asyncio.to_thread(_upgrade_to, target, "0001")
    db = Database(target)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO regions (code, name, level, lat_e6, lon_e6) "
                    "VALUES ('990000', 'Somewhere', 1, 0, 0)"
                )
            )
        before = await snapshot(db)
        with pytest.raises(CopyError, match=r"is not empty: regions \(1 rows\)"):
            await copy_database(source, target)
        assert await snapshot(db) == before
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).all() == [
                ("0001",)
            ]
    finally:
        await db.dispose()


def _upgrade_to(url: str, revision: str) -> None:
    from alembic import command

    from imserver.store.migrate import alembic_config

    command.upgrade(alembic_config(url), revision)


async def test_a_copy_that_fails_its_checks_is_rolled_back(tmp_path: Path) -> None:
    source = await _migrated_sqlite(tmp_path / "source.sqlite3")
    db = Database(source)
    try:
        async with db.engine.begin() as conn:  # money out of nowhere: the ledger is broken
            await conn.execute(
                text(
                    "INSERT INTO accounts (owner, bucket, currency, balance) "
                    "VALUES ('platform', 'earnings', 'CNY', 5)"
                )
            )
    finally:
        await db.dispose()
    name, target = await _fresh_pg_database()
    copy = Database(target)
    try:
        with pytest.raises(CopyError, match="rolled back") as failed:
            await copy_database(source, target)
        assert "ledger: CNY: balances sum to 5, not 0" in str(failed.value)
        left = await snapshot(copy)
        assert {t: rows for t, rows in left.items() if rows} == {"chain_epoch": [("1", "0")]}
        # Migrated and empty: the same copy goes through once the source is right.
        db = Database(source)
        async with db.engine.begin() as conn:
            await conn.execute(text("DELETE FROM accounts"))
        await db.dispose()
        assert (await copy_database(source, target)).ok
    finally:
        await copy.dispose()
        await _drop_pg_database(name)


async def test_an_empty_source_copies_to_an_empty_target(tmp_path: Path) -> None:
    source = await _migrated_sqlite(tmp_path / "source.sqlite3")
    name, target = await _fresh_pg_database()
    try:
        report = await copy_database(source, target)
        assert report.ok and report.rows == 1  # the chain epoch's row
        assert {t.name for t in report.tables} >= {"members", "payments", "outbox"}
        # Read only: the source (a rollback-journal file, as a backup is) is left as is.
        assert _journal_mode(tmp_path / "source.sqlite3") == "delete"
        assert _files(tmp_path) == ["source.sqlite3"]
    finally:
        await _drop_pg_database(name)


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (
            "mysql://u@h/db",
            "sqlite+aiosqlite:///{tmp}/t.sqlite3",
            "FROM_URL 'mysql://u@h/db' is not a database URL",
        ),
        ("{source}", "not a url", "TO_URL 'not a url' is not a database URL"),
        (
            "sqlite+aiosqlite:///{tmp}/missing.sqlite3",
            "sqlite+aiosqlite:///{tmp}/t.sqlite3",
            "no SQLite database at",
        ),
        ("{source}", "{source}", "FROM_URL and TO_URL are the same database"),
        (
            "{source}",
            "sqlite+aiosqlite:///{tmp}/source.sqlite3/t.sqlite3",  # its folder is a file
            "cannot prepare the target sqlite+aiosqlite:///",
        ),
        (
            "{source}",
            "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
            "cannot prepare the target postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
        ),
        (
            "postgresql+asyncpg://postgres@127.0.0.1:5432/no_such_db_{uid}",
            "sqlite+aiosqlite:///{tmp}/t.sqlite3",
            "cannot read the source",
        ),
    ],
)
async def test_bad_urls_get_a_clear_error_and_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, target: str, message: str
) -> None:
    real = await _migrated_sqlite(tmp_path / "source.sqlite3")
    values = {"tmp": str(tmp_path), "source": real, "uid": uuid.uuid4().hex[:8]}
    before = _files(tmp_path)
    assert await copy_cli(source.format(**values), target.format(**values)) == 1
    err = capsys.readouterr().err
    assert err.startswith("db copy failed: ") and message in err, err
    assert "Traceback" not in err
    assert _files(tmp_path) == before  # no file was created


def _copy_on_a_terminal(source: str, target: str) -> tuple[int, str]:
    """``imserver db copy`` in its own process with a pseudo-terminal as its stdout and
    stderr (where the bar goes)."""
    leader, follower = os.openpty()
    argv = [sys.executable, "-m", "imserver.cli", "--config", "/nonexistent.toml"]
    proc = subprocess.Popen([*argv, "db", "copy", source, target], stdout=follower, stderr=follower)
    os.close(follower)
    seen = b""
    with contextlib.suppress(OSError):  # EIO once the process closed its end
        while chunk := os.read(leader, 4096):
            seen += chunk
    os.close(leader)
    return proc.wait(60), seen.decode()


async def test_the_progress_bar_is_drawn_on_a_terminal(tmp_path: Path) -> None:
    source = await _migrated_sqlite(tmp_path / "source.sqlite3")
    target = f"sqlite+aiosqlite:///{tmp_path / 'target.sqlite3'}"
    status, seen = await asyncio.to_thread(_copy_on_a_terminal, source, target)
    assert status == 0, seen
    # One line per table, redrawn in place: the chain epoch's is the last, 1 row of 1.
    assert re.search(r"\r  chain_epoch +\[#+\] +1/1 ", seen), seen
    assert re.search(r"\r  members +\[#+\] +0/0 ", seen), seen
    assert "row counts equal, ledger OK" in seen


def _journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_a_source_at_an_older_schema_is_refused(tmp_path: Path) -> None:
    source = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    await asyncio.to_thread(_upgrade_to, source, "0002")
    with pytest.raises(CopyError, match="run `imserver migrate` on it first"):
        await copy_database(source, f"sqlite+aiosqlite:///{tmp_path / 't.sqlite3'}")
    assert not (tmp_path / "t.sqlite3").exists()
