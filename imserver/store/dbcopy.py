"""``imserver db copy``: a whole database into an empty one, SQLite or PostgreSQL each side.

The move from SQLite to PostgreSQL (docs/deploy.md), and back. In order:

1. Both URLs are checked (the forms the config accepts); the source must exist and be at
   this code's schema (``imserver migrate`` it first); the target must hold no row in
   any of our tables (``SEEDED`` aside), or nothing is done at all.
2. The target is migrated to the head schema (``store/migrate``).
3. One read snapshot of the source (``Database.snapshot``) and one write transaction on
   the target: every table of ``models.py`` in foreign-key order, read in pages by
   primary key (keyset: memory is bounded by one page, whatever the size), written in
   batches with their primary keys (PostgreSQL: binary COPY). A column that refers to
   its own table (a member's referrer) is written empty where it points to a row not
   copied yet, and filled in after the table. ``SEEDED`` tables are replaced last,
   since the migrations' triggers write them while the others are copied. PostgreSQL
   sequences are set past the highest id, so new rows do not collide.
4. Before the commit: the row count of every table on both sides, and the ledger check
   of ``imserver ledger check`` (``store/ledger.check``) on the copy. Any difference
   rolls the whole copy back: the target keeps its schema and no row.

The source may be in use: the copy is the state of one committed instant (the
snapshot's); what the service writes after it began is not in the copy, so a move stops
the component first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import (
    Column,
    MetaData,
    Table,
    bindparam,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import URL, RowMapping, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from imserver.config import DatabaseConfig
from imserver.store import ledger
from imserver.store.db import Conn, Database
from imserver.store.ledger import LedgerReport
from imserver.store.migrate import MigrationError, current_revisions, heads, upgrade
from imserver.store.models import Base

# Rows per page read and per batch written: a few MB of Python objects at most.
CHUNK = 5000
# Tables whose rows the migrations write themselves and triggers keep current (0003:
# the chain epoch): not data of a user, so an empty target may hold them; the source's
# rows replace them at the end.
SEEDED = frozenset({"chain_epoch"})


class CopyError(Exception):
    """The copy was refused or failed its checks; the message says why. The target has
    no row of ours after it (when it was refused as non-empty: is as it was)."""


class Progress(Protocol):
    """Told how the copy goes (the CLI draws a bar with it)."""

    def table(self, name: str, rows: int) -> None:
        """The copy of table ``name`` (``rows`` rows in the source) begins."""

    def advance(self, rows: int) -> None:
        """``rows`` more rows of the current table were written."""


class _Quiet:
    def table(self, name: str, rows: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass


@dataclass(frozen=True)
class TableCount:
    """Rows of one table in the source snapshot and in the copy."""

    name: str
    source: int
    target: int


@dataclass(frozen=True)
class CopyReport:
    """What was copied and checked (the copy is committed only when ``ok``)."""

    source: str
    target: str
    tables: list[TableCount]
    ledger: LedgerReport
    seconds: float

    @property
    def rows(self) -> int:
        return sum(t.target for t in self.tables)

    @property
    def problems(self) -> list[str]:
        """Every difference found: counts that differ, then the ledger's problems."""
        counts = [
            f"{t.name}: {t.source} rows in the source, {t.target} in the copy"
            for t in self.tables
            if t.source != t.target
        ]
        return counts + [f"ledger: {p}" for p in self.ledger.problems]

    @property
    def ok(self) -> bool:
        return not self.problems


class _Rollback(Exception):
    """Raised inside the target transaction to undo a copy that failed its checks."""

    def __init__(self, report: CopyReport) -> None:
        super().__init__("the copy failed its checks")
        self.report = report


def _checked_url(raw: str, role: str) -> URL:
    """A URL of a kind the config accepts, or CopyError saying what is expected."""
    try:
        DatabaseConfig(url=raw)
        return make_url(raw)
    except (ValidationError, ArgumentError):
        raise CopyError(
            f"{role} {raw!r} is not a database URL: use sqlite+aiosqlite:///PATH or "
            "postgresql+asyncpg://USER@HOST/DB"
        ) from None


def _checked_urls(source: str, target: str) -> tuple[URL, URL]:
    """Both URLs, checked; a SQLite source must be an existing file (opening it would
    create it)."""
    src, dst = _checked_url(source, "FROM_URL"), _checked_url(target, "TO_URL")
    if src == dst:
        raise CopyError("FROM_URL and TO_URL are the same database")
    file = src.database or ""
    if src.get_backend_name() == "sqlite" and (file == ":memory:" or not Path(file).is_file()):
        raise CopyError(f"no SQLite database at {file or '(no path)'}")
    return src, dst


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _reason(exc: BaseException) -> str:
    """The first line of a driver's error (the rest is SQL and a link to docs)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _tables() -> list[Table]:
    """Our tables in foreign-key order (a table after every table it refers to)."""
    return list(Base.metadata.sorted_tables)


async def _row_counts(conn: Conn, tables: Sequence[Table]) -> dict[str, int]:
    return {
        t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
        for t in tables
    }


def _not_empty(counts: dict[str, int], target: str) -> CopyError | None:
    filled = {name: n for name, n in counts.items() if n and name not in SEEDED}
    if not filled:
        return None
    listed = ", ".join(f"{name} ({n} rows)" for name, n in sorted(filled.items()))
    return CopyError(f"the target {target} is not empty: {listed}; copy into a new, empty database")


async def _refuse_filled_target(db: Database, target: str) -> None:
    """Refuse a target holding rows of ours, before anything (migrations too) is done."""
    present = MetaData()
    async with db.engine.connect() as conn:
        await conn.run_sync(present.reflect)
        ours = [t for t in _tables() if t.name in present.tables]
        error = _not_empty(await _row_counts(conn, ours), target)
        await conn.rollback()
    if error:
        raise error


def portable(value: Any) -> Any:
    """The value as both backends store it alike: SQLite gives timestamps back without
    their zone (the service writes UTC), PostgreSQL with it; this gives them in UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _self_references(table: Table) -> list[tuple[Column[Any], Column[Any]]]:
    """(column, the key it refers to) for each column that refers to its own table."""
    return [
        (fk.parent, fk.column)
        for fk in table.foreign_keys
        if fk.column.table is table and fk.parent is not fk.column
    ]


async def _pages(
    src: Conn, table: Table, columns: Sequence[Any], where: Any = None, chunk: int = CHUNK
) -> AsyncIterator[Sequence[RowMapping]]:
    """The rows of ``columns`` in primary-key order, one page at a time (keyset paging:
    each page is an index range scan that starts where the last one ended)."""
    key = list(table.primary_key.columns)
    keyed = tuple_(*key) if len(key) > 1 else key[0]
    last: Any = None
    while True:
        query = select(*columns).order_by(*key).limit(chunk)
        if where is not None:
            query = query.where(where)
        if last is not None:
            query = query.where(keyed > (tuple_(*last) if len(key) > 1 else last[0]))
        rows = (await src.execute(query)).mappings().all()
        if not rows:
            return
        yield rows
        last = [rows[-1][c.name] for c in key]
        if len(rows) < chunk:
            return


async def _write(dst: Conn, table: Table, batch: list[dict[str, Any]]) -> None:
    """Insert a batch: PostgreSQL through COPY (binary, several times faster than INSERT
    on a busy machine: bench/bench_dbcopy.py), SQLite through an ``executemany``."""
    if dst.dialect.name != "postgresql":
        await dst.execute(table.insert(), batch)
        return
    raw = (await dst.get_raw_connection()).driver_connection
    # The COPY must join the transaction that the SQLAlchemy statements before it began.
    assert raw is not None and raw.is_in_transaction(), "COPY outside the copy's transaction"
    names = [c.name for c in table.columns]
    await raw.copy_records_to_table(
        table.name, records=[tuple(row[n] for n in names) for row in batch], columns=names
    )


async def _copy_table(src: Conn, dst: Conn, table: Table, progress: Progress, chunk: int) -> None:
    refs = _self_references(table)
    async for rows in _pages(src, table, list(table.columns), chunk=chunk):
        batch = [{k: portable(v) for k, v in row.items()} for row in rows]
        for col, key in refs:
            # Not written yet (pages go by key): filled in once the table is complete.
            for row in batch:
                if row[col.name] is not None and row[col.name] > row[key.name]:
                    row[col.name] = None
        await _write(dst, table, batch)
        progress.advance(len(batch))
    for col, key in refs:
        forward = col > key
        async for rows in _pages(src, table, [key, col], where=forward, chunk=chunk):
            await dst.execute(
                update(table).where(key == bindparam("k")).values({col.name: bindparam("v")}),
                [{"k": r[key.name], "v": r[col.name]} for r in rows],
            )


async def _replace_seeded(src: Conn, dst: Conn, table: Table, progress: Progress) -> None:
    await dst.execute(delete(table))
    rows = [dict(r) for r in (await src.execute(select(table))).mappings()]
    if rows:
        await dst.execute(table.insert(), rows)
    progress.advance(len(rows))


async def _reset_sequences(dst: Conn, tables: Sequence[Table]) -> None:
    """PostgreSQL: the next id of each table is its highest id plus one (SQLite takes the
    highest rowid plus one by itself)."""
    if dst.dialect.name != "postgresql":
        return
    for table in tables:
        col = table.autoincrement_column
        if col is None:
            continue
        await dst.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence(:t, :c), coalesce(max({col.name}), 0) + 1,"
                f" false) FROM {table.name}"
            ),
            {"t": table.name, "c": col.name},
        )


async def _copy_all(
    source: Database, target: Database, names: tuple[str, str], progress: Progress, chunk: int
) -> CopyReport:
    started = time.monotonic()
    tables = _tables()
    async with source.snapshot() as src, target.engine.begin() as dst:
        # Again inside the transaction: a writer may have come since the first look.
        if error := _not_empty(await _row_counts(dst, tables), names[1]):
            raise error
        counts = await _row_counts(src, tables)
        for table in tables:
            if table.name not in SEEDED:
                progress.table(table.name, counts[table.name])
                await _copy_table(src, dst, table, progress, chunk)
        for table in tables:
            if table.name in SEEDED:
                progress.table(table.name, counts[table.name])
                await _replace_seeded(src, dst, table, progress)
        await _reset_sequences(dst, tables)
        copied = await _row_counts(dst, tables)
        report = CopyReport(
            names[0],
            names[1],
            [TableCount(t.name, counts[t.name], copied[t.name]) for t in tables],
            await ledger.check(dst),
            time.monotonic() - started,
        )
        if not report.ok:
            raise _Rollback(report)
    return report


async def copy_database(
    source_url: str, target_url: str, progress: Progress | None = None, *, chunk: int = CHUNK
) -> CopyReport:
    """Copy every row of the source database into the empty target (see the module's
    docstring). Returns the checked report of a committed copy; raises CopyError when
    refused, when a database cannot be reached, or when the checks failed (then the
    copy is rolled back and the error lists the differences)."""
    src_url, dst_url = _checked_urls(source_url, target_url)
    names = (_shown(src_url), _shown(dst_url))
    try:
        found = await current_revisions(source_url)
    except (OSError, DBAPIError) as exc:
        raise CopyError(f"cannot read the source {names[0]}: {_reason(exc)}") from None
    if tuple(sorted(found)) != heads():
        raise CopyError(
            f"the source is at schema revision {','.join(found) or '(none)'}, this code "
            f"at {','.join(heads())}: run `imserver migrate` on it first (or copy with the "
            "version of imserver that wrote it)"
        )
    unprepared = f"cannot prepare the target {names[1]}"
    try:
        target = Database(target_url)  # makes a SQLite file's folder
    except OSError as exc:
        raise CopyError(f"{unprepared}: {_reason(exc)}") from None
    source = Database(source_url, read_only=True)
    try:
        try:
            await _refuse_filled_target(target, names[1])
            await asyncio.to_thread(upgrade, target_url)
        except (OSError, DBAPIError, MigrationError) as exc:
            raise CopyError(f"{unprepared}: {_reason(exc)}") from None
        try:
            return await _copy_all(source, target, names, progress or _Quiet(), chunk)
        except _Rollback as failed:
            raise CopyError(
                "the copy differs from the source and was rolled back:\n  "
                + "\n  ".join(failed.report.problems)
            ) from None
        except (OSError, DBAPIError) as exc:
            raise CopyError(f"the copy failed and was rolled back: {_reason(exc)}") from None
    finally:
        await source.dispose()
        await target.dispose()
