"""A stateful model test of the whole service layer (hypothesis RuleBasedStateMachine).

Register, add merchants and agents, link bots, pay, refund, terminate, delete, reassign,
change the policy, settle (the injected clock moves), withdraw (ask, approve, reject) in
random order, with crashes between steps (the database is disposed and every service
object built again from the file) and use cases cancelled mid-way. After every step the
invariants of ``tests/support/model.py`` must hold: the ledger check passes, no cycle,
every live upline equals the one recomputed from the live parent pointers, every agency
link names its region's current agent, every account equals what the payments, refunds,
settlements and withdrawals imply, and nothing is created from nothing.

The model beside the database predicts each answer (the stanza-error condition or OK)
where the rules make it certain, and remembers every acknowledged payment and refund:
what was answered is in the database exactly once.

No XMPP: it drives ``Services`` directly on SQLite files, so it is fast enough for
``make test``; the ``soak`` variant runs longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from imserver.service.errors import ServiceError
from imserver.service.membership import Location
from imserver.store.models import Member, Payment, Refund, Withdrawal
from tests.conftest import DOMAIN, OTHER_DOMAIN
from tests.support.model import ADMIN, Harness, build_template, copy_database, invariant_problems

OK = "ok"
# What the runs did (requests by rule and answer, crashes, cancellations): the figures
# of the closing note, printed by the soak run.
STATS: Counter[str] = Counter()
T = TypeVar("T")
# Districts of two cities of one province, the city, the province, and a district elsewhere.
REGIONS = ("440305", "440304", "440300", "440000", "110101")
MERCHANT_REGIONS = ("440305", "440304", "110101")
POLICIES: tuple[dict[str, str | None], ...] = (
    {"pool-bp": "1000", "referral-bp": "3000 2000", "district-bp": "1500", "city-bp": "1000",
     "province-bp": "500", "allow-third-level": "false"},
    {"pool-bp": "2000", "referral-bp": "3000 2000 1000", "district-bp": "1000",
     "city-bp": "500", "province-bp": "500", "allow-third-level": "true"},
    {"pool-bp": "1500", "referral-bp": "5000", "district-bp": "0", "city-bp": "0",
     "province-bp": "2500", "allow-third-level": "false"},
)  # fmt: skip


@dataclass
class Paid:
    """A payment the service acknowledged (the model's copy)."""

    merchant: str
    merchant_gen: int
    ref: str
    payer: str
    payer_gen: int
    amount: int
    currency: str
    answer: tuple[Any, ...]
    refunded: int = 0


@dataclass
class Refunded:
    """A refund the service acknowledged."""

    payment: Paid
    ref: str
    amount: int


def _shares(view: Any) -> tuple[Any, ...]:
    return tuple((s.role, s.level, s.scope, s.jid, s.amount) for s in view.shares)


def only_if(check: Callable[[Any], bool]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A rule that does nothing when ``check`` fails: a precondition that leaves what
    Hypothesis draws alone. Hypothesis' own preconditions choose among the enabled rules
    by the state, and here the state follows a real service whose outcome for the same
    choices can differ between runs (whether a cancelled request had committed), which
    Hypothesis reports as FlakyStrategyDefinition."""

    def wrap(step: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(step)
        def guarded(self: Any, *args: Any, **kwargs: Any) -> None:
            if check(self):
                step(self, *args, **kwargs)

        return guarded

    return wrap


class ServiceMachine(RuleBasedStateMachine):
    """The service layer against a model of who is what and what was paid."""

    template: ClassVar[Path]
    regions: ClassVar[dict[str, tuple[str | None, int]]]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory(prefix="imserver-model-")
        path = Path(self.tmp.name) / "db.sqlite3"
        copy_database(self.template, path)
        self.h = Harness(path)
        self.h.open()
        self.seq: Iterator[int] = itertools.count()
        # jid -> status of its latest membership (active | terminated | deleted)
        self.status: dict[str, str] = {}
        self.role: dict[str, str] = {}
        self.gen: dict[str, int] = {}  # how many memberships the JID has had
        self.bots: dict[str, str] = {}  # bot jid -> merchant jid
        self.paid: list[Paid] = []
        self.refunds: list[Refunded] = []
        self.withdrawals: dict[int, str] = {}  # id -> status
        self.cancelled = 0
        self.erased: set[str] = set()  # JIDs deleted at least once (pseudonyms in history)

    # -- plumbing ---------------------------------------------------------------------

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def outcome(self, call: Callable[[], Awaitable[T]]) -> tuple[str, T | None]:
        """OK and the answer, or the stanza-error condition; any other exception fails."""
        step = sys._getframe(1).f_code.co_name  # the rule, for the figures
        try:
            answer = self.run(call())
        except ServiceError as exc:
            assert exc.text, "every refusal carries a human text"
            STATS[f"{step}: {exc.condition}"] += 1
            return exc.condition, None
        STATS[f"{step}: {OK}"] += 1
        return OK, answer

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.h.close())
        self.loop.close()
        self.tmp.cleanup()

    def new_jid(self, prefix: str = "u", domain: str = DOMAIN) -> str:
        return f"{prefix}{next(self.seq)}@{domain}"

    def new_ref(self, prefix: str) -> str:
        return f"{prefix}-{next(self.seq)}"

    @staticmethod
    def pick(items: list[T], index: int) -> T:
        return items[index % len(items)]

    def jids(self) -> list[str]:
        """Every JID that was ever a member (any status), in a stable order."""
        return sorted(self.status)

    def active(self, role: str | None = None) -> list[str]:
        return sorted(
            j for j, s in self.status.items() if s == "active" and role in (None, self.role[j])
        )

    def member_joined(self, jid: str, role: str) -> None:
        self.status[jid] = "active"
        self.role[jid] = role
        self.gen[jid] = self.gen.get(jid, 0) + 1

    def member_ended(self, jid: str, status: str) -> None:
        self.status[jid] = status
        if status == "deleted":
            self.erased.add(jid)
            # A deleted merchant's bot links end with it.
            self.bots = {b: m for b, m in self.bots.items() if m != jid}

    def merchant_of(self, sender: str) -> str | None:
        """The merchant a sender may report payments for, by the model."""
        if self.status.get(sender) == "active" and self.role[sender] == "merchant":
            return sender
        merchant = self.bots.get(sender)
        if merchant is not None and self.status.get(merchant) == "active":
            return merchant
        return None

    # -- set-up -------------------------------------------------------------------------

    @initialize(region=st.sampled_from(MERCHANT_REGIONS), agents=st.booleans(), money=st.booleans())
    def first_merchant(self, region: str, agents: bool, money: bool) -> None:
        """A merchant, maybe the agents of 440305's line, maybe settled earnings already
        (without them few runs would reach a withdrawal in thirty steps)."""
        if agents:
            for code in ("440305", "440300", "440000"):
                self.assign_agent(True, 0, code)
        self.add_merchant(region, False, 0)
        if money:
            shop = self.active("merchant")[0]
            self.register("fresh", 0, self.jids().index(shop), 1)
            customer = self.active("user")[0]
            self.pay(
                self.senders_for_payments().index(shop),
                self.jids().index(customer),
                10**6,
                "CNY",
                replay=1,
                stranger=1,
            )
            self.hold_ends()

    # -- membership ---------------------------------------------------------------------

    @rule(region=st.sampled_from(MERCHANT_REGIONS), referred=st.booleans(), ref=st.integers(0, 99))
    def add_merchant(self, region: str, referred: bool, ref: int) -> None:
        jid = self.new_jid("shop")
        referrer = self.pick(self.jids(), ref) if referred and self.status else None
        got, _ = self.outcome(
            lambda: self.h.svc.membership.add_merchant(
                ADMIN, jid, "Shop", referrer, Location(region=region)
            )
        )
        expected = OK
        if referrer is not None and self.status[referrer] != "active":
            expected = "not-acceptable"  # terminated, or deleted (its erased JID is known)
        assert got == expected, (got, expected, referrer)
        if got == OK:
            self.member_joined(jid, "merchant")

    @rule(fresh=st.booleans(), who=st.integers(0, 99), region=st.sampled_from(REGIONS))
    def assign_agent(self, fresh: bool, who: int, region: str) -> None:
        candidates = [j for j in self.jids() if j not in self.bots]
        jid = self.new_jid("agent") if fresh or not candidates else self.pick(candidates, who)
        got, _ = self.outcome(lambda: self.h.svc.membership.assign_agent(ADMIN, jid, region))
        status = self.status.get(jid)
        expected = "not-acceptable" if status == "terminated" else OK
        assert got == expected, (got, expected, jid, status)
        if got == OK and status != "active":
            self.member_joined(jid, "agent")

    @rule(
        kind=st.sampled_from(["fresh", "fresh", "fresh", "member", "bot", "foreign"]),
        who=st.integers(0, 99),
        ref=st.integers(0, 99),
        unknown_referrer=st.integers(0, 9),
    )
    def register(self, kind: str, who: int, ref: int, unknown_referrer: int) -> None:
        if kind == "member" and self.status:
            sender = self.pick(self.jids(), who)
        elif kind == "bot" and self.bots:
            sender = self.pick(sorted(self.bots), who)
        elif kind == "foreign":
            sender = self.new_jid("far", OTHER_DOMAIN)
        else:
            sender = self.new_jid()
        referrer = (
            self.new_jid("nobody")
            if unknown_referrer == 0 or not self.status
            else self.pick(self.jids(), ref)
        )
        got, _ = self.outcome(lambda: self.h.svc.membership.register(sender, referrer))
        if sender == referrer:
            expected = "bad-request"
        elif self.status.get(sender) in ("active", "terminated"):
            expected = "conflict"
        elif sender in self.bots or sender.endswith("@" + OTHER_DOMAIN):
            expected = "forbidden"
        elif referrer not in self.status:
            expected = "item-not-found"
        elif self.status[referrer] != "active":
            expected = "not-acceptable"
        else:
            expected = OK
        assert got == expected, (got, expected, sender, referrer)
        if got == OK:
            self.member_joined(sender, "user")

    @rule(
        action=st.sampled_from(["terminate", "delete"]),
        who=st.integers(0, 99),
        as_admin=st.integers(0, 9),
    )
    @only_if(lambda self: bool(self.status))
    def end_membership(self, action: str, who: int, as_admin: int) -> None:
        jid = self.pick(self.jids(), who)
        # Now and then a member tries it: forbidden, and nothing changes.
        sender = ADMIN if as_admin else self.pick(self.jids(), who + 1)
        repair = self.h.svc.repair
        call = repair.terminate if action == "terminate" else repair.delete
        got, _ = self.outcome(lambda: call(sender, jid, "model test"))
        status = self.status[jid]
        if sender != ADMIN:
            expected = "forbidden"
        elif status == "deleted":
            expected = "item-not-found"
        elif status == "terminated" and action == "terminate":
            expected = "conflict"
        else:
            expected = OK
        assert got == expected, (got, expected, action, jid, status)
        if got == OK:
            self.member_ended(jid, "terminated" if action == "terminate" else "deleted")

    @rule(who=st.integers(0, 99), to=st.integers(0, 99))
    @only_if(lambda self: len(self.status) >= 2)
    def reassign(self, who: int, to: int) -> None:
        jid, referrer = self.pick(self.jids(), who), self.pick(self.jids(), to)
        got, _ = self.outcome(
            lambda: self.h.svc.repair.reassign(ADMIN, jid, referrer, "model test")
        )
        if jid == referrer:
            allowed = {"bad-request"}
        elif self.status[jid] == "deleted" or self.status[referrer] == "deleted":
            allowed = {"item-not-found", "not-acceptable"}
        elif self.status[jid] != "active" or self.status[referrer] != "active":
            allowed = {"not-acceptable"}
        else:
            allowed = {OK, "not-acceptable"}  # not-acceptable: it would make a cycle
        assert got in allowed, (got, allowed, jid, referrer)

    # -- bots and policy ----------------------------------------------------------------

    @rule(who=st.integers(0, 99), by_admin=st.booleans(), unlink=st.integers(0, 4))
    @only_if(lambda self: bool(self.role))
    def bot(self, who: int, by_admin: bool, unlink: int) -> None:
        merchants = sorted(j for j, r in self.role.items() if r == "merchant")
        if not merchants:
            return
        merchant = self.pick(merchants, who)
        own = sorted(b for b, m in self.bots.items() if m == merchant)
        sender = ADMIN if by_admin else merchant
        if unlink == 0 and own:
            bot, action = own[0], "unlink"
        else:
            bot, action = self.new_jid("bot"), "link"
        got, _ = self.outcome(lambda: self.h.svc.bots.change(sender, bot, merchant, action))
        status = self.status[merchant]
        if status == "deleted":
            expected = "forbidden" if sender == merchant else "item-not-found"
        elif status == "terminated":
            expected = "forbidden" if sender == merchant else "bad-request"
            if action == "unlink" and sender == ADMIN:
                expected = OK
        else:
            expected = OK
        assert got == expected, (got, expected, sender, bot, action, status)
        if got == OK and action == "link":
            self.bots[bot] = merchant
        elif got == OK:
            del self.bots[bot]

    @rule(which=st.integers(0, len(POLICIES) - 1), by_admin=st.integers(0, 4))
    def set_policy(self, which: int, by_admin: int) -> None:
        sender = ADMIN if by_admin or not self.status else self.jids()[0]
        got, _ = self.outcome(
            lambda: self.h.svc.policy.replace(sender, POLICIES[which], "model test")
        )
        assert got == (OK if sender == ADMIN else "forbidden"), got

    # -- money ---------------------------------------------------------------------------

    def senders_for_payments(self) -> list[str]:
        return sorted({*(j for j, r in self.role.items() if r == "merchant"), *self.bots})

    @rule(
        sender=st.integers(0, 99),
        payer=st.integers(0, 99),
        amount=st.one_of(st.integers(1, 2000), st.integers(10**5, 10**7)),
        currency=st.sampled_from(["CNY", "CNY", "USD"]),
        replay=st.integers(0, 5),
        stranger=st.integers(0, 19),
    )
    @only_if(lambda self: bool(self.status))
    def pay(
        self, sender: int, payer: int, amount: int, currency: str, replay: int, stranger: int
    ) -> None:
        senders = self.senders_for_payments()
        if stranger == 0 or not senders:
            who = self.pick(self.jids(), sender)  # anyone at all
        else:
            who = self.pick(senders, sender)
        merchant = self.merchant_of(who)
        earlier = [
            p
            for p in self.paid
            if merchant is not None
            and p.merchant == merchant
            and p.merchant_gen == self.gen[merchant]
        ]
        if replay == 0 and earlier:
            old = self.pick(earlier, sender)
            got, view = self.outcome(
                lambda: self.h.svc.payments.pay(
                    who, old.ref, old.payer, str(old.amount), old.currency
                )
            )
            same_payer = (
                self.gen[old.payer] == old.payer_gen and self.status[old.payer] != "deleted"
            )
            expected = OK if same_payer else "conflict"
            assert got == expected, (got, expected, old)
            if view is not None:
                # The same answer again (a member deleted since shows as its pseudonym),
                # and nothing distributed twice (the invariants).
                again = _shares(view)
                assert len(again) == len(old.answer), (again, old.answer)
                for now, then in zip(again, old.answer, strict=True):
                    assert now[:3] + now[4:] == then[:3] + then[4:], (again, old.answer)
                    assert now[3] == then[3] or (
                        then[3] in self.erased and str(now[3]).endswith("@erased.invalid")
                    ), (again, old.answer)
            # Same id, another amount: conflict.
            cap = self.h.svc.ctx.config.money.currencies[old.currency]
            other_amount = old.amount + 1 if old.amount < cap else old.amount - 1
            got2, _ = self.outcome(
                lambda: self.h.svc.payments.pay(
                    who, old.ref, old.payer, str(other_amount), old.currency
                )
            )
            assert got2 == "conflict", got2
            return
        payer_jid = self.pick(self.jids(), payer)
        ref = self.new_ref("p")
        got, view = self.outcome(
            lambda: self.h.svc.payments.pay(who, ref, payer_jid, str(amount), currency)
        )
        cap = self.h.svc.ctx.config.money.currencies[currency]
        if merchant is None:
            expected = "forbidden"
        elif amount > cap:
            expected = "bad-request"
        elif self.status[payer_jid] == "deleted":
            expected = "item-not-found"
        elif self.status[payer_jid] == "terminated":
            expected = "not-acceptable"
        else:
            expected = OK
        assert got == expected, (got, expected, who, payer_jid, amount)
        if view is not None:
            assert merchant is not None
            assert sum(s.amount for s in view.shares) == amount
            self.paid.append(
                Paid(
                    merchant,
                    self.gen[merchant],
                    ref,
                    payer_jid,
                    self.gen[payer_jid],
                    amount,
                    currency,
                    _shares(view),
                )
            )

    @rule(which=st.integers(0, 999), part=st.integers(0, 110), replay=st.integers(0, 4))
    @only_if(lambda self: bool(self.paid))
    def refund(self, which: int, part: int, replay: int) -> None:
        p = self.pick(self.paid, which)
        merchant_alive = (
            self.gen[p.merchant] == p.merchant_gen and self.status[p.merchant] == "active"
        )
        # The merchant itself, or one of its bots now and then.
        own_bots = sorted(b for b, m in self.bots.items() if m == p.merchant)
        sender = self.pick(own_bots, which) if own_bots and which % 2 else p.merchant
        mine = [r for r in self.refunds if r.payment is p]
        if replay == 0 and mine:
            old = mine[-1]
            got, _ = self.outcome(
                lambda: self.h.svc.payments.refund(sender, old.ref, p.ref, str(old.amount))
            )
            assert got == (OK if merchant_alive else "forbidden"), got
            return
        left = p.amount - p.refunded
        amount = max(1, (p.amount * part) // 100)
        ref = self.new_ref("r")
        got, view = self.outcome(
            lambda: self.h.svc.payments.refund(sender, ref, p.ref, str(amount))
        )
        if not merchant_alive:
            expected = "forbidden"
        elif amount > left:
            expected = "bad-request"
        else:
            expected = OK
        assert got == expected, (got, expected, p, amount)
        if view is not None:
            assert sum(s.amount for s in view.shares) == -amount
            p.refunded += amount
            self.refunds.append(Refunded(p, ref, amount))

    @rule(days=st.integers(0, 10), hours=st.integers(0, 23))
    def settle(self, days: int, hours: int) -> None:
        self.h.clock.advance(days=days, hours=hours)
        STATS["settled payments"] += self.run(self.h.svc.settlement.settle())
        now = self.h.clock()

        async def overdue() -> int:
            async with self.h.svc.ctx.db.engine.connect() as conn:
                stmt = select(func.count()).where(
                    Payment.settled_at.is_(None), Payment.settle_at <= now
                )
                return int((await conn.execute(stmt)).scalar_one())

        assert self.run(overdue()) == 0, "a payment past its hold is still pending"

    @rule()
    @only_if(lambda self: bool(self.paid))
    def hold_ends(self) -> None:
        """Move past the hold period and settle (withdrawals need settled money)."""
        self.settle(self.h.svc.ctx.config.policy.hold_days, 1)

    @rule(
        who=st.integers(0, 99),
        percent=st.integers(0, 120),
        currency=st.sampled_from(["CNY", "CNY", "USD"]),
        rich=st.booleans(),
    )
    @only_if(lambda self: bool(self.status))
    def withdraw(self, who: int, percent: int, currency: str, rich: bool) -> None:
        """Ask for a part (sometimes more than all) of an available balance."""
        candidates = self.jids()
        if rich:
            # Earners with something to take out, else every asker is refused.
            candidates = [j for j in candidates if self.available(j, currency) > 0] or candidates
        jid = self.pick(candidates, who)
        status = self.status[jid]
        available = self.available(jid, currency) if status != "deleted" else 0
        minimum = self.h.svc.ctx.config.money.withdrawal_minimum[currency]
        amount = max(1, available * percent // 100)
        got, view_w = self.outcome(
            lambda: self.h.svc.withdrawals.ask(jid, str(amount), currency, self.new_ref("w"))
        )
        if status == "deleted":
            expected = "registration-required"
        elif status == "terminated" or available < 0 or amount < minimum or amount > available:
            expected = "not-acceptable"
        else:
            expected = OK
        assert got == expected, (got, expected, jid, amount, available)
        if view_w is not None:
            self.withdrawals[view_w.id] = "pending"

    def available(self, jid: str, currency: str) -> int:
        """The member's available balance, as the balance request answers it."""
        if self.status[jid] == "deleted":
            return 0
        view = self.run(self.h.svc.ledger.balance(jid))
        return next((b.available for b in view.lines if b.currency == currency), 0)

    @rule(which=st.integers(0, 99), approve=st.booleans(), by_admin=st.integers(0, 5))
    @only_if(lambda self: bool(self.withdrawals))
    def decide(self, which: int, approve: bool, by_admin: int) -> None:
        wid = self.pick(sorted(self.withdrawals), which)
        sender = ADMIN if by_admin or not self.status else self.jids()[0]
        action = "approve" if approve else "reject"
        got, _ = self.outcome(
            lambda: self.h.svc.withdrawals.decide(sender, str(wid), action, "model test")
        )
        status = self.withdrawals[wid]
        new = "approved" if approve else "rejected"
        if sender != ADMIN:
            expected = "forbidden"
        elif status in ("pending", new):
            expected = OK
        else:
            expected = "conflict"
        assert got == expected, (got, expected, wid, status, action)
        if got == OK:
            self.withdrawals[wid] = new

    # -- crashes ------------------------------------------------------------------------------

    @rule()
    def crash(self) -> None:
        """Nothing in memory survives: a new Database, Context and Services on the file."""
        self.run(self.h.crash())
        STATS["crash"] += 1

    @rule(
        steps=st.integers(0, 40),
        who=st.integers(0, 99),
        what=st.sampled_from(["pay", "refund", "terminate", "register"]),
    )
    @only_if(lambda self: bool(self.senders_for_payments()) and bool(self.active()))
    def cancel_in_flight(self, steps: int, who: int, what: str) -> None:
        """Start a use case, cancel it after a few turns of the loop, then crash.

        Whether it committed or not, it did so whole: the reconciliation below reads
        the database to learn which, and the invariants check the rest.
        """
        merchants = self.active("merchant")
        ref = self.new_ref("cancel")
        target = self.pick(self.active(), who)
        svc = self.h.svc
        call: Callable[[], Awaitable[Any]]
        if what == "pay" and merchants:
            merchant = self.pick(merchants, who)
            call = lambda: svc.payments.pay(merchant, ref, target, "1234", "CNY")  # noqa: E731
        elif what == "refund" and self.paid:
            p = self.pick(self.paid, who)
            call = lambda: svc.payments.refund(p.merchant, ref, p.ref, "1")  # noqa: E731
        elif what == "terminate":
            call = lambda: svc.repair.terminate(ADMIN, target, "cancelled")  # noqa: E731
        else:
            newcomer = self.new_jid("late")
            call = lambda: svc.membership.register(newcomer, target)  # noqa: E731

        async def start_and_cancel() -> None:
            task = asyncio.ensure_future(call())
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ServiceError):
                await task

        self.run(start_and_cancel())
        self.run(self.h.crash())
        self.cancelled += 1
        STATS[f"cancelled {what}"] += 1
        self.reconcile(what, ref, target)

    def reconcile(self, what: str, ref: str, target: str) -> None:
        """Learn from the database what a cancelled use case left (all or nothing)."""

        async def read(stmt: Any) -> list[Any]:
            async with self.h.svc.ctx.db.engine.connect() as conn:
                return list(await conn.execute(stmt))

        if what == "pay":
            rows = self.run(read(select(Payment.id, Payment.merchant_id).where(Payment.ref == ref)))
            if rows:
                merchant = self.run(read(select(Member.jid).where(Member.id == rows[0][1])))[0][0]
                view = self.run(self.h.svc.payments.pay(merchant, ref, target, "1234", "CNY"))
                self.paid.append(
                    Paid(merchant, self.gen[merchant], ref, target, self.gen[target], 1234, "CNY",
                         _shares(view))
                )  # fmt: skip
        elif what == "refund":
            rows = self.run(read(select(Refund.payment_id, Refund.amount).where(Refund.ref == ref)))
            if rows:
                pid = rows[0][0]
                pref = self.run(read(select(Payment.ref).where(Payment.id == pid)))[0][0]
                p = next(p for p in self.paid if p.ref == pref)
                p.refunded += 1
                self.refunds.append(Refunded(p, ref, 1))
        elif what == "terminate":
            status = self.run(read(select(Member.status).where(Member.jid == target)))[0][0]
            if status != "active":
                self.member_ended(target, status)
        else:
            for (jid,) in self.run(read(select(Member.jid).where(Member.jid.like("late%")))):
                if jid not in self.status:
                    self.member_joined(jid, "user")

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def nothing_broken(self) -> None:
        problems = self.run(invariant_problems(self.h.svc, self.regions))
        assert not problems, "\n".join(problems)

    @invariant()
    def every_answer_recorded_once(self) -> None:
        """Each acknowledged payment and refund is stored once, with what was answered."""

        async def stored() -> tuple[dict[str, int], dict[str, int], int]:
            async with self.h.svc.ctx.db.engine.connect() as conn:
                pays = dict(
                    (str(r), int(a))
                    for r, a in await conn.execute(select(Payment.ref, Payment.amount))
                )
                refunds = dict(
                    (str(r), int(a))
                    for r, a in await conn.execute(select(Refund.ref, Refund.amount))
                )
                count = (
                    await conn.execute(select(func.count()).select_from(Withdrawal))
                ).scalar_one()
                return pays, refunds, int(count)

        pays, refunds, withdrawals = self.run(stored())
        assert pays == {p.ref: p.amount for p in self.paid}
        assert refunds == {r.ref: r.amount for r in self.refunds}
        assert withdrawals == len(self.withdrawals)


def _run(template: tuple[Path, dict[str, tuple[str | None, int]]], **kw: Any) -> None:
    ServiceMachine.template, ServiceMachine.regions = template
    run_state_machine_as_test(
        ServiceMachine,
        settings=settings(
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            **kw,
        ),
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One migrated database with the regions and the policy, copied for each example."""
    path = tmp_path_factory.mktemp("model") / "template.sqlite3"
    loop = asyncio.new_event_loop()
    try:
        regions = loop.run_until_complete(build_template(path))
    finally:
        loop.close()
    return path, regions


def test_service_model(template: tuple[Path, dict[str, Any]]) -> None:
    STATS.clear()
    _run(template, max_examples=25, stateful_step_count=30)
    print("\nstateful:", dict(sorted(STATS.items())))


@pytest.mark.soak
def test_service_model_soak(template: tuple[Path, dict[str, Any]]) -> None:
    STATS.clear()
    _run(template, max_examples=300, stateful_step_count=80)
    print("\nstateful soak:", dict(sorted(STATS.items())))


def test_model_walkthrough(template: tuple[Path, dict[str, Any]]) -> None:
    """One fixed run through every rule, so each path (withdrawals above all, which random
    runs reach only after a payment and a hold) is taken on every `make test`."""
    ServiceMachine.template, ServiceMachine.regions = template
    m = ServiceMachine()
    try:
        steps: list[Callable[[], None]] = [
            lambda: m.first_merchant("440305", agents=True, money=True),
            lambda: m.register("fresh", 0, 3, 1),
            lambda: m.bot(0, by_admin=False, unlink=1),
            lambda: m.pay(1, 4, 10**6, "CNY", replay=1, stranger=1),
            lambda: m.pay(1, 4, 10**6, "CNY", replay=0, stranger=1),
            lambda: m.refund(0, 40, replay=1),
            lambda: m.refund(0, 40, replay=0),
            lambda: m.hold_ends(),
            lambda: m.withdraw(0, 50, "CNY", rich=True),
            lambda: m.decide(0, approve=True, by_admin=1),
            lambda: m.withdraw(0, 50, "CNY", rich=True),
            lambda: m.decide(1, approve=False, by_admin=1),
            lambda: m.decide(0, approve=False, by_admin=1),  # already approved: conflict
            lambda: m.refund(1, 100, replay=1),  # after settlement: from available
            lambda: m.crash(),
            lambda: m.cancel_in_flight(3, 0, "pay"),
            lambda: m.reassign(5, 3),
            lambda: m.set_policy(1, by_admin=1),
            lambda: m.pay(0, 5, 123457, "CNY", replay=1, stranger=1),
            lambda: m.end_membership("terminate", 4, as_admin=1),
            lambda: m.end_membership("delete", 3, as_admin=1),
            lambda: m.cancel_in_flight(0, 1, "terminate"),
            lambda: m.register("member", 3, 0, 1),
            lambda: m.withdraw(3, 50, "CNY", rich=False),
        ]
        for step in steps:
            step()
            m.nothing_broken()
            m.every_answer_recorded_once()
        assert m.withdrawals, "the walkthrough reached no withdrawal"
    finally:
        m.teardown()
