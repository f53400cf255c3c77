#!/usr/bin/env python3
"""Bulk load of the realistic population's users, straight into the tables.

The service layer registers about 200 users a second, so the million-member population
of the performance goals would take hours to seed through it. This module writes the
same users in large batches (SQLite: one ``sqlite3`` connection, ``executemany``;
PostgreSQL: asyncpg ``COPY``), computing every row exactly as ``Membership.register`` would have:

- ``members``: the next id, ``jid``, the rule number ``<region>-U%08d`` from the
  region's counter (``domain.rulenumbers.make_rule_number``), role ``user``, the
  referrer's live region (``store.regions.live``: retired codes follow their successor),
  ``referrer_id`` = ``original_referrer_id`` = the referrer, status ``active``,
  ``created_at`` in UTC;
- ``uplines``: ``domain.chains.upline_below(referrer, referrer's stored upline)``,
  levels 1..3 nearest first;
- ``agency_links``: ``domain.chains.agency_chain`` of the region's line (district, city,
  province: scope levels 3, 2, 1) with each region's agent, or NULL where vacant;
- ``rule_counters``: ``last_seq`` of each (region, ``U``) raised to the last number issued.

Nothing else is written by a registration (no audit entry, no account, no outbox row,
and inserts into these tables do not bump ``chain_epoch``: migration 0003), so the
product cannot tell a bulk-loaded member from a registered one. The merchants, agents,
bots and the policy are still made through the service layer (``bench_e2e.seed``); only
the users come from here.

Referrers are drawn as ``bench_e2e.seed`` draws them: in waves of ``wave`` users, each
under a member drawn uniformly from the merchants and the users already in before the
wave, from the same seeded ``random.Random``. The same seed therefore gives the same
trees whichever way the users were written (``--compare`` below checks it row by row).

SQLite: ``synchronous=OFF`` and ``journal_mode=DELETE`` on the loading connection only,
for the load only (the product opens its own connections with WAL and
``synchronous=FULL``; WAL is set back on the file before it is closed); foreign keys are
not enforced on that connection (SQLite's default), and are checked afterwards by
``cheap_checks``. PostgreSQL: one transaction with ``synchronous_commit=off`` and, when
allowed (a superuser), ``session_replication_role=replica`` so that the foreign-key
triggers do not run per row, checked afterwards likewise; the members id sequence is set
past the ids written. Then ``ANALYZE`` (SQLite) or ``VACUUM ANALYZE`` (PostgreSQL) of
the loaded tables only (``LOADED``: see there why not the whole database).

Alone, this validates the loader on a throw-away database:

    python bench/bulkload.py [--db sqlite|postgresql] [--members 100000] [--validate]
        [--compare 3000] [--keep] [--no-save]

``--validate`` runs the product's chain model check (``tests.support.model.
chain_problems``, every member: slow at a million, so use it at 100,000 or so);
``--compare N`` seeds N members twice, once through the service layer and once in bulk,
and compares the two databases table by table (ids and timestamps aside). The JSON goes
to stdout and to ``bench/results/bulkload-<db>-<members>-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from array import array
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path[:0] = [str(ROOT), str(BENCH)]

import asyncpg  # noqa: E402

from imserver.domain import chains  # noqa: E402
from imserver.domain.policy import MAX_LEVELS  # noqa: E402
from imserver.domain.rulenumbers import make_rule_number, parse_rule_number, role_letter  # noqa: E402
from imserver.progress import Progress  # noqa: E402
from imserver.store.regions import MAX_SUCCESSOR_HOPS  # noqa: E402

USER = "user"
LETTER = role_letter(USER)
MEMBER_COLUMNS = (
    "id", "jid", "rule_number", "role", "region_code", "referrer_id",
    "original_referrer_id", "status", "created_at",
)  # fmt: skip
UPLINE_COLUMNS = ("member_id", "level", "ancestor_id")
AGENCY_COLUMNS = ("member_id", "scope_level", "region_code", "agent_id")
# SQLAlchemy's SQLite DATETIME storage format (always six fractional digits; UTC, naive).
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
CHUNK = 50_000
# The tables the load wrote, and the only ones it analyzes: statistics gathered on the
# empty payment tables would change the plans the product gets on them (measured on
# PostgreSQL: VACUUM ANALYZE of the whole database cut payments from ~500/s to ~280/s
# at 10,000 members), which a registered population never had.
LOADED = ("members", "uplines", "agency_links", "rule_counters")
# BENCH_BULK_ANALYZE=all analyzes the whole database instead, to reproduce that effect.
ANALYZE_ALL = os.environ.get("BENCH_BULK_ANALYZE") == "all"


def user_jid(k: int, domain: str) -> str:
    """The JID of the k-th user (the name ``bench_e2e.seed`` gives it)."""
    return f"u{k}@{domain}"


# -- what is in the database before the load ----------------------------------------


@dataclass
class Snapshot:
    """The rows a registration reads: regions, members, their uplines, agents, counters."""

    regions: dict[str, tuple[int, str | None, str | None]]  # code -> level, parent, successor
    members: dict[str, tuple[int, str]]  # jid -> id, region code
    uplines: dict[int, list[int]]  # member id -> stored upline, nearest first
    agents: dict[str, int]  # region code -> agent's member id
    counters: dict[tuple[str, str], int]  # (region, letter) -> last_seq
    max_id: int

    @classmethod
    def from_rows(
        cls,
        regions: Sequence[Sequence[Any]],
        members: Sequence[Sequence[Any]],
        uplines: Sequence[Sequence[Any]],
        agents: Sequence[Sequence[Any]],
        counters: Sequence[Sequence[Any]],
    ) -> Snapshot:
        """From the rows of the queries in ``SNAPSHOT_SQL`` (same order)."""
        ups: dict[int, list[int]] = defaultdict(list)
        for member_id, _level, ancestor in uplines:  # ordered by member, level
            ups[int(member_id)].append(int(ancestor))
        return cls(
            regions={str(c): (int(lv), p, s) for c, lv, p, s in regions},
            members={str(j): (int(i), str(r)) for i, j, r in members},
            uplines=dict(ups),
            agents={str(r): int(m) for r, m in agents},
            counters={(str(r), str(lt)): int(n) for r, lt, n in counters},
            max_id=max((int(i) for i, _j, _r in members), default=0),
        )

    def live(self, code: str) -> str:
        """``store.regions.live``: the region, or its successor when retired."""
        if code not in self.regions:
            raise LookupError(f"unknown region {code}")
        hops = 0
        while (succ := self.regions[code][2]) and hops < MAX_SUCCESSOR_HOPS:
            if succ not in self.regions:
                raise LookupError(f"unknown region {succ}")
            code, hops = succ, hops + 1
        return code

    def agency(self, code: str) -> list[tuple[int, str, int | None]]:
        """``Membership._store_agency``: (scope level, region, agent id or None) rows."""
        line: list[tuple[str, int]] = [(code, self.regions[code][0])]
        parent = self.regions[code][1]
        while parent is not None and len(line) < 6 and parent in self.regions:
            line.append((parent, self.regions[parent][0]))
            parent = self.regions[parent][1]
        links = chains.agency_chain(line, {c: self.agents[c] for c, _ in line if c in self.agents})
        return [(chains.SCOPE_LEVELS[link.scope], link.region, link.agent_id) for link in links]


SNAPSHOT_SQL = (
    "SELECT code, level, parent_code, successor_code FROM regions",
    "SELECT id, jid, region_code FROM members",
    "SELECT member_id, level, ancestor_id FROM uplines ORDER BY member_id, level",
    "SELECT region_code, member_id FROM agents",
    "SELECT region_code, letter, last_seq FROM rule_counters",
)


# -- the rows to write ---------------------------------------------------------------


@dataclass
class Chunk:
    """Rows of a run of consecutive users, in table order (members before their links)."""

    members: list[tuple[Any, ...]] = field(default_factory=list)
    uplines: list[tuple[int, int, int]] = field(default_factory=list)
    agency: list[tuple[int, int, str, int | None]] = field(default_factory=list)


class Plan:
    """``total`` users under ``pool`` (members already in, by JID) and each other.

    Users are kept in flat arrays (their upline and region), not objects: at a million
    users the loader stays near 100 MB.
    """

    def __init__(
        self,
        snap: Snapshot,
        pool: Sequence[str],
        total: int,
        *,
        rng: random.Random,
        wave: int,
        domain: str,
        now: datetime,
        step: timedelta = timedelta(microseconds=1),
    ) -> None:
        self.snap = snap
        self.pool = [snap.members[j] for j in pool]  # (id, region) of each first referrer
        self.total = total
        self.rng = rng
        self.wave = max(wave, 1)
        self.domain = domain
        self.base_id = snap.max_id + 1
        # created_at: one registration every ``step`` from ``now`` (the load's start), so
        # that they follow the network's members and each other in id order; a million
        # users end a second later, long before the load does.
        self.start = now
        self.step = step
        self.counters = dict(snap.counters)
        self.ups = [array("q", bytes(8 * total)) for _ in range(MAX_LEVELS)]
        self.region_ix = array("q", bytes(8 * total))
        self.regions: list[str] = []  # live region codes the users landed in
        self._region_index: dict[str, int] = {}
        self._agency: list[list[tuple[int, str, int | None]]] = []
        self._live: dict[str, int] = {}

    def _region(self, code: str) -> int:
        """Index of the live region of a referrer's region code (computed once per code)."""
        ix = self._live.get(code)
        if ix is None:
            live = self.snap.live(code)
            if live not in self._region_index:
                self._region_index[live] = len(self.regions)
                self.regions.append(live)
                self._agency.append(self.snap.agency(live))
            ix = self._live[code] = self._region_index[live]
        return ix

    def referrer(self, r: int) -> tuple[int, int, list[int]]:
        """Pool index ``r`` -> (member id, region index, stored upline)."""
        n_pool = len(self.pool)
        if r < n_pool:
            member_id, code = self.pool[r]
            return member_id, self._region(code), self.snap.uplines.get(member_id, [])
        j = r - n_pool
        return (
            self.base_id + j,
            self.region_ix[j],
            [u[j] for u in self.ups if u[j]],
        )

    def chunks(self, size: int = CHUNK, *, sqlite: bool = True) -> Iterator[Chunk]:
        """The rows, ``size`` users at a time; timestamps as SQLite text or datetimes."""
        n_pool = len(self.pool)
        chunk = Chunk()
        pool_size = n_pool
        for k in range(self.total):
            if k % self.wave == 0:
                # A wave draws among everyone in before it (bench_e2e.seed's gather).
                pool_size = n_pool + k
            ref_id, rix, above = self.referrer(self.rng.randrange(pool_size))
            member_id = self.base_id + k
            code = self.regions[rix]
            seq = self.counters.get((code, LETTER), 0) + 1
            self.counters[(code, LETTER)] = seq
            at = self.start + self.step * k
            chunk.members.append((
                member_id, user_jid(k, self.domain), make_rule_number(code, USER, seq), USER,
                code, ref_id, ref_id, "active", at.replace(tzinfo=None).strftime(SQLITE_TIME)
                if sqlite else at,
            ))  # fmt: skip
            upline = chains.upline_below(ref_id, above)
            for level, ancestor in enumerate(upline, 1):
                self.ups[level - 1][k] = ancestor
                chunk.uplines.append((member_id, level, ancestor))
            self.region_ix[k] = rix
            chunk.agency.extend((member_id, lvl, c, a) for lvl, c, a in self._agency[rix])
            if len(chunk.members) >= size:
                yield chunk
                chunk = Chunk()
        if chunk.members:
            yield chunk

    def counter_rows(self) -> list[tuple[str, str, int]]:
        """The rule counters the load moved: (region, letter, last_seq)."""
        return [
            (r, lt, n) for (r, lt), n in sorted(self.counters.items())
            if self.snap.counters.get((r, lt)) != n
        ]  # fmt: skip

    def jids(self) -> list[str]:
        """Every user's JID, in order."""
        return [user_jid(k, self.domain) for k in range(self.total)]


# -- writers -------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What the load did and how long each phase took."""

    backend: str
    users: int
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For the benchmark's JSON."""
        return {
            "backend": self.backend,
            "users": self.users,
            "rows": self.rows,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "users_per_second": round(self.users / max(self.seconds.get("write", 0), 1e-9)),
            "notes": self.notes,
        }


def _sql_insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def load_sqlite(
    path: Path, pool: Sequence[str], total: int, *, rng: random.Random, wave: int, domain: str
) -> tuple[Plan, LoadReport]:
    """Write the users into a SQLite file nobody else has open; the plan and a report."""
    report = LoadReport("sqlite", total)
    t0 = time.monotonic()
    # isolation_level=None: we say BEGIN and COMMIT ourselves (one transaction).
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # DELETE rather than WAL for the load: pages appended to the file need no
        # journal, where WAL would write every one of them twice. Needs no other
        # connection open (the service layer's engine is disposed by then).
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=OFF")  # this connection only; never the product
        # A large page cache: the unique jid and rule_number indexes take their keys out
        # of order, and a cache miss per row is what makes big inserts crawl.
        conn.execute("PRAGMA cache_size=-1048576")
        conn.execute("BEGIN IMMEDIATE")
        snap = Snapshot.from_rows(*(conn.execute(q).fetchall() for q in SNAPSHOT_SQL))
        plan = Plan(snap, pool, total, rng=rng, wave=wave, domain=domain, now=datetime.now(UTC))
        report.seconds["read"] = time.monotonic() - t0
        t1 = time.monotonic()
        counts = {"members": 0, "uplines": 0, "agency_links": 0}
        ins_m = _sql_insert("members", MEMBER_COLUMNS)
        ins_u = _sql_insert("uplines", UPLINE_COLUMNS)
        ins_a = _sql_insert("agency_links", AGENCY_COLUMNS)
        bar = Progress("members", total, quiet=True)  # drawn on a terminal only
        for chunk in plan.chunks(sqlite=True):
            conn.executemany(ins_m, chunk.members)
            conn.executemany(ins_u, chunk.uplines)
            conn.executemany(ins_a, chunk.agency)
            counts["members"] += len(chunk.members)
            counts["uplines"] += len(chunk.uplines)
            counts["agency_links"] += len(chunk.agency)
            bar.advance(len(chunk.members))
        bar.done()
        # The same upsert as store.members.next_rule_seq, with the final figure.
        conn.executemany(
            "INSERT INTO rule_counters (region_code, letter, last_seq) VALUES (?, ?, ?) "
            "ON CONFLICT (region_code, letter) DO UPDATE SET last_seq = excluded.last_seq",
            plan.counter_rows(),
        )
        counts["rule_counters"] = len(plan.counter_rows())
        conn.execute("COMMIT")
        report.seconds["write"] = time.monotonic() - t1
        report.rows = counts
        t2 = time.monotonic()
        for table in ("",) if ANALYZE_ALL else LOADED:
            conn.execute(f"ANALYZE {table}")
        report.seconds["analyze"] = time.monotonic() - t2
        conn.execute(f"PRAGMA journal_mode={mode}")
    finally:
        conn.close()
    report.notes.append("sqlite3 executemany in one transaction, synchronous=OFF, then ANALYZE")
    return plan, report


def pg_dsn(url: str) -> str:
    """An asyncpg DSN from a SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def load_postgres(
    url: str, pool: Sequence[str], total: int, *, rng: random.Random, wave: int, domain: str
) -> tuple[Plan, LoadReport]:
    """Write the users into a PostgreSQL database with COPY; the plan and a report."""
    report = LoadReport("postgresql", total)
    t0 = time.monotonic()
    conn = await asyncpg.connect(pg_dsn(url))
    try:
        async with conn.transaction():
            # Only this transaction's commit is asynchronous: nothing is answered from it,
            # and the product's own connections keep synchronous_commit=on.
            await conn.execute("SET LOCAL synchronous_commit TO off")
            try:
                # Foreign keys are row triggers: one key lookup per row and column,
                # millions of them. Skipped for the load (checked afterwards instead).
                async with conn.transaction():
                    await conn.execute("SET LOCAL session_replication_role = replica")
                report.notes.append("COPY with session_replication_role=replica")
            except asyncpg.InsufficientPrivilegeError:
                report.notes.append("COPY with foreign-key triggers (not a superuser)")
            snap = Snapshot.from_rows(
                *[[tuple(r) for r in await conn.fetch(q)] for q in SNAPSHOT_SQL]
            )
            plan = Plan(snap, pool, total, rng=rng, wave=wave, domain=domain, now=datetime.now(UTC))
            report.seconds["read"] = time.monotonic() - t0
            t1 = time.monotonic()
            counts = {"members": 0, "uplines": 0, "agency_links": 0}
            bar = Progress("members", total, quiet=True)  # drawn on a terminal only
            for chunk in plan.chunks(sqlite=False):
                await conn.copy_records_to_table(
                    "members", records=chunk.members, columns=MEMBER_COLUMNS
                )
                await conn.copy_records_to_table(
                    "uplines", records=chunk.uplines, columns=UPLINE_COLUMNS
                )
                await conn.copy_records_to_table(
                    "agency_links", records=chunk.agency, columns=AGENCY_COLUMNS
                )
                counts["members"] += len(chunk.members)
                counts["uplines"] += len(chunk.uplines)
                counts["agency_links"] += len(chunk.agency)
                bar.advance(len(chunk.members))
            bar.done()
            await conn.executemany(
                "INSERT INTO rule_counters (region_code, letter, last_seq) VALUES ($1, $2, $3) "
                "ON CONFLICT (region_code, letter) DO UPDATE SET last_seq = excluded.last_seq",
                plan.counter_rows(),
            )
            counts["rule_counters"] = len(plan.counter_rows())
            # Ids were written explicitly: the next registration must not reuse one.
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('members', 'id'), "
                "(SELECT max(id) FROM members))"
            )
        report.seconds["write"] = time.monotonic() - t1
        report.rows = counts
        t2 = time.monotonic()
        await conn.execute("VACUUM ANALYZE " + ("" if ANALYZE_ALL else ", ".join(LOADED)))
        report.seconds["analyze"] = time.monotonic() - t2
    finally:
        await conn.close()
    return plan, report


async def load_users(
    url: str, pool: Sequence[str], total: int, *, rng: random.Random, wave: int, domain: str
) -> tuple[list[str], LoadReport]:
    """Bulk-load ``total`` users under ``pool`` (JIDs of members already in) and each
    other; their JIDs, in order, and a report. Nothing may hold the database open
    (SQLite) or write to it meanwhile."""
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        plan, report = await asyncio.to_thread(
            load_sqlite, path, pool, total, rng=rng, wave=wave, domain=domain
        )
    else:
        plan, report = await load_postgres(url, pool, total, rng=rng, wave=wave, domain=domain)
    return plan.jids(), report


# -- checks --------------------------------------------------------------------------

# Rows that point nowhere: each query counts them (the loaders do not enforce keys).
ORPHANS = {
    "members.referrer_id": "SELECT count(*) FROM members c LEFT JOIN members p "
    "ON p.id = c.referrer_id WHERE c.referrer_id IS NOT NULL AND p.id IS NULL",
    "members.original_referrer_id": "SELECT count(*) FROM members c LEFT JOIN members p "
    "ON p.id = c.original_referrer_id WHERE c.original_referrer_id IS NOT NULL AND p.id IS NULL",
    "members.region_code": "SELECT count(*) FROM members c LEFT JOIN regions r "
    "ON r.code = c.region_code WHERE r.code IS NULL",
    "uplines.member_id": "SELECT count(*) FROM uplines u LEFT JOIN members m "
    "ON m.id = u.member_id WHERE m.id IS NULL",
    "uplines.ancestor_id": "SELECT count(*) FROM uplines u LEFT JOIN members m "
    "ON m.id = u.ancestor_id WHERE m.id IS NULL",
    "agency_links.member_id": "SELECT count(*) FROM agency_links a LEFT JOIN members m "
    "ON m.id = a.member_id WHERE m.id IS NULL",
    "agency_links.agent_id": "SELECT count(*) FROM agency_links a LEFT JOIN members m "
    "ON m.id = a.agent_id WHERE a.agent_id IS NOT NULL AND m.id IS NULL",
    "agency_links.region_code": "SELECT count(*) FROM agency_links a LEFT JOIN regions r "
    "ON r.code = a.region_code WHERE r.code IS NULL",
}
RULE_MAX = "SELECT region_code, role, max(rule_number), count(*) FROM members GROUP BY 1, 2"
COUNTERS = "SELECT region_code, letter, last_seq FROM rule_counters"


async def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]

        def run() -> list[tuple[Any, ...]]:
            with contextlib.closing(sqlite3.connect(path)) as conn:
                return list(conn.execute(sql).fetchall())

        return await asyncio.to_thread(run)
    conn = await asyncpg.connect(pg_dsn(url))
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def cheap_checks(url: str) -> dict[str, Any]:
    """Checks fast enough for a million members: no dangling keys, every rule counter at
    the highest number issued in its region and letter (none issued twice: the column is
    unique), and on PostgreSQL the id sequence past every id."""
    t0 = time.monotonic()
    problems: list[str] = []
    for name, sql in ORPHANS.items():
        n = (await _query(url, sql))[0][0]
        if n:
            problems.append(f"{n} rows of {name} point nowhere")
    counters = {(r, lt): int(n) for r, lt, n in await _query(url, COUNTERS)}
    for region, role, top, count in await _query(url, RULE_MAX):
        rule = parse_rule_number(top)
        key = (region, role_letter(role))
        if rule.region != region or rule.letter != key[1]:
            problems.append(f"rule number {top} in region {region} role {role}")
        if counters.get(key, 0) != rule.seq:
            problems.append(f"{key}: counter {counters.get(key)} but highest issued {rule.seq}")
        if count > rule.seq:
            problems.append(f"{key}: {count} members but numbers only up to {rule.seq}")
    if not url.startswith("sqlite"):
        seq, top = (
            await _query(
                url,
                "SELECT (SELECT last_value FROM members_id_seq), (SELECT max(id) FROM members)",
            )
        )[0]
        if top is not None and seq < top:
            problems.append(f"members id sequence at {seq} below max id {top}")
    return {"ok": not problems, "problems": problems[:20],
            "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip


async def model_checks(url: str) -> dict[str, Any]:
    """The product's own chain invariants (tests/support/model.py) over every member."""
    from sqlalchemy import select

    from imserver.store.db import Database
    from imserver.store.models import Region
    from tests.support.model import chain_problems

    t0 = time.monotonic()
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            rows = await conn.execute(select(Region.code, Region.parent_code, Region.level))
            regions = {str(c): (p, int(level)) for c, p, level in rows}
        problems = await chain_problems(db, regions)
    finally:
        await db.dispose()
    return {"ok": not problems, "problems": problems[:20], "count": len(problems),
            "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip


# -- comparing a bulk-loaded database with a registered one ----------------------------

# Rule numbers apart from the members: on PostgreSQL the service layer's 32 concurrent
# registrations of a wave take their numbers in whatever order they commit, so which
# user got which number within a wave may differ (SQLite runs them in order: same).
CANON = {
    "members": "SELECT m.jid, m.role, m.region_code, r.jid, o.jid, m.status, "
    "m.erased_hash, m.name, m.location, m.ended_at FROM members m "
    "LEFT JOIN members r ON r.id = m.referrer_id LEFT JOIN members o "
    "ON o.id = m.original_referrer_id",
    "uplines": "SELECT m.jid, u.level, a.jid FROM uplines u JOIN members m ON m.id = u.member_id "
    "JOIN members a ON a.id = u.ancestor_id",
    "agency_links": "SELECT m.jid, l.scope_level, l.region_code, a.jid FROM agency_links l "
    "JOIN members m ON m.id = l.member_id LEFT JOIN members a ON a.id = l.agent_id",
    "rule_numbers": "SELECT rule_number FROM members",
    "member_rule_numbers": "SELECT jid, rule_number FROM members",
    "agents": "SELECT g.region_code, m.jid FROM agents g JOIN members m ON m.id = g.member_id",
    "rule_counters": COUNTERS,
    "bots": "SELECT b.jid, m.jid FROM bots b JOIN members m ON m.id = b.merchant_id",
    "chain_epoch": "SELECT id, n FROM chain_epoch",
}


async def compare(url_a: str, url_b: str) -> dict[str, Any]:
    """Each table of two databases keyed by JIDs instead of ids, without timestamps:
    rows only in one of them, per table (a few shown)."""
    out: dict[str, Any] = {}
    for table, sql in CANON.items():
        a = {tuple(map(str, r)) for r in await _query(url_a, sql)}
        b = {tuple(map(str, r)) for r in await _query(url_b, sql)}
        out[table] = {
            "rows": [len(a), len(b)],
            "only_service": sorted(a - b)[:3],
            "only_bulk": sorted(b - a)[:3],
            "same": a == b,
        }
    # The created_at order must follow the ids, as it does for members registered in turn.
    for name, url in (("service", url_a), ("bulk", url_b)):
        rows = await _query(url, "SELECT id, created_at FROM members ORDER BY id")
        out[f"created_at_follows_id_{name}"] = all(
            str(x[1]) <= str(y[1]) for x, y in itertools.pairwise(rows)
        )
    out["ok"] = all(
        v["same"] for k, v in out.items() if isinstance(v, dict) and k != "member_rule_numbers"
    )
    return out


# -- alone: validate the loader --------------------------------------------------------


def bench_config(url: str) -> Any:
    """The config of the benchmarks' component (bench_e2e's names) on database ``url``."""
    import bench_e2e as e2e

    from imserver.config import load_config

    env = {
        "IMSERVER_ADMINS": json.dumps([e2e.ADMIN]),
        "IMSERVER_XMPP__SECRET": e2e.SECRET,
        "IMSERVER_XMPP__DOMAIN": e2e.DOMAIN,
        "IMSERVER_XMPP__COMPONENT": e2e.COMPONENT,
        "IMSERVER_XMPP__MEMBER_DOMAINS": json.dumps([e2e.DOMAIN]),
        "IMSERVER_DATABASE__URL": url,
    }
    return load_config(ROOT / "config.toml", env=env)


def save_result(name: str, text: str) -> Path:
    """Write a benchmark's JSON to ``bench/results/<name>-<UTC time>.json``."""
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results / f"{name}-{stamp}.json"
    path.write_text(text + "\n")
    print(f"written {path.relative_to(ROOT)}", file=sys.stderr)
    return path


async def _seeded(
    kind: str, members: int, bulk: bool, tmp: Path, name: str, admin_dsn: str
) -> tuple[Any, dict[str, Any]]:
    """A fresh database migrated and seeded with the realistic population."""
    import bench_e2e as e2e

    from imserver.store.migrate import upgrade

    sub = tmp / name
    sub.mkdir()
    db = await asyncio.to_thread(e2e.Db.create, kind, sub, admin_dsn)
    if db.pg_name is not None:
        # Two PostgreSQL databases in one run (--compare): Db.create names by pid.
        new = f"{db.pg_name}_{name}"
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'ALTER DATABASE "{db.pg_name}" RENAME TO "{new}"')
        finally:
            await conn.close()
        db.url = db.url.rsplit("/", 1)[0] + "/" + new
        db.pg_name = new
    await asyncio.to_thread(upgrade, db.url)
    t0 = time.monotonic()
    pop = await e2e.seed(bench_config(db.url), "realistic", members, 4, bulk=bulk)
    info = {"total_seconds": round(time.monotonic() - t0, 1), "users": pop.members, **pop.load}
    return db, info


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"db": args.db, "members": args.members}
    tmp = Path(tempfile.mkdtemp(prefix="bulkload-"))
    made: list[Any] = []
    try:
        db, info = await _seeded(args.db, args.members, True, tmp, "bulk", args.pg_admin_dsn)
        made.append(db)
        out["load"] = info
        out["cheap_checks"] = await cheap_checks(db.url)
        if args.validate:
            out["model_checks"] = await model_checks(db.url)
        if args.compare:
            a, info_a = await _seeded(args.db, args.compare, False, tmp, "cmp_service",
                                      args.pg_admin_dsn)  # fmt: skip
            made.append(a)
            b, info_b = await _seeded(args.db, args.compare, True, tmp, "cmp_bulk",
                                      args.pg_admin_dsn)  # fmt: skip
            made.append(b)
            out["compare"] = {"members": args.compare, "service_seed": info_a,
                              "bulk_seed": info_b, **await compare(a.url, b.url)}  # fmt: skip
    finally:
        for db in made:
            await asyncio.to_thread(db.drop, args.pg_admin_dsn)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    """Validate the loader on throw-away databases; prints JSON, exit 1 on a problem."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--members", type=int, default=100_000)
    p.add_argument("--validate", action="store_true", help="tests.support.model chain checks")
    p.add_argument("--compare", type=int, default=0, help="service vs bulk at this size")
    p.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = p.parse_args()
    out = asyncio.run(_main(args))
    text = json.dumps(out, indent=2, default=str)
    if not args.no_save:
        save_result(f"bulkload-{args.db}-{args.members}", text)
    print(text)
    checks = [out.get(k, {}) for k in ("cheap_checks", "model_checks", "compare")]
    return 0 if all(c.get("ok", True) for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
