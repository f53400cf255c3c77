"""The service layer without XMPP, on a SQLite file, for model tests (tests/test_stateful.py).

``Harness`` builds Database/Context/Services over one file and can "crash": dispose the
database and build everything again on the same file, so that nothing held in memory
survives. ``invariant_problems`` reads every table and lists what breaks the rules that
must hold after any sequence of requests (chains, agency links, money).
"""

from __future__ import annotations

import asyncio
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from imserver.config import Config, load_config
from imserver.domain.chains import SCOPES, ChainError, ancestors
from imserver.domain.policy import MAX_LEVELS
from imserver.geo.regions import load_regions_csv
from imserver.service.context import Context
from imserver.service.policies import seed_policy
from imserver.service.regions import load_regions
from imserver.service.registry import Services
from imserver.store import ledger
from imserver.store.db import Database
from imserver.store.migrate import upgrade
from imserver.store.models import (
    Account,
    AgencyLink,
    Agent,
    Member,
    Payment,
    PaymentShare,
    Refund,
    Region,
    Upline,
    Withdrawal,
)
from tests.conftest import DOMAIN, FOREIGN_BLOCKED, FakeClock

ADMIN = f"admin@{DOMAIN}"
EARNER_ROLES = ("referrer", "agent")


def model_config(url: str) -> Config:
    """A config for the service layer alone: one admin, the database at ``url``."""
    env = {
        "IMSERVER_ADMINS": f'["{ADMIN}"]',
        "IMSERVER_XMPP__SECRET": "model-test-secret",
        "IMSERVER_DATABASE__URL": url,
        **FOREIGN_BLOCKED,
    }
    return load_config(Path(__file__).parents[2] / "config.toml", env=env)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def build_template(path: Path) -> dict[str, tuple[str | None, int]]:
    """Migrate a SQLite file, load the regions, seed the policy (copied per example: the
    migration and the region load cost far more than a model step).

    Returns every region's (parent code, level), which the invariants need and which the
    model never changes.
    """
    url = sqlite_url(path)
    await asyncio.to_thread(upgrade, url)
    config = model_config(url)
    db = Database(url)
    try:
        ctx = Context(db, config, FakeClock())
        await load_regions(ctx, load_regions_csv())
        await seed_policy(ctx)
        async with db.engine.connect() as conn:
            rows = await conn.execute(select(Region.code, Region.parent_code, Region.level))
            return {str(c): (p, int(level)) for c, p, level in rows}
    finally:
        # The last connection's close checkpoints the WAL into the main file.
        await db.dispose()


def copy_database(template: Path, target: Path) -> None:
    """Copy a closed SQLite database (and its WAL, should one be left)."""
    shutil.copyfile(template, target)
    for suffix in ("-wal", "-shm"):
        extra = Path(f"{template}{suffix}")
        if extra.exists():
            shutil.copyfile(extra, Path(f"{target}{suffix}"))


@dataclass
class Harness:
    """Services over one SQLite file; ``crash`` rebuilds them from the file alone."""

    path: Path
    clock: FakeClock = field(default_factory=FakeClock)
    db: Database | None = None
    services: Services | None = None
    crashes: int = 0

    def open(self) -> Services:
        config = model_config(sqlite_url(self.path))
        self.db = Database(config.database.url)
        self.services = Services.build(Context(self.db, config, self.clock))
        return self.services

    @property
    def svc(self) -> Services:
        assert self.services is not None
        return self.services

    async def close(self) -> None:
        if self.services is not None:
            await self.services.close()
        if self.db is not None:
            await self.db.dispose()
        self.db = self.services = None

    async def crash(self) -> Services:
        """Throw away every object in memory and start again from the database file."""
        await self.close()
        self.crashes += 1
        return self.open()


async def _rows(db: Database, stmt: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list(await conn.execute(stmt))


def _region_line(code: str, regions: dict[str, tuple[str | None, int]]) -> dict[str, int]:
    """The region and its ancestors that have an agent level: code -> level."""
    out: dict[str, int] = {}
    current: str | None = code
    while current is not None and current in regions:
        parent, level = regions[current]
        if level in SCOPES:
            out[current] = level
        current = parent
    return out


async def chain_problems(db: Database, regions: dict[str, tuple[str | None, int]]) -> list[str]:
    """Chains: no cycle, stored uplines equal the recomputed ones, agency links current."""
    problems: list[str] = []
    members = await _rows(
        db, select(Member.id, Member.referrer_id, Member.status, Member.region_code)
    )
    active = {int(m) for m, _p, status, _r in members if status == "active"}
    parent: dict[int, int | None] = {
        int(m): (int(p) if p is not None else None)
        for m, p, status, _r in members
        if status == "active"
    }
    region_of = {int(m): str(r) for m, _p, _s, r in members}
    for m, p in parent.items():
        if p is not None and p not in active:
            problems.append(f"active member {m} has a live parent {p} that is not active")
    stored: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for member_id, level, ancestor in await _rows(
        db,
        select(Upline.member_id, Upline.level, Upline.ancestor_id).order_by(
            Upline.member_id, Upline.level
        ),
    ):
        stored[int(member_id)].append((int(level), int(ancestor)))
    for m in sorted(set(stored) - active):
        problems.append(f"member {m} is not active but has a stored upline")
    for m in sorted(active):
        try:
            line = ancestors(parent, m)
        except ChainError as exc:
            problems.append(f"member {m}: {exc}")
            continue
        expected = line[:MAX_LEVELS]
        got = [a for _level, a in stored.get(m, [])]
        levels = [lv for lv, _a in stored.get(m, [])]
        if got != expected:
            problems.append(f"member {m}: stored upline {got} != recomputed {expected}")
        if levels != list(range(1, len(levels) + 1)):
            problems.append(f"member {m}: upline levels {levels} are not 1..n")
        if not set(got) <= active:
            problems.append(f"member {m}: upline {got} holds members that are not active")
    agents = {
        str(r): int(m) for r, m in await _rows(db, select(Agent.region_code, Agent.member_id))
    }
    for region, agent in agents.items():
        if agent not in active:
            problems.append(f"region {region}: agent {agent} is not active")
    links: dict[int, dict[str, tuple[int, int | None]]] = defaultdict(dict)
    for m, scope_level, region, agent in await _rows(
        db,
        select(
            AgencyLink.member_id,
            AgencyLink.scope_level,
            AgencyLink.region_code,
            AgencyLink.agent_id,
        ),
    ):
        links[int(m)][str(region)] = (int(scope_level), int(agent) if agent is not None else None)
    for m in sorted(active):
        want = _region_line(region_of[m], regions)
        have = links.get(m, {})
        if set(have) != set(want):
            problems.append(f"member {m}: agency regions {sorted(have)} != {sorted(want)}")
            continue
        for region, (level, linked) in have.items():
            if level != want[region]:
                problems.append(f"member {m}, region {region}: scope level {level}")
            if linked != agents.get(region):
                problems.append(
                    f"member {m}, region {region}: agent {linked} != current {agents.get(region)}"
                )
    return problems


async def money_problems(db: Database) -> list[str]:
    """Money: shares and refunds add up, nothing is created from nothing, and every
    account equals what the payments, refunds, settlements and withdrawals say."""
    problems: list[str] = []
    # payment -> (amount, refunded, currency, (settled, held shares settled))
    payments = {
        int(pid): (int(amount), int(refunded), str(currency), (settled is not None,
                                                              held_settled is not None))
        for pid, amount, refunded, currency, settled, held_settled in await _rows(
            db,
            select(Payment.id, Payment.amount, Payment.refunded, Payment.currency,
                   Payment.settled_at, Payment.held_settled_at),
        )
    }  # fmt: skip
    share_sum: dict[int, int] = defaultdict(int)
    share_refunded: dict[int, int] = defaultdict(int)
    # (owner key, bucket, currency) -> the balance the payments imply
    expected: dict[tuple[str, str, str], int] = defaultdict(int)
    for pid, role, member_id, amount, refunded, held in await _rows(
        db,
        select(
            PaymentShare.payment_id,
            PaymentShare.role,
            PaymentShare.member_id,
            PaymentShare.amount,
            PaymentShare.refunded,
            PaymentShare.held,
        ),
    ):
        pid, amount, refunded = int(pid), int(amount), int(refunded)
        share_sum[pid] += amount
        share_refunded[pid] += refunded
        if amount < 0 or not 0 <= refunded <= amount:
            problems.append(f"payment {pid}: share {role} amount {amount} refunded {refunded}")
        _p_amount, _p_refunded, currency, stages = payments[pid]
        settled = stages[bool(held)]
        left = amount - refunded
        if role == "platform":
            expected[("platform", ledger.EARNINGS, currency)] += left
        elif role == "merchant":
            expected[(f"member:{member_id}", ledger.SALES, currency)] += left
        elif settled:
            # available + reserved + paid out, checked below with the withdrawals
            expected[(f"member:{member_id}", "settled", currency)] += left
        else:
            expected[(f"member:{member_id}", ledger.PENDING, currency)] += left
    refund_sum: dict[int, int] = defaultdict(int)
    for pid, amount in await _rows(db, select(Refund.payment_id, Refund.amount)):
        if int(amount) <= 0:
            problems.append(f"payment {pid}: a refund of {amount}")
        refund_sum[int(pid)] += int(amount)
    net: dict[str, int] = defaultdict(int)
    for pid, (amount, refunded, currency, _settled) in payments.items():
        net[currency] += amount - refunded
        if not 0 <= refunded <= amount:
            problems.append(f"payment {pid}: refunded {refunded} of {amount}")
        if share_sum[pid] != amount:
            problems.append(f"payment {pid}: shares sum to {share_sum[pid]}, not {amount}")
        if share_refunded[pid] != refunded or refund_sum[pid] != refunded:
            problems.append(
                f"payment {pid}: refunded {refunded}, shares say {share_refunded[pid]},"
                f" refunds say {refund_sum[pid]}"
            )
    for member_id, amount, currency, status in await _rows(
        db, select(Withdrawal.member_id, Withdrawal.amount, Withdrawal.currency, Withdrawal.status)
    ):
        if status == "approved":
            expected[(ledger.SYSTEM, ledger.PAYOUTS, currency)] += int(amount)
        if status == "pending":
            expected[(f"member:{member_id}", ledger.RESERVED, currency)] += int(amount)
    balances: dict[tuple[str, str, str], int] = {
        (str(o), str(b), str(c)): int(v)
        for o, b, c, v in await _rows(
            db, select(Account.owner, Account.bucket, Account.currency, Account.balance)
        )
    }
    # Money in the network (members, platform, paid out) = payments - refunds.
    held: dict[str, int] = defaultdict(int)
    for (owner, bucket, currency), value in balances.items():
        if owner.startswith("member:") or owner == "platform" or bucket == ledger.PAYOUTS:
            held[currency] += value
        if (owner, bucket) == (ledger.SYSTEM, ledger.PAYMENTS_IN) and value != -net[currency]:
            problems.append(f"{currency}: payments account {value}, payments - refunds {net}")
    for currency in sorted(set(held) | set(net)):
        if held[currency] != net[currency]:
            problems.append(
                f"{currency}: members + platform + payouts hold {held[currency]},"
                f" payments - refunds are {net[currency]}"
            )
    # Each account against what the records imply.
    settled_now: dict[tuple[str, str], int] = defaultdict(int)
    for (owner, bucket, currency), value in balances.items():
        if bucket in (ledger.AVAILABLE, ledger.RESERVED):
            settled_now[(owner, currency)] += value
        elif owner == ledger.SYSTEM and bucket == ledger.PAYMENTS_IN:
            continue
        elif value != expected.get((owner, bucket, currency), 0):
            problems.append(
                f"account {owner} {bucket} {currency}: {value}, records imply"
                f" {expected.get((owner, bucket, currency), 0)}"
            )
    for owner, bucket, currency in expected:
        if bucket in (ledger.PENDING, ledger.SALES, ledger.EARNINGS, ledger.PAYOUTS) and (
            (owner, bucket, currency) not in balances and expected[(owner, bucket, currency)] != 0
        ):
            problems.append(f"account {owner} {bucket} {currency} is missing")
        if (
            bucket == ledger.RESERVED
            and balances.get((owner, bucket, currency), 0) != expected[(owner, bucket, currency)]
        ):
            problems.append(f"account {owner} reserved {currency} != pending withdrawals")
    approved: dict[tuple[str, str], int] = defaultdict(int)
    for member_id, amount, currency in await _rows(
        db,
        select(Withdrawal.member_id, Withdrawal.amount, Withdrawal.currency).where(
            Withdrawal.status == "approved"
        ),
    ):
        approved[(f"member:{member_id}", str(currency))] += int(amount)
    keys = set(settled_now) | set(approved)
    keys |= {(o, c) for o, b, c in expected if b == "settled"}
    for owner, currency in sorted(keys):
        earned = expected.get((owner, "settled", currency), 0)
        if settled_now[(owner, currency)] + approved[(owner, currency)] != earned:
            problems.append(
                f"{owner} {currency}: available + reserved {settled_now[(owner, currency)]}"
                f" + paid out {approved[(owner, currency)]} != settled earnings {earned}"
            )
    return problems


async def invariant_problems(
    services: Services, regions: dict[str, tuple[str | None, int]]
) -> list[str]:
    """Everything that must hold after any sequence of requests; empty when all is well."""
    report = await services.ledger.check()
    problems = [f"ledger check: {p}" for p in report.problems]
    problems += await chain_problems(services.ctx.db, regions)
    problems += await money_problems(services.ctx.db)
    return problems
