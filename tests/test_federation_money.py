"""Money of members from other XMPP servers (issue 16): their earnings are held longer,
and a domain blocked later earns nothing more (its places are vacancies) but keeps its
ledger.

Through the real Prosody fixture: its third domain, FAR_DOMAIN, is not one of the
component's member domains, so it stands for another server (the s2s link itself is in
tests/test_federation.py). The chain: the merchant, then alice of FAR_DOMAIN, then bob and
carol of ours; the district agent is of FAR_DOMAIN too. Carol pays.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from imserver.store.models import AuditEntry
from tests.conftest import DOMAIN, FAR_DOMAIN, Service
from tests.support.clients import Client, expect_error
from tests.support.commands import say
from tests.support.model import money_problems
from tests.support.network import Network, assign_agent, build_network, chain_of, member_of
from tests.test_payments import balance_of, settle_what_came_before, shares_of


@dataclass
class Mixed:
    net: Network
    alice: Client  # of FAR_DOMAIN, under the merchant
    bob: Client  # ours, under alice
    carol: Client  # ours, under bob: the payer
    agent: Client  # of FAR_DOMAIN: the district's agent
    bot: Client


async def _trust(service: Service, trust: str) -> str:
    return await say(await service.admin(), service.jid, f"trust {FAR_DOMAIN} {trust} test")


@pytest.fixture
async def mixed(service: Service) -> AsyncIterator[Mixed]:
    net = await build_network(service)
    alice = await service.client(service.new_jid("alice", FAR_DOMAIN))
    bob, carol = [await service.client(service.new_jid(p)) for p in ("bob", "carol")]
    await alice.dist.register(service.jid, net.merchant.bare)  # invite-only: a local referrer
    await bob.dist.register(service.jid, alice.bare)  # ours: any referrer will do
    await carol.dist.register(service.jid, bob.bare)
    agent = await service.client(service.new_jid("agent", FAR_DOMAIN))
    await assign_agent(await service.admin(), service.jid, agent.bare, "440305")
    bot = await service.client(service.new_jid("bot"))
    await net.merchant.dist.bot(service.jid, bot.bare)
    yield Mixed(net, alice, bob, carol, agent, bot)
    await _trust(service, "default")
    report = await service.app.services.ledger.check()
    assert report.ok, report.problems
    assert await money_problems(service.app.services.ctx.db) == []


def _earned(answer: object, who: Client) -> int:
    return sum(amount for _, _, jid, amount in shares_of(answer) if jid == who.bare)  # type: ignore[arg-type]


def _platform(answer: object) -> int:
    return sum(a for role, _, _, a in shares_of(answer) if role == "platform")  # type: ignore[arg-type]


async def test_remote_earnings_settle_after_the_longer_hold(service: Service, mixed: Mixed) -> None:
    local_days = service.config.policy.hold_days
    remote_days = service.config.federation.hold_days
    assert remote_days > local_days + 2, "the config must hold remote earnings longer"
    settle = service.app.services.settlement.settle
    await settle_what_came_before(service)
    m = mixed
    answer = await m.bot.dist.pay(service.jid, "fed-1", m.carol.bare, 100000, "CNY")
    alice, bob, agent = (_earned(answer, x) for x in (m.alice, m.bob, m.agent))
    assert alice > 0 and bob > 0 and agent > 0
    assert await balance_of(m.alice, service) == (alice, 0, 0)
    # After the policy's hold: ours settle, the remote members' earnings stay pending.
    service.clock.advance(days=local_days + 1)
    assert await settle() == 1
    assert await balance_of(m.bob, service) == (0, bob, 0)
    assert await balance_of(m.alice, service) == (alice, 0, 0)
    assert await balance_of(m.agent, service) == (agent, 0, 0)
    # A remote member cannot withdraw what is still held.
    await expect_error(m.alice.dist.withdraw(service.jid, alice, "CNY"), "not-acceptable")
    # A refund in between takes the held part from pending, the settled part from
    # available (the money check of the fixture proves every account).
    refund = await m.bot.dist.refund(service.jid, "fed-1-r", "fed-1", 50000)
    back = {jid: -a for _, _, jid, a in shares_of(refund)}
    assert await balance_of(m.alice, service) == (alice - back[m.alice.bare], 0, 0)
    assert await balance_of(m.bob, service) == (0, bob - back[m.bob.bare], 0)
    # After the remote hold: theirs settle too, once.
    service.clock.advance(days=remote_days - local_days)
    assert await settle() == 1
    assert await settle() == 0
    assert await balance_of(m.alice, service) == (0, alice - back[m.alice.bare], 0)
    assert await balance_of(m.agent, service) == (0, agent - back[m.agent.bare], 0)


async def test_a_domain_blocked_later_earns_nothing_more_but_keeps_its_ledger(
    service: Service, mixed: Mixed
) -> None:
    m = mixed
    first = await m.bot.dist.pay(service.jid, "fed-b1", m.carol.bare, 100000, "CNY")
    alice, agent = _earned(first, m.alice), _earned(first, m.agent)
    assert alice > 0 and agent > 0
    answer = await _trust(service, "blocked")
    assert "earnings of its" in answer and "go to the platform" in answer, answer
    # Their places are vacancies now: the platform takes their shares, the rest is as it was.
    second = await m.bot.dist.pay(service.jid, "fed-b2", m.carol.bare, 100000, "CNY")
    assert _earned(second, m.alice) == 0 and _earned(second, m.agent) == 0
    assert _platform(second) == _platform(first) + alice + agent
    assert _earned(second, m.bob) == _earned(first, m.bob)
    # The audit log says so, with how many members it concerns.
    async with service.app.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(AuditEntry.details)
                .where(AuditEntry.action == "domain.trust")
                .order_by(AuditEntry.id.desc())
                .limit(1)
            )
        ).scalars()
        details = json.loads(next(iter(rows)))
    assert details["to"] == "blocked" and details["members"] >= 2, details
    assert "platform" in details["earnings"], details
    # Unblocked: the ledger was kept, and earnings resume with the next payment.
    answer = await _trust(service, "open")
    assert "resume" in answer, answer
    assert await balance_of(m.alice, service) == (alice, 0, 0)
    third = await m.bot.dist.pay(service.jid, "fed-b3", m.carol.bare, 100000, "CNY")
    assert (_earned(third, m.alice), _earned(third, m.agent)) == (alice, agent)


async def test_the_same_local_part_on_two_servers_is_two_members(
    service: Service, mixed: Mixed
) -> None:
    name = service.new_jid("twin").split("@")[0]
    ours = await service.client(f"{name}@{DOMAIN}")
    theirs = await service.client(f"{name}@{FAR_DOMAIN}")
    mine = member_of(await ours.dist.register(service.jid, mixed.bob.bare))
    other = member_of(await theirs.dist.register(service.jid, mixed.net.merchant.bare))
    assert (mine["jid"], other["jid"]) == (ours.bare, theirs.bare)
    assert mine["rule-number"] != other["rule-number"]
    # Each chain is its own: one pays, the other's upline earns nothing of it.
    assert [j for _, j, _ in chain_of(await ours.dist.chain(service.jid))["upline"]][:2] == [
        mixed.bob.bare,
        mixed.alice.bare,
    ]
    assert [j for _, j, _ in chain_of(await theirs.dist.chain(service.jid))["upline"]][:1] == [
        mixed.net.merchant.bare
    ]
    paid = await mixed.bot.dist.pay(service.jid, "fed-twin", theirs.bare, 10000, "CNY")
    assert _earned(paid, mixed.bob) == 0 and _earned(paid, mixed.alice) == 0
