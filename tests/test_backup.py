"""Durability settings on every connection, and ``imserver backup`` + restore.

The SQLite backup is taken through the CLI while members register through Prosody; the
restore follows README.md ("Backup and restore"): stop, move the database and its
-wal/-shm aside, copy the backup in, start; the restored service answers the chain of a
member registered before the backup, and knows nothing of one registered after it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from imserver import cli
from imserver.app import App
from imserver.store import backup as backup_mod
from imserver.store.backup import BackupError, backup
from tests.conftest import PG_ADMIN_DSN, Service, _drop_pg_database, _fresh_pg_database
from tests.support.clients import expect_error
from tests.support.network import add_merchant, chain_of
from tests.support.private import private_config, private_prosody, start_service, stop_service

# -- durability: read back through the app's own engine ----------------------------------


async def test_durability_settings_on_every_connection(service: Service) -> None:
    engine = service.app.db.engine
    # Several connections at once, so that more than one pooled connection is checked.
    conns = [await engine.connect() for _ in range(3)]
    try:
        for conn in conns:
            if service.backend == "sqlite":
                # The driver's connection itself: going through SQLAlchemy would open a
                # BEGIN IMMEDIATE on each and the three would queue on the write lock.
                raw = (await conn.get_raw_connection()).driver_connection
                values = []
                for pragma in ("journal_mode", "synchronous", "foreign_keys"):
                    async with raw.execute(f"PRAGMA {pragma}") as cur:
                        values.append((await cur.fetchone())[0])
                assert values == ["wal", 2, 1]  # synchronous 2 = FULL: survives a power cut
            else:
                value = (await conn.execute(text("SHOW synchronous_commit"))).scalar()
                assert value == "on"
    finally:
        for conn in conns:
            await conn.close()


# -- SQLite: backup while registrations happen, then restore -----------------------------


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _jids(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT jid FROM members")}


class HeldWrite:
    """Wraps the database's ``transaction``: once ``armed``, the first transaction that has
    written members keeps them uncommitted (and, on SQLite, the one write lock held)
    until ``release``; ``held`` are their JIDs. Works whether registrations commit one
    by one or in batches."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, db: Any, db_path: Path) -> None:
        self.armed = False
        self.held: set[str] = set()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        original = db.transaction

        async def transaction(use_case: Callable[[Any], Awaitable[Any]]) -> Any:
            async def then_hold(conn: Any) -> Any:
                result = await use_case(conn)
                if self.armed and not self.holding.is_set():
                    seen = {row[0] for row in await conn.execute(text("SELECT jid FROM members"))}
                    self.held = seen - _jids(db_path)  # written here, not committed
                    if self.held:
                        self.holding.set()
                        await self.release.wait()
                return result

            return await original(then_hold)

        monkeypatch.setattr(db, "transaction", transaction)


async def test_sqlite_backup_during_registrations_and_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    component = "distbak.localhost"
    db_path = tmp_path / "live" / "imserver.sqlite3"
    db_path.parent.mkdir()
    url = f"sqlite+aiosqlite:///{db_path}"
    dest = tmp_path / "backup.sqlite3"
    async with private_prosody(tmp_path / "prosody", component) as prosody:
        config = private_config(prosody, component, url)
        svc = await start_service(prosody, config)
        admin = await svc.admin()
        shop = await svc.client(svc.new_jid("shop"))
        await add_merchant(admin, svc.jid, shop.bare)
        early = [await svc.client() for _ in range(5)]
        for user in early:
            await user.dist.register(svc.jid, shop.bare)
        chains_before = {u.bare: chain_of(await u.dist.chain(svc.jid)) for u in early}
        during = [await svc.client() for _ in range(40)]
        # The CLI reads its config from the environment, as an operator's cron job would.
        monkeypatch.setenv("IMSERVER_DATABASE__URL", url)
        # Registrations in two waves, the backup in the middle of the second: the first
        # wave has committed; of the second, the first transaction that writes members is
        # held open (its rows written, not committed; SQLite's one write lock held) until
        # the backup has finished, and the others wait behind it.
        hold = HeldWrite(monkeypatch, svc.app.db, db_path)
        first, second = during[:10], during[10:]
        await asyncio.gather(*(u.dist.register(svc.jid, shop.bare) for u in first))
        committed = _count(db_path, "members")
        hold.armed = True
        registering = asyncio.gather(*(u.dist.register(svc.jid, shop.bare) for u in second))
        await asyncio.wait_for(hold.holding.wait(), 60)
        argv = ["--config", str(tmp_path / "none.toml"), "backup", str(dest)]
        status = await asyncio.wait_for(asyncio.to_thread(cli.main, argv), 60)
        assert not registering.done()  # the backup ran while registrations were under way
        hold.release.set()
        await asyncio.wait_for(registering, 60)
        assert status == 0 and dest.is_file()
        assert not dest.with_name(dest.name + ".part").exists()
        late = await svc.client()
        await late.dist.register(svc.jid, shop.bare)
        await stop_service(svc)

        # The copy is the committed state of the moment it was taken: the first wave in,
        # the held registrations out, strictly between before and after the registrations.
        members = _count(dest, "members")
        before, after = len(early) + 1, len(early) + 1 + len(during)  # with the shop
        assert before < members == committed == before + len(first) < after
        copied, live = _jids(dest), _jids(db_path)
        assert {u.bare for u in first} < copied < live and len(live) == after + 1
        assert hold.held and hold.held <= live and not hold.held & copied
        # Every member in the copy has its whole agency chain (3 levels in 440305).
        assert _count(dest, "agency_links") == 3 * members
        print(f"\nbackup: {members} members; before the registrations {before}, after {after}")

        # Restore as README.md says: move the live files aside, copy the backup in, start.
        aside = tmp_path / "aside"
        aside.mkdir()

        def restore() -> None:
            for suffix in ("", "-wal", "-shm"):
                live = Path(f"{db_path}{suffix}")
                if live.exists():
                    shutil.move(live, aside / live.name)
            shutil.copyfile(dest, db_path)

        restore()
        restored = await start_service(prosody, config, fresh=False)
        try:
            for user in early:
                client = await restored.client(user.bare)
                assert chain_of(await client.dist.chain(restored.jid)) == chains_before[user.bare]
            client = await restored.client(late.bare)
            await expect_error(client.dist.chain(restored.jid), "registration-required")
            # And it takes new registrations on top of the restored state.
            newcomer = await restored.client()
            await newcomer.dist.register(restored.jid, shop.bare)
        finally:
            await stop_service(restored)


def test_backup_refuses_to_overwrite_and_cleans_up(tmp_path: Path) -> None:
    db_path = tmp_path / "db.sqlite3"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE t (x)")
    dest = tmp_path / "copy.sqlite3"
    dest.write_text("precious")
    with pytest.raises(BackupError, match="exists already"):
        backup(f"sqlite+aiosqlite:///{db_path}", dest)
    assert dest.read_text() == "precious"
    with pytest.raises(BackupError, match="no SQLite database"):
        backup(f"sqlite+aiosqlite:///{tmp_path / 'missing.sqlite3'}", tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


def test_backup_without_pg_dump_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(backup_mod.shutil, "which", lambda _name: None)
    with pytest.raises(BackupError, match="pg_dump is not installed"):
        backup("postgresql+asyncpg://u:p@127.0.0.1/db", tmp_path / "dump")


# -- PostgreSQL: pg_dump, then pg_restore into a fresh database ---------------------------


async def _pg_available() -> bool:
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def test_postgresql_backup_and_restore(tmp_path: Path) -> None:
    if "postgresql" not in os.environ.get("IMSERVER_TEST_BACKENDS", "sqlite,postgresql"):
        pytest.skip("PostgreSQL not selected")
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore not installed")
    # Selected but not reachable is a failure (as it is for every other PostgreSQL test).
    assert await _pg_available(), "PostgreSQL is selected but not reachable (IMSERVER_TEST_PG)"
    from imserver.config import load_config
    from imserver.geo.regions import load_regions_csv
    from imserver.service.membership import Location
    from imserver.service.policies import seed_policy
    from imserver.service.regions import load_regions
    from imserver.store.migrate import upgrade

    source, url = await _fresh_pg_database()
    target, target_url = await _fresh_pg_database()
    try:
        await asyncio.to_thread(upgrade, url)
        config = load_config(None, env={"IMSERVER_DATABASE__URL": url})
        app = App(config)
        try:
            await seed_policy(app.ctx)
            await load_regions(app.ctx, load_regions_csv())
            m = app.services.membership
            await m.add_merchant(
                "admin@localhost", "pgshop@localhost", "Shop", None, Location(region="440305")
            )
            await m.register("pguser@localhost", "pgshop@localhost")
        finally:
            await app.db.dispose()
        dest = tmp_path / f"dump-{uuid.uuid4().hex[:6]}.pgdump"
        result = await asyncio.to_thread(backup, url, dest)
        assert result.backend == "postgresql" and dest.stat().st_size > 0
        libpq = make_url(target_url).set(drivername="postgresql")
        env = dict(os.environ, PGPASSWORD=str(libpq.password or ""))
        proc = await asyncio.to_thread(
            __import__("subprocess").run,
            [
                "pg_restore",
                "--no-owner",
                f"--dbname={libpq.set(password=None).render_as_string(hide_password=False)}",
                str(dest),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        restored = App(load_config(None, env={"IMSERVER_DATABASE__URL": target_url}))
        try:
            chain = await restored.services.membership.chain("pguser@localhost", None)
            assert chain.member.jid == "pguser@localhost"
            assert [link.jid for link in chain.upline] == ["pgshop@localhost"]
        finally:
            await restored.db.dispose()
    finally:
        await _drop_pg_database(source)
        await _drop_pg_database(target)
