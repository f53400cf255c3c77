"""Who may do what: every request against every kind of sender, through Prosody.

Each cell of ``MATRIX`` gets a *fresh* sender of its kind (so no cell depends on
another), takes a snapshot of every table, sends the request, and checks both the
answer (``OK`` or the stanza-error condition) and the database: a cell changes the
database if and only if its row is a write and its answer is ``OK``.

To add a request (payment, refund, terminate, …): write an ``async def`` that sends it
from ``cell.sender`` (it may create its own targets in ``World``) and add a ``Row`` with
the expected outcome for each of the eight ``KINDS``. The world runs on a component of
its own (private Prosody, its own admins), on SQLite in ``make test`` and on both
databases in ``make soak``: who may do what is decided above the store, and a refused
request's rollback is the same transaction code on both.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from sqlalchemy import insert, select

from imserver.store.models import Bot, Member
from tests.conftest import (
    BACKENDS,
    DOMAIN,
    OTHER_DOMAIN,
    Service,
    _drop_pg_database,
    _fresh_pg_database,
)
from tests.support.clients import Client
from tests.support.dbsnap import diff, snapshot
from tests.support.network import add_merchant, assign_agent
from tests.support.private import private_config, private_prosody, start_service, stop_service

COMPONENT = "distauthz.localhost"
OK = "ok"

# The kinds of sender (columns of the matrix).
NONMEMBER = "nonmember"
USER = "user"
MERCHANT = "merchant"
BOT = "bot"  # a bot JID of the world's merchant (bots table)
OTHER_BOT = "other-bot"  # a bot JID of another merchant
AGENT = "agent"  # the agent of 440305, the region of the world's members
ADMIN = "admin"  # a configured admin that is not a member
FOREIGN = "foreign"  # a JID of OTHER_DOMAIN (not a member domain)
KINDS = (NONMEMBER, USER, MERCHANT, BOT, OTHER_BOT, AGENT, ADMIN, FOREIGN)
ADMINS = [f"admin{i}@{DOMAIN}" for i in range(60)]


@dataclass
class World:
    """A merchant with a user in 440305, another merchant, and helpers for fresh senders."""

    svc: Service
    setup_admin: Client
    merchant: Client
    other_merchant: Client
    target_user: Client
    _admins: Iterator[str] = field(default_factory=lambda: iter(ADMINS[1:]))
    _shared: dict[str, Client] = field(default_factory=dict)

    async def shared_sender(self, kind: str) -> Client:
        """One sender of ``kind`` for every read-only row."""
        if kind not in self._shared:
            self._shared[kind] = await self.sender(kind)
        return self._shared[kind]

    async def add_bot(self, merchant: Client) -> Client:
        bot = await self.svc.client(self.svc.new_jid("bot"))

        async def link(conn: Any) -> None:
            merchant_id = (
                await conn.execute(select(Member.id).where(Member.jid == merchant.bare))
            ).scalar_one()
            await conn.execute(
                insert(Bot).values(jid=bot.bare, merchant_id=merchant_id, created_at=_now())
            )

        await self.svc.app.db.transaction(link)
        return bot

    async def sender(self, kind: str) -> Client:
        """A fresh sender of ``kind``."""
        svc = self.svc
        if kind == NONMEMBER:
            return await svc.client()
        if kind == USER:
            user = await svc.client()
            await user.dist.register(svc.jid, self.merchant.bare)
            return user
        if kind == MERCHANT:
            shop = await svc.client(svc.new_jid("shop"))
            await add_merchant(self.setup_admin, svc.jid, shop.bare)
            return shop
        if kind == BOT:
            return await self.add_bot(self.merchant)
        if kind == OTHER_BOT:
            return await self.add_bot(self.other_merchant)
        if kind == AGENT:
            agent = await svc.client(svc.new_jid("agent"))
            await assign_agent(self.setup_admin, svc.jid, agent.bare, "440305")
            return agent
        if kind == ADMIN:
            return await svc.client(next(self._admins))
        if kind == FOREIGN:
            return await svc.client(svc.new_jid("far", OTHER_DOMAIN))
        raise AssertionError(kind)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Cell:
    world: World
    sender: Client
    target: Any = None  # what the row's ``prepare`` made for this cell

    @property
    def svc(self) -> Service:
        return self.world.svc


Request = Callable[[Cell], Awaitable[Any]]
# Makes a cell's target (a member to terminate, a payment to refund, ...) before the
# "before" snapshot, through the service layer (no XMPP: it is set-up, not the test).
Prepare = Callable[[World], Awaitable[Any]]


@dataclass(frozen=True)
class Row:
    """One request: whether it writes, and the expected outcome per kind of sender."""

    name: str
    send: Request
    writes: bool
    expect: dict[str, str]
    prepare: Prepare | None = None

    def __post_init__(self) -> None:
        assert set(self.expect) == set(KINDS), f"{self.name}: give every kind of sender"


# -- the requests -----------------------------------------------------------------------


async def register(cell: Cell) -> Any:
    return await cell.sender.dist.register(cell.svc.jid, cell.world.merchant.bare)


async def chain_own(cell: Cell) -> Any:
    return await cell.sender.dist.chain(cell.svc.jid)


async def chain_other(cell: Cell) -> Any:
    return await cell.sender.dist.chain(cell.svc.jid, cell.world.target_user.bare)


async def create_merchant(cell: Cell) -> Any:
    return await add_merchant(cell.sender, cell.svc.jid, cell.svc.new_jid("newshop"))


async def assign_agent_elsewhere(cell: Cell) -> Any:
    # 110101 (Beijing): no member of this world lives there.
    return await assign_agent(cell.sender, cell.svc.jid, cell.svc.new_jid("ag"), "110101")


# -- payments, ledger, withdrawals, repair and audit --------------------------------------

_refs = itertools.count()


def _ref(prefix: str) -> str:
    """A payment/refund id used once in this world."""
    return f"{prefix}-{next(_refs)}-{uuid.uuid4().hex[:6]}"


async def _member(world: World) -> str:
    """A fresh user under the world's merchant (no XMPP account needed)."""
    jid = world.svc.new_jid("target")
    await world.svc.app.services.membership.register(jid, world.merchant.bare)
    return jid


async def _linked_bot(world: World) -> str:
    """A fresh bot JID linked to the world's merchant."""
    jid = world.svc.new_jid("till")
    await world.svc.app.services.bots.change(ADMINS[0], jid, world.merchant.bare, "link")
    return jid


async def _payment(world: World) -> str:
    """A payment of the world's merchant (10000 fen by its target user); its id."""
    ref = _ref("pay")
    await world.svc.app.services.payments.pay(
        world.merchant.bare, ref, world.target_user.bare, "10000", "CNY"
    )
    return ref


async def _pending_withdrawal(world: World) -> str:
    """A pending withdrawal of the world's merchant: it earns as the referrer of a fresh
    payer, the hold passes (the clock moves), it asks for 10 CNY; the withdrawal's id."""
    services = world.svc.app.services
    payer = await _member(world)
    await services.payments.pay(world.merchant.bare, _ref("pay"), payer, "1000000", "CNY")
    world.svc.clock.advance(days=world.svc.config.policy.hold_days + 1)
    await services.settlement.settle()
    asked = await services.withdrawals.ask(world.merchant.bare, "1000", "CNY")
    return str(asked.id)


async def bot_link_own(cell: Cell) -> Any:
    return await cell.sender.dist.bot(cell.svc.jid, cell.svc.new_jid("till"))


async def bot_link_for_merchant(cell: Cell) -> Any:
    return await cell.sender.dist.bot(
        cell.svc.jid, cell.svc.new_jid("till"), merchant=cell.world.merchant.bare
    )


async def bot_unlink(cell: Cell) -> Any:
    return await cell.sender.dist.bot(
        cell.svc.jid, cell.target, merchant=cell.world.merchant.bare, action="unlink"
    )


async def policy_get(cell: Cell) -> Any:
    return await cell.sender.dist.policy(cell.svc.jid)


async def policy_set(cell: Cell) -> Any:
    return await cell.sender.dist.set_policy(
        cell.svc.jid, pool_bp=1000, referral_bp=[3000, 2000], agent_bp=(1500, 1000, 500)
    )


async def payment_own(cell: Cell) -> Any:
    # For whichever merchant the sender reports for (its own or its bot's merchant).
    return await cell.sender.dist.pay(
        cell.svc.jid, _ref("cell"), cell.world.target_user.bare, 1000, "CNY"
    )


async def payment_for_merchant(cell: Cell) -> Any:
    return await cell.sender.dist.pay(
        cell.svc.jid,
        _ref("cell"),
        cell.world.target_user.bare,
        1000,
        "CNY",
        merchant=cell.world.merchant.bare,
    )


async def refund(cell: Cell) -> Any:
    # A payment of the world's merchant: only the merchant and its bots may refund it.
    return await cell.sender.dist.refund(cell.svc.jid, _ref("refund"), cell.target, 100)


async def balance_own(cell: Cell) -> Any:
    return await cell.sender.dist.balance(cell.svc.jid)


async def balance_other(cell: Cell) -> Any:
    iq = cell.sender.iq(cell.svc.jid, "get")
    iq["balance"]["jid"] = cell.world.target_user.bare
    return await iq.send(timeout=10)


async def statement_own(cell: Cell) -> Any:
    return await cell.sender.dist.statement(cell.svc.jid)


async def statement_other(cell: Cell) -> Any:
    return await cell.sender.dist.statement(cell.svc.jid, jid=cell.world.target_user.bare)


async def withdraw(cell: Cell) -> Any:
    # Fresh senders have nothing available: members pass authorization and are refused
    # for the amount (not-acceptable); the others never get that far.
    return await cell.sender.dist.withdraw(cell.svc.jid, 1000, "CNY")


async def withdrawal_decision(cell: Cell) -> Any:
    return await cell.sender.dist.decide_withdrawal(cell.svc.jid, cell.target, "reject")


async def withdrawals_list(cell: Cell) -> Any:
    return await cell.sender.dist.withdrawals(cell.svc.jid)


async def terminate(cell: Cell) -> Any:
    return await cell.sender.dist.terminate(cell.svc.jid, cell.target, "authz matrix")


async def delete(cell: Cell) -> Any:
    return await cell.sender.dist.delete(cell.svc.jid, cell.target, "authz matrix")


async def reassign(cell: Cell) -> Any:
    return await cell.sender.dist.reassign(
        cell.svc.jid, cell.target, cell.world.target_user.bare, "authz matrix"
    )


async def audit(cell: Cell) -> Any:
    return await cell.sender.dist.audit(cell.svc.jid, max_entries=5)


R = "registration-required"
F = "forbidden"
C = "conflict"
N = "item-not-found"
A = "not-acceptable"
ANSWERS = {OK, R, F, C, N, A}

# fmt: off
MATRIX = [
    #                              nonmember user  merchant bot other-bot agent admin foreign
    Row("register", register, True,
        dict(zip(KINDS, (OK,       C,    C,       F,  F,        C,    OK,   F), strict=True))),
    Row("chain (own)", chain_own, False,
        dict(zip(KINDS, (R,        OK,   OK,      R,  R,        OK,   N,    F), strict=True))),
    Row("chain (another member)", chain_other, False,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        OK,   OK,   F), strict=True))),
    Row("merchant (create)", create_merchant, True,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True))),
    Row("agent (assign)", assign_agent_elsewhere, True,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True))),
    # merchant bots: an admin for anyone, a merchant for itself
    Row("bot link (own)", bot_link_own, True,
        dict(zip(KINDS, (F,        F,    OK,      F,  F,        F,    N,    F), strict=True))),
    Row("bot link (the world's merchant)", bot_link_for_merchant, True,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True))),
    Row("bot unlink (the world's merchant)", bot_unlink, True,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True)),
        prepare=_linked_bot),
    Row("policy (get)", policy_get, False,
        dict(zip(KINDS, (F,        OK,   OK,      OK, OK,       OK,   OK,   F), strict=True))),
    Row("policy (set)", policy_set, True,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True))),
    # payments: a merchant for itself, a bot for its merchant
    Row("payment (own)", payment_own, True,
        dict(zip(KINDS, (F,        F,    OK,      OK, OK,       F,    F,    F), strict=True))),
    Row("payment (naming the world's merchant)", payment_for_merchant, True,
        dict(zip(KINDS, (F,        F,    F,       OK, F,        F,    F,    F), strict=True))),
    Row("refund (a payment of the world's merchant)", refund, True,
        dict(zip(KINDS, (F,        F,    N,       OK, N,        F,    F,    F), strict=True)),
        prepare=_payment),
    Row("balance (own)", balance_own, False,
        dict(zip(KINDS, (R,        OK,   OK,      R,  R,        OK,   R,    F), strict=True))),
    Row("balance (another member)", balance_other, False,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True))),
    Row("statement (own)", statement_own, False,
        dict(zip(KINDS, (R,        OK,   OK,      R,  R,        OK,   R,    F), strict=True))),
    Row("statement (another member)", statement_other, False,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True))),
    Row("withdraw", withdraw, True,
        dict(zip(KINDS, (R,        A,    A,       R,  R,        A,    R,    F), strict=True))),
    Row("withdrawal (decide)", withdrawal_decision, True,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True)),
        prepare=_pending_withdrawal),
    Row("withdrawals (list)", withdrawals_list, False,
        dict(zip(KINDS, (R,        OK,   OK,      R,  R,        OK,   OK,   F), strict=True))),
    # chain repair and the audit log: admins only
    Row("terminate", terminate, True,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True)),
        prepare=_member),
    Row("delete", delete, True,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True)),
        prepare=_member),
    Row("reassign", reassign, True,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True)),
        prepare=_member),
    Row("audit log", audit, False,
        dict(zip(KINDS, (F,        F,    F,       F,  F,        F,    OK,   F), strict=True))),
]
# fmt: on


# -- the world ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    backend: str = request.param
    pg_name = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('authz') / 'db.sqlite3'}"
    else:
        pg_name, url = await _fresh_pg_database()
    data = tmp_path_factory.mktemp(f"authz-prosody-{backend}")
    async with private_prosody(Path(data), COMPONENT) as prosody:
        config = private_config(
            prosody,
            COMPONENT,
            url,
            {
                "IMSERVER_ADMINS": "[" + ",".join(f'"{a}"' for a in ADMINS) + "]",
                "IMSERVER_LIMITS__RATE": "1000",
                "IMSERVER_LIMITS__BURST": "1000",
            },
        )
        svc = await start_service(prosody, config, backend=backend)
        try:
            setup_admin = await svc.client(ADMINS[0])
            merchant = await svc.client(svc.new_jid("shop"))
            other = await svc.client(svc.new_jid("othershop"))
            await add_merchant(setup_admin, svc.jid, merchant.bare)
            await add_merchant(setup_admin, svc.jid, other.bare, region="110101")
            target = await svc.client(svc.new_jid("target"))
            await target.dist.register(svc.jid, merchant.bare)
            yield World(svc, setup_admin, merchant, other, target)
        finally:
            await stop_service(svc)
            if pg_name:
                await _drop_pg_database(pg_name)


async def _outcome(coro: Awaitable[Any]) -> str:
    try:
        await coro
    except IqError as exc:
        assert exc.iq["error"]["text"], "every refusal carries a human text"
        return str(exc.iq["error"]["condition"])
    return OK


# Notifications are sent (and marked sent) in the background after a payment's commit:
# that is not a write of the request under test.
BACKGROUND = frozenset({"outbox"})


@pytest.mark.soak_when(world="postgresql")
@pytest.mark.parametrize("row", MATRIX, ids=[r.name for r in MATRIX])
async def test_authorization_matrix(world: World, row: Row) -> None:
    failures = []
    for kind in KINDS:
        # A read-only row cannot change its sender: it shares one per kind (the logins
        # are most of the matrix's time). A write gets a fresh sender per cell.
        sender = await (world.shared_sender(kind) if not row.writes else world.sender(kind))
        target = await row.prepare(world) if row.prepare else None
        # Nothing else writes in this world between the two snapshots.
        await asyncio.sleep(0)
        before = await snapshot(world.svc.app.db, skip=BACKGROUND)
        got = await _outcome(row.send(Cell(world, sender, target)))
        changed = diff(before, await snapshot(world.svc.app.db, skip=BACKGROUND))
        should_change = row.writes and got == OK
        if got != row.expect[kind]:
            failures.append(f"{kind}: expected {row.expect[kind]}, got {got}")
        if bool(changed) != should_change:
            failures.append(f"{kind}: answer {got} but changed {changed or 'nothing'}")
    assert not failures, f"{row.name}:\n  " + "\n  ".join(failures)


def test_matrix_covers_every_kind() -> None:
    """The matrix can tell every kind of sender from every other, and every row refuses
    someone. (That every row names every kind is checked when a ``Row`` is made.)"""
    assert len({r.name for r in MATRIX}) == len(MATRIX), "row names must be unique"
    unknown = [(r.name, k, v) for r in MATRIX for k, v in r.expect.items() if v not in ANSWERS]
    assert not unknown, f"outcomes that are no answer of the component: {unknown}"
    # Two kinds with the same column: the matrix would pass with either one's rights
    # given to the other, so one of them is not tested at all.
    column = {kind: [r.expect[kind] for r in MATRIX] for kind in KINDS}
    alike = [(a, b) for a, b in itertools.combinations(KINDS, 2) if column[a] == column[b]]
    assert not alike, f"kinds that no row tells apart: {alike}"
    # A row that every kind may send tests no authorization.
    open_to_all = [r.name for r in MATRIX if set(r.expect.values()) == {OK}]
    assert not open_to_all, f"rows that refuse nobody: {open_to_all}"
