"""Erasure covers what the models declare, and the models declare every column that could
hold a JID or a person's words (``models.erased``).

The first tests need no database: they read the schema. The last one writes a deleted
member's JID into every declared column of a database of its own (both backends: the
filler rows it writes would break the shared test service), erases the member, and then
finds the JID in no text column of any table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
)

from imserver.config import load_config
from imserver.geo.regions import load_regions_csv
from imserver.service.context import Context
from imserver.service.membership import Location
from imserver.service.policies import seed_policy
from imserver.service.regions import load_regions
from imserver.service.registry import Services
from imserver.store import members
from imserver.store.db import Database
from imserver.store.migrate import upgrade
from imserver.store.models import ERASURE, ERASURE_RULES, Base, Member, erased
from imserver.store.repair import erase, erasure_columns
from tests.conftest import BACKENDS, _drop_pg_database, _fresh_pg_database

ADMIN = "admin@localhost"

# Names that say "a JID" whatever their length.
JID_NAMES = {"jid", "recipient", "actor", "target", "owner_jid"}
# Text this long or longer can hold a JID (the shortest JID column is 1023, free text
# 500, a merchant's key 128); shorter strings are codes and enums.
FREE_TEXT = 100


def undeclared(metadata: MetaData) -> list[str]:
    """Columns that could hold a JID or free text and declare no erasure rule."""
    missing = []
    for table in metadata.sorted_tables:
        for column in table.columns:
            length = getattr(column.type, "length", None)
            could = (
                column.name in JID_NAMES
                or column.name.endswith("_by")
                or (isinstance(column.type, String) and (length is None or length >= FREE_TEXT))
            )
            if could and column.info.get(ERASURE) not in ERASURE_RULES:
                missing.append(f"{table.name}.{column.name}")
    return missing


def test_every_column_that_could_hold_a_jid_declares_its_erasure() -> None:
    assert undeclared(Base.metadata) == []


def test_a_new_jid_column_without_a_rule_is_caught() -> None:
    # The check itself can fail: a schema with one undeclared JID column, one undeclared
    # free-text column, and one declared column.
    md = MetaData()
    Table(
        "tips",
        md,
        Column("id", Integer, primary_key=True),
        Column("tipper", String(1023)),
        Column("approved_by", String(40)),
        Column("note", String(300), info=erased("text")),
        Column("currency", String(3)),
    )
    assert undeclared(md) == ["tips.tipper", "tips.approved_by"]


def test_rules_are_checked_where_they_are_declared() -> None:
    with pytest.raises(ValueError):
        erased("forget")
    with pytest.raises(ValueError):
        erased("keep")  # a kept column says why


def test_the_member_identity_is_declared_once() -> None:
    assert [f"{c.table.name}.{c.name}" for c in erasure_columns("identity")] == ["members.jid"]
    assert {c.table.name for c in erasure_columns("drop")} == {"members"}


def _filler(column: Column[Any], member_id: int, now: datetime) -> Any:
    """A value for a required column of a row written only to hold a JID."""
    if column.foreign_keys:
        (fk,) = column.foreign_keys
        assert isinstance(fk, ForeignKey)
        assert fk.column.table.name == "members", f"{column} needs a {fk.column.table.name}"
        return member_id
    if isinstance(column.type, DateTime):
        return now
    if isinstance(column.type, String):
        return "x"[: column.type.length or 1]
    return 7


@pytest.fixture(params=BACKENDS)
async def own_services(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Services]:
    """Services on a fresh, migrated database of this test's own, with regions and policy."""
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'erasure.sqlite3'}"
    else:
        pg_name, url = await _fresh_pg_database()
    await asyncio.to_thread(upgrade, url)
    config = load_config(None, env={"IMSERVER_DATABASE__URL": url})
    ctx = Context(Database(url), config)
    services = Services.build(ctx)
    await load_regions(ctx, load_regions_csv())
    await seed_policy(ctx)
    yield services
    await services.close()
    await ctx.db.dispose()
    if pg_name:
        await _drop_pg_database(pg_name)


async def test_erase_leaves_the_jid_in_no_text_column(own_services: Services) -> None:
    svc = own_services
    merchant = "erasure-shop@localhost"
    await svc.membership.add_merchant(
        ADMIN, merchant, "Erasure Shop", None, Location(region="440305")
    )
    jid = "erasure-victim@localhost"
    await svc.membership.register(jid, merchant)
    now = datetime.now(UTC)
    value = {
        "jid": lambda: jid,
        "json": lambda: f'{{"who": "{jid}", "n": 1}}',
        "text": lambda: f"asked by {jid} on the phone",
    }

    async def write(conn: Any) -> int:
        member = await members.get_by_jid(conn, jid)
        assert member is not None
        tables = {c.table for rule in value for c in erasure_columns(rule)}
        for table in tables:
            row: dict[str, Any] = {}
            for column in table.columns:
                rule = column.info.get(ERASURE)
                if rule in value:
                    row[column.name] = value[rule]()
                elif column.primary_key and not column.foreign_keys:
                    if not isinstance(column.type, String):
                        continue  # an id the database gives
                    row[column.name] = f"erasure-{table.name}"  # a name as the key
                elif not column.nullable and column.default is None:
                    row[column.name] = _filler(column, member.id, now)
            if table.name == "policies":
                top = await conn.execute(select(func.max(table.c.version)))
                row["version"] = (top.scalar() or 0) + 1000
            await conn.execute(insert(table).values(row))
        return member.id

    member_id = await svc.ctx.db.transaction(write)

    async def erase_it(conn: Any) -> str:
        member = await members.get_by_id(conn, member_id)
        assert member is not None
        return await erase(conn, member, "hash", now)

    alias = await svc.ctx.db.transaction(erase_it)
    assert alias == f"erased-{member_id}@erased.invalid"

    async def hits(conn: Any) -> list[str]:
        found = []
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if isinstance(column.type, String):
                    n = await conn.execute(
                        select(func.count()).select_from(table).where(column.like(f"%{jid}%"))
                    )
                    if n.scalar_one():
                        found.append(f"{table.name}.{column.name}")
        return found

    assert await svc.ctx.db.transaction(hits) == []
    member = await svc.ctx.db.transaction(lambda conn: members.get_by_id(conn, member_id))
    assert member is not None and member.jid == alias and member.name is None
    assert Member.__table__.c.jid.info[ERASURE] == "identity"
