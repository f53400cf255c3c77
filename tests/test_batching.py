"""The batched payment path: group commit, answers per item, and the chain cache.

Service-level (the payment use case as the XMPP layer calls it) on both databases; the
digest of notifications is checked through Prosody with a real client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from imserver.service.context import Context
from imserver.service.errors import ServiceError
from imserver.service.membership import Location
from imserver.service.money_views import DistributionView
from imserver.service.registry import Services
from imserver.store.db import Database
from imserver.store.models import LedgerTxn, OutboxMessage, Payment, PaymentShare
from tests.conftest import Service
from tests.support.clients import Client

DEFAULT_POLICY = {
    "pool-bp": "1000",
    "referral-bp": "3000 2000",
    "district-bp": "1500",
    "city-bp": "1000",
    "province-bp": "500",
    "allow-third-level": "false",
}


@pytest.fixture(autouse=True)
async def ledger_stays_balanced(service: Service) -> AsyncIterator[None]:
    yield
    report = await service.app.services.ledger.check()
    assert report.ok, report.problems


@dataclass
class Net:
    """merchant <- alice <- bob <- carol (the payer), agents at the three levels."""

    svc: Services
    admin: str
    merchant: str
    alice: str
    bob: str
    carol: str
    agents: tuple[str, str, str]  # district, city, province

    async def pay(self, ref: str, amount: int = 10000, **kw: Any) -> DistributionView:
        payer = kw.pop("payer", self.carol)
        sender = kw.pop("sender", self.merchant)
        return await self.svc.payments.pay(sender, ref, payer, str(amount), "CNY", **kw)


async def network(service: Service) -> Net:
    svc = service.app.services
    admin = service.config.admins[0]
    agents = tuple(service.new_jid(p) for p in ("district", "city", "province"))
    for jid, region in zip(agents, ("440305", "440300", "440000"), strict=True):
        await svc.membership.assign_agent(admin, jid, region)
    merchant = service.new_jid("shop")
    await svc.membership.add_merchant(admin, merchant, "Tea House", None, Location(region="440305"))
    alice, bob, carol = (service.new_jid(p) for p in ("alice", "bob", "carol"))
    await svc.membership.register(alice, merchant)
    await svc.membership.register(bob, alice)
    await svc.membership.register(carol, bob)
    return Net(svc, admin, merchant, alice, bob, carol, agents)  # type: ignore[arg-type]


def split(view: DistributionView) -> list[tuple[str, str, str | None, int]]:
    return [(s.role, str(s.level or s.scope or ""), s.jid, s.amount) for s in view.shares]


async def count(service: Service, stmt: Any) -> int:
    async with service.app.db.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


def condition(outcome: object) -> str:
    assert isinstance(outcome, ServiceError), outcome
    return outcome.condition


async def test_one_batch_answers_each_item_on_its_own(service: Service) -> None:
    n = await network(service)
    tag = service.new_jid("b").split("@")[0]
    stored = await n.pay(f"{tag}-stored", 1000)
    writer = n.svc.payments.writer
    batches, txns = writer.batches, await count(service, select(func.count(LedgerTxn.id)))
    outcomes = await asyncio.gather(
        n.pay(f"{tag}-stored", 1001),  # the same id with another amount
        n.pay(f"{tag}-stored", 1000),  # a repeat of what is stored
        n.pay(f"{tag}-nobody", 1000, payer=service.new_jid("nobody")),
        n.pay(f"{tag}-bad", -5),
        *(n.pay(f"{tag}-good-{i}", 1000 + i) for i in range(6)),
        return_exceptions=True,
    )
    assert writer.batches == batches + 1, "submitted together, committed together"
    assert condition(outcomes[0]) == "conflict"
    assert outcomes[1] == stored
    assert condition(outcomes[2]) == "item-not-found"
    assert condition(outcomes[3]) == "bad-request"
    good = outcomes[4:]
    assert all(isinstance(v, DistributionView) for v in good)
    assert [v.amount for v in good] == [1000 + i for i in range(6)]  # type: ignore[union-attr]
    for view in good:
        assert sum(s.amount for s in view.shares) == view.amount  # type: ignore[union-attr]
    # Only the good ones were written: six payments, six movements, seven shares each.
    refs = select(func.count(Payment.id)).where(Payment.ref.like(f"{tag}-%"))
    assert await count(service, refs) == 7
    assert await count(service, select(func.count(LedgerTxn.id))) == txns + 6
    shares = (
        select(func.count())
        .select_from(PaymentShare)
        .join(Payment, Payment.id == PaymentShare.payment_id)
        .where(Payment.ref.like(f"{tag}-good-%"))
    )
    assert await count(service, shares) == 6 * 7
    # Each answer is what a repeat returns from the database.
    for i, view in enumerate(good):
        assert await n.pay(f"{tag}-good-{i}", 1000 + i) == view


async def test_the_same_id_twice_in_one_batch_is_distributed_once(service: Service) -> None:
    n = await network(service)
    tag = service.new_jid("d").split("@")[0]
    batches = n.svc.payments.writer.batches
    first, second, other = await asyncio.gather(
        n.pay(f"{tag}-1", 5000),
        n.pay(f"{tag}-1", 5000),
        n.pay(f"{tag}-1", 5001),
        return_exceptions=True,
    )
    assert n.svc.payments.writer.batches == batches + 1
    assert isinstance(first, DistributionView) and first == second
    assert condition(other) == "conflict"
    assert (
        await count(service, select(func.count(Payment.id)).where(Payment.ref == f"{tag}-1")) == 1
    )
    earned = select(func.count(OutboxMessage.id)).where(
        OutboxMessage.payload.like(f'%"payment": "{tag}-1"%')
    )
    assert await count(service, earned) == 5  # two referrers, three agents: once each


async def test_the_next_payment_pays_by_the_new_state(service: Service) -> None:
    """Right after a repair, an agent replacement, a policy change and a bot unlink, the
    cached chains give way: the next payment pays by what the database now says. The
    repair is made by a second set of services on its own database handle, as another
    process would."""
    n = await network(service)
    tag = service.new_jid("s").split("@")[0]
    before = await n.pay(f"{tag}-0")  # fills the cache with carol's chains
    assert split(before)[:2] == [("referrer", "1", n.bob, 300), ("referrer", "2", n.alice, 200)]

    other_db = Database(service.config.database.url)
    other = Services.build(Context(other_db, service.config, service.app.ctx.clock))
    try:
        await other.repair.terminate(n.admin, n.bob, "left")
    finally:
        await other.close()
        await other_db.dispose()
    after_repair = await n.pay(f"{tag}-1")
    assert split(after_repair)[:2] == [
        ("referrer", "1", n.alice, 300),
        ("referrer", "2", n.merchant, 200),
    ]

    district = service.new_jid("district")
    await n.svc.membership.assign_agent(n.admin, district, "440305")
    after_agent = await n.pay(f"{tag}-2")
    assert ("agent", "district", district, 150) in split(after_agent)

    try:
        changed = await n.svc.policy.replace(
            n.admin, {**DEFAULT_POLICY, "pool-bp": "2000", "referral-bp": "5000"}, "test"
        )
        after_policy = await n.pay(f"{tag}-3")
        assert after_policy.policy == changed.version
        assert split(after_policy)[0] == ("referrer", "1", n.alice, 1000)
    finally:
        await n.svc.policy.replace(n.admin, dict(DEFAULT_POLICY), "restore")

    bot = service.new_jid("bot")
    await n.svc.bots.change(n.merchant, bot, None, "link")
    await n.pay(f"{tag}-4", sender=bot)  # the bot's merchant is now cached
    await n.svc.bots.change(n.merchant, bot, None, "unlink")
    with pytest.raises(ServiceError) as refused:
        await n.pay(f"{tag}-5", sender=bot)
    assert refused.value.condition == "forbidden"
    assert n.svc.payments.cache.resets >= 4


async def test_a_digest_carries_every_earning_once_per_window(service: Service) -> None:
    """Thirty payments in quick succession: the earner gets every earning exactly once,
    in at most one message per window."""
    n = await network(service)
    bob: Client = await service.client(n.bob)
    tag = service.new_jid("g").split("@")[0]
    window = service.config.notifications.window
    notifier = service.app.component.notifier
    rounds = notifier.rounds
    refs = [f"{tag}-{i}" for i in range(30)]
    for ref in refs:
        await n.pay(ref, 1000)
    got: list[str] = []
    messages = 0
    while len(got) < len(refs):
        msg = await asyncio.wait_for(bob.messages.get(), 20)
        found = [dict(e.xml.attrib) for e in msg["earnings"]]
        if msg["type"] != "chat" or not found:
            continue
        messages += 1
        got.extend(e["payment"] for e in found if e["payment"].startswith(tag))
    assert sorted(got) == sorted(refs), "every earning exactly once"
    # The sender runs one round per window at most and sends bob one message per round
    # (the test client reads in this loop, so arrival times say nothing of send times).
    assert messages <= notifier.rounds - rounds, (messages, notifier.rounds - rounds)
    assert messages < len(refs), "earnings were grouped"
    await asyncio.sleep(window * 3)
    assert bob.messages.empty(), "nothing more"


async def test_a_refund_after_the_merchant_ended_is_refused(service: Service) -> None:
    """The merchant a sender reports for is cached by payments; a refund reads the same
    cache and must see the termination (found by the stateful soak)."""
    n = await network(service)
    tag = service.new_jid("r").split("@")[0]
    await n.pay(f"{tag}-1")  # caches the merchant of the sender
    await n.svc.repair.terminate(n.admin, n.merchant, "closed")
    with pytest.raises(ServiceError) as refused:
        await n.svc.payments.refund(n.merchant, f"{tag}-r1", f"{tag}-1", "100")
    assert refused.value.condition == "forbidden"
