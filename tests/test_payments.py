"""Payments end to end: real Prosody, the component, real clients, both databases.

After every test the ledger's invariants hold (the same check as `imserver ledger check`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from slixmpp import Iq, Message

from imserver.store.ledger import LedgerReport
from plugins.distribution import NS
from tests.conftest import OTHER_DOMAIN, Service
from tests.support.clients import Client, expect_error
from tests.support.network import Network, add_merchant, build_network

DEFAULT_POLICY = {"pool_bp": 1000, "referral_bp": [3000, 2000], "agent_bp": (1500, 1000, 500)}


@pytest.fixture(autouse=True)
async def ledger_stays_balanced(service: Service) -> AsyncIterator[None]:
    """After every test: every currency sums to zero and balances equal their entries."""
    yield
    report = await service.app.services.ledger.check()
    assert report.ok, report.problems


@dataclass
class Chain:
    """A full chain: payer carol under bob under alice under the merchant, three agents."""

    net: Network
    alice: Client
    bob: Client
    carol: Client
    bot: Client


async def full_chain(service: Service) -> Chain:
    net = await build_network(service)
    alice, bob, carol = [
        await service.client(service.new_jid(p)) for p in ("alice", "bob", "carol")
    ]
    await alice.dist.register(service.jid, net.merchant.bare)
    await bob.dist.register(service.jid, alice.bare)
    await carol.dist.register(service.jid, bob.bare)
    bot = await service.client(service.new_jid("bot"))
    await net.merchant.dist.bot(service.jid, bot.bare)
    return Chain(net, alice, bob, carol, bot)


def shares_of(iq: Iq) -> list[tuple[str, str, str, int]]:
    """(role, level or scope, jid, amount) of each share of a distribution answer."""
    return [
        (s["role"], s["level"] or s["scope"], s["jid"], int(s["amount"]))
        for s in iq["distribution"]["shares"]
    ]


def balances(iq: Iq) -> dict[str, tuple[int, int, int]]:
    """currency -> (pending, available, reserved) of a balance answer."""
    return {
        a["currency"]: (int(a["pending"]), int(a["available"]), int(a["reserved"]))
        for a in iq["balance"]["amounts"]
    }


async def balance_of(client: Client, service: Service) -> tuple[int, int, int]:
    return balances(await client.dist.balance(service.jid)).get("CNY", (0, 0, 0))


async def settle_what_came_before(service: Service) -> None:
    """Move the clock past every hold and settle: whatever earlier tests of the session
    left pending is settled, so that a test counting settlements counts its own."""
    config = service.config
    service.clock.advance(days=max(config.policy.hold_days, config.federation.hold_days) + 1)
    await service.app.services.settlement.settle()


async def report(service: Service) -> LedgerReport:
    return await service.app.services.ledger.check()


async def next_message(client: Client, timeout: float = 10.0) -> Message:
    while True:
        msg = await asyncio.wait_for(client.messages.get(), timeout)
        if msg["type"] == "chat" and msg.xml.find(f"{{{NS}}}earning") is not None:
            return msg


def earnings(msg: Message) -> list[dict[str, str]]:
    return [dict(e.xml.attrib) for e in msg["earnings"]]


async def test_full_chain_gives_the_default_policy_shares(service: Service) -> None:
    c = await full_chain(service)
    answer = await c.bot.dist.pay(service.jid, "order-1", c.carol.bare, 10000, "CNY")
    d = answer["distribution"]
    assert (d["payment"], d["merchant"], d["amount"], d["currency"]) == (
        "order-1",
        c.net.merchant.bare,
        "10000",
        "CNY",
    )
    assert d["policy"].isdigit()
    assert shares_of(answer) == [
        ("referrer", "1", c.bob.bare, 300),
        ("referrer", "2", c.alice.bare, 200),
        ("agent", "district", c.net.district_agent.bare, 150),
        ("agent", "city", c.net.city_agent.bare, 100),
        ("agent", "province", c.net.province_agent.bare, 50),
        ("platform", "", "", 200),
        ("merchant", "", c.net.merchant.bare, 9000),
    ]
    assert await balance_of(c.bob, service) == (300, 0, 0)
    assert await balance_of(c.net.province_agent, service) == (50, 0, 0)
    # The earner hears of it: chat, human body, earning payload, store hint.
    msg = await next_message(c.bob)
    assert msg["type"] == "chat"
    assert msg["body"] == (f"you earned ¥3.00 from {c.carol.bare}'s purchase at Tea House")
    assert earnings(msg) == [
        {
            "payment": "order-1",
            "merchant": c.net.merchant.bare,
            "payer": c.carol.bare,
            "amount": "300",
            "currency": "CNY",
            "role": "referrer",
            "level": "1",
        }
    ]
    assert msg.xml.find("{urn:xmpp:hints}store") is not None
    agent_msg = await next_message(c.net.city_agent)
    assert earnings(agent_msg)[0]["scope"] == "city"
    assert earnings(agent_msg)[0]["amount"] == "100"


async def test_vacant_levels_go_to_the_platform(service: Service) -> None:
    admin = await service.admin()
    shop = await service.client(service.new_jid("shop"))
    # 110101 (东城区, Beijing): no agents there; the payer's only upline is the merchant.
    await add_merchant(admin, service.jid, shop.bare, region="110101", name="Noodle Bar")
    payer = await service.client()
    await payer.dist.register(service.jid, shop.bare)
    answer = await shop.dist.pay(service.jid, "v-1", payer.bare, 10001, "CNY")
    assert shares_of(answer) == [
        ("referrer", "1", shop.bare, 300),
        ("platform", "", "", 700),
        ("merchant", "", shop.bare, 9001),
    ]
    assert sum(s[3] for s in shares_of(answer)) == 10001


async def test_fifty_identical_payments_at_once_distribute_once(service: Service) -> None:
    c = await full_chain(service)
    before = await report(service)
    answers = await asyncio.gather(
        *(
            c.bot.dist.pay(service.jid, "dup-1", c.carol.bare, 5000, "CNY", timeout=60)
            for _ in range(50)
        )
    )
    first = answers[0]["distribution"]
    assert all(str(a["distribution"]) == str(first) for a in answers)
    after = await report(service)
    assert after.movements == before.movements + 1
    assert await balance_of(c.bob, service) == (150, 0, 0)
    # The same id with anything different is a conflict, and writes nothing.
    await expect_error(c.bot.dist.pay(service.jid, "dup-1", c.carol.bare, 5001, "CNY"), "conflict")
    await expect_error(c.bot.dist.pay(service.jid, "dup-1", c.bob.bare, 5000, "CNY"), "conflict")
    await expect_error(c.bot.dist.pay(service.jid, "dup-1", c.carol.bare, 5000, "USD"), "conflict")
    assert (await report(service)).entries == after.entries
    # The merchant's own JID reports for the same merchant: the same answer again.
    again = await c.net.merchant.dist.pay(service.jid, "dup-1", c.carol.bare, 5000, "CNY")
    assert str(again["distribution"]) == str(first)


async def test_payment_validation(service: Service) -> None:
    c = await full_chain(service)
    pay = c.bot.dist.pay
    for bad in ("0", "-5", "1.5", "1e3", " 12", "12345678901234567890123", "100000001"):
        iq = c.bot.iq(service.jid, "set")
        p = iq["payment"]
        p["id"], p["payer"], p["amount"], p["currency"] = "bad-1", c.carol.bare, bad, "CNY"
        await expect_error(iq.send(timeout=10), "bad-request")
    await expect_error(pay(service.jid, "bad-2", c.carol.bare, 100, "XXX"), "bad-request")
    await expect_error(pay(service.jid, "bad-3", c.carol.bare, 100, "GBP"), "bad-request")
    await expect_error(pay(service.jid, "", c.carol.bare, 100, "CNY"), "bad-request")
    await expect_error(pay(service.jid, "bad-4", "nobody@localhost", 100, "CNY"), "item-not-found")
    await expect_error(pay(service.jid, "bad-5", "not a jid", 100, "CNY"), "bad-request")
    # The per-currency upper bound is inclusive.
    await pay(service.jid, "cap-1", c.carol.bare, 100_000_000, "CNY")
    # A terminated payer.
    admin = await service.admin()
    await admin.dist.terminate(service.jid, c.alice.bare, reason="test")
    await expect_error(pay(service.jid, "bad-6", c.alice.bare, 100, "CNY"), "not-acceptable")


async def test_every_forbidden_sender_is_refused_and_nothing_is_written(service: Service) -> None:
    c = await full_chain(service)
    admin = await service.admin()
    other_shop = await service.client(service.new_jid("othershop"))
    await add_merchant(admin, service.jid, other_shop.bare, name="Other Shop")
    other_bot = await service.client(service.new_jid("otherbot"))
    await admin.dist.bot(service.jid, other_bot.bare, other_shop.bare)
    foreign = await service.client(service.new_jid("far", OTHER_DOMAIN))
    unlinked = await service.client(service.new_jid("bot"))
    shop = c.net.merchant.bare
    await c.bot.dist.pay(service.jid, "f-1", c.carol.bare, 1000, "CNY", merchant=shop)
    before = await report(service)
    senders = (c.carol, c.bob, other_shop, other_bot, foreign, unlinked, admin)
    for sender in senders:
        await expect_error(
            sender.dist.pay(service.jid, "f-2", c.carol.bare, 1000, "CNY", merchant=shop),
            "forbidden",
        )
        await expect_error(
            sender.dist.refund(service.jid, "r-1", "f-1", 100, merchant=shop), "forbidden"
        )
    # Without naming the merchant: everyone but a merchant (or its bot) is refused, and
    # another merchant only ever reaches its own payments.
    for sender in (c.carol, foreign, unlinked, admin):
        await expect_error(
            sender.dist.pay(service.jid, "f-3", c.carol.bare, 1000, "CNY"), "forbidden"
        )
    for sender in (other_shop, other_bot):
        await expect_error(sender.dist.refund(service.jid, "r-1", "f-1", 100), "item-not-found")
    after = await report(service)
    assert (after.movements, after.entries) == (before.movements, before.entries)


async def test_bot_links(service: Service) -> None:
    c = await full_chain(service)
    admin = await service.admin()
    other_shop = await service.client(service.new_jid("othershop"))
    await add_merchant(admin, service.jid, other_shop.bare, name="Other Shop")
    bot2 = service.new_jid("bot")
    # A merchant manages only its own bots; users never.
    await expect_error(c.net.merchant.dist.bot(service.jid, bot2, other_shop.bare), "forbidden")
    await expect_error(c.carol.dist.bot(service.jid, bot2, c.net.merchant.bare), "forbidden")
    answer = await admin.dist.bot(service.jid, bot2, c.net.merchant.bare)
    assert dict(answer["bot"].xml.attrib) == {
        "jid": bot2,
        "merchant": c.net.merchant.bare,
        "status": "linked",
    }
    await admin.dist.bot(service.jid, bot2, c.net.merchant.bare)  # twice: harmless
    await expect_error(admin.dist.bot(service.jid, bot2, other_shop.bare), "conflict")
    await expect_error(admin.dist.bot(service.jid, c.carol.bare, other_shop.bare), "conflict")
    await expect_error(admin.dist.bot(service.jid, service.new_jid(), c.carol.bare), "bad-request")
    await expect_error(
        admin.dist.bot(service.jid, bot2, c.net.merchant.bare, action="drop"), "bad-request"
    )
    # Unlinked, the bot may no longer report payments.
    await c.net.merchant.dist.bot(service.jid, c.bot.bare, action="unlink")
    await expect_error(c.bot.dist.pay(service.jid, "b-1", c.carol.bare, 100, "CNY"), "forbidden")
    await expect_error(
        c.net.merchant.dist.bot(service.jid, c.bot.bare, action="unlink"), "item-not-found"
    )
    log = await admin.dist.audit(service.jid, max_entries=10)
    actions = [(i["action"], i["target"]) for i in log["audit"]["entries"]]
    assert ("bot.unlink", c.bot.bare) in actions and ("bot.link", bot2) in actions


async def test_policy_replaced_at_run_time_is_versioned(service: Service) -> None:
    c = await full_chain(service)
    admin = await service.admin()
    old = (await c.carol.dist.policy(service.jid))["policy"]
    assert old["pool-bp"] == "1000" and old["referral-bp"] == "3000 2000"
    first = await c.bot.dist.pay(service.jid, "pv-1", c.carol.bare, 10000, "CNY")
    await expect_error(
        c.net.merchant.dist.set_policy(service.jid, **DEFAULT_POLICY),
        "forbidden",  # type: ignore[arg-type]
    )
    await expect_error(
        admin.dist.set_policy(
            service.jid, pool_bp=1000, referral_bp=[3000, 2000, 1000], agent_bp=(1500, 1000, 500)
        ),
        "bad-request",
    )
    await expect_error(
        admin.dist.set_policy(
            service.jid, pool_bp=1000, referral_bp=[6000, 2000], agent_bp=(1500, 1000, 500)
        ),
        "bad-request",
    )
    try:
        new = await admin.dist.set_policy(
            service.jid,
            pool_bp=2000,
            referral_bp=[5000],
            agent_bp=(1000, 1000, 1000),
            reason="test",
        )
        version = int(new["policy"]["version"])
        assert version > int(old["version"])
        second = await c.bot.dist.pay(service.jid, "pv-2", c.carol.bare, 10000, "CNY")
        assert second["distribution"]["policy"] == str(version)
        assert shares_of(second) == [
            ("referrer", "1", c.bob.bare, 1000),
            ("agent", "district", c.net.district_agent.bare, 200),
            ("agent", "city", c.net.city_agent.bare, 200),
            ("agent", "province", c.net.province_agent.bare, 200),
            ("platform", "", "", 400),
            ("merchant", "", c.net.merchant.bare, 8000),
        ]
        # History is never rewritten: the first payment keeps its version and split.
        replay = await c.bot.dist.pay(service.jid, "pv-1", c.carol.bare, 10000, "CNY")
        assert str(replay["distribution"]) == str(first["distribution"])
    finally:
        await admin.dist.set_policy(service.jid, **DEFAULT_POLICY, reason="restore")  # type: ignore[arg-type]
    log = await admin.dist.audit(service.jid, max_entries=5)
    assert any(i["action"] == "policy.set" for i in log["audit"]["entries"])


def _refund_shares(iq: Iq) -> list[int]:
    return [s[3] for s in shares_of(iq)]


async def test_partial_and_full_refunds_before_settlement(service: Service) -> None:
    c = await full_chain(service)
    await c.bot.dist.pay(service.jid, "r-1", c.carol.bare, 10000, "CNY")
    part = await c.bot.dist.refund(service.jid, "rf-1", "r-1", 2500)
    d = part["distribution"]
    assert (d["payment"], d["refund"], d["amount"]) == ("r-1", "rf-1", "-2500")
    assert _refund_shares(part) == [-75, -50, -38, -25, -12, -50, -2250]
    assert sum(_refund_shares(part)) == -2500
    assert await balance_of(c.bob, service) == (225, 0, 0)
    # Idempotent on its own id; the same id with another amount is a conflict.
    again = await c.bot.dist.refund(service.jid, "rf-1", "r-1", 2500)
    assert str(again["distribution"]) == str(d)
    await expect_error(c.bot.dist.refund(service.jid, "rf-1", "r-1", 2400), "conflict")
    # More than what is left: bad-request, nothing written.
    before = await report(service)
    await expect_error(c.bot.dist.refund(service.jid, "rf-2", "r-1", 7501), "bad-request")
    await expect_error(c.bot.dist.refund(service.jid, "rf-2", "nope", 1), "item-not-found")
    assert (await report(service)).entries == before.entries
    rest = await c.bot.dist.refund(service.jid, "rf-2", "r-1", 7500)
    assert _refund_shares(rest) == [-225, -150, -112, -75, -38, -150, -6750]
    for who in (c.bob, c.alice, c.net.district_agent, c.net.city_agent, c.net.province_agent):
        assert await balance_of(who, service) == (0, 0, 0)
    await expect_error(c.bot.dist.refund(service.jid, "rf-3", "r-1", 1), "bad-request")
    # Earners hear of the reversal (coalesced with other earnings or not).
    msgs: list[Message] = []
    while sum(int(e["amount"]) for m in msgs for e in earnings(m) if e.get("refund")) != -300:
        msgs.append(await next_message(c.bob))
    assert sum(int(e["amount"]) for m in msgs for e in earnings(m)) == 0
    assert any("was refunded" in (m["body"] or "") for m in msgs)


async def test_refund_after_settlement_can_make_available_negative(service: Service) -> None:
    c = await full_chain(service)
    await c.bot.dist.pay(service.jid, "s-1", c.carol.bare, 100000, "CNY")
    service.clock.advance(days=8)
    assert await service.app.services.settlement.settle() >= 1
    assert await balance_of(c.bob, service) == (0, 3000, 0)
    # Bob takes his money out; then the payment is refunded in full.
    w = await c.bob.dist.withdraw(service.jid, 3000, "CNY")
    await (await service.admin()).dist.decide_withdrawal(
        service.jid, w["withdrawal"]["id"], "approve"
    )
    await c.bot.dist.refund(service.jid, "s-r1", "s-1", 40000)
    assert await balance_of(c.bob, service) == (0, -1200, 0)
    await c.bot.dist.refund(service.jid, "s-r2", "s-1", 60000)
    assert await balance_of(c.bob, service) == (0, -3000, 0)
    # While negative, no withdrawal.
    await expect_error(c.bob.dist.withdraw(service.jid, 1000, "CNY"), "not-acceptable")


async def test_withdrawals(service: Service) -> None:
    c = await full_chain(service)
    admin = await service.admin()
    await c.bot.dist.pay(service.jid, "w-1", c.carol.bare, 100000, "CNY")
    # Pending money cannot be withdrawn.
    await expect_error(c.bob.dist.withdraw(service.jid, 1000, "CNY"), "not-acceptable")
    service.clock.advance(days=8)
    await service.app.services.settlement.settle()
    assert await balance_of(c.bob, service) == (0, 3000, 0)
    await expect_error(c.bob.dist.withdraw(service.jid, 999, "CNY"), "not-acceptable")  # minimum
    await expect_error(c.bob.dist.withdraw(service.jid, 100, "XXX"), "bad-request")
    first = (await c.bob.dist.withdraw(service.jid, 2000, "CNY", ref="w-a"))["withdrawal"]
    assert (first["status"], first["amount"], first["jid"]) == ("pending", "2000", c.bob.bare)
    assert await balance_of(c.bob, service) == (0, 1000, 2000)
    # The same id again: the same withdrawal, nothing more reserved.
    again = (await c.bob.dist.withdraw(service.jid, 2000, "CNY", ref="w-a"))["withdrawal"]
    assert again["id"] == first["id"]
    # Asked twice: the reserved amount is no longer available.
    await expect_error(c.bob.dist.withdraw(service.jid, 2000, "CNY"), "not-acceptable")
    second = (await c.bob.dist.withdraw(service.jid, 1000, "CNY"))["withdrawal"]
    assert await balance_of(c.bob, service) == (0, 0, 3000)
    # Only an admin decides.
    await expect_error(
        c.bob.dist.decide_withdrawal(service.jid, first["id"], "approve"), "forbidden"
    )
    mine = await c.bob.dist.withdrawals(service.jid)
    assert [w["id"] for w in mine["withdrawals"]["withdrawal_items"]] == [first["id"], second["id"]]
    listed = await admin.dist.withdrawals(service.jid, status="pending")
    assert {first["id"], second["id"]} <= {
        w["id"] for w in listed["withdrawals"]["withdrawal_items"]
    }
    ok = await admin.dist.decide_withdrawal(service.jid, first["id"], "approve", reason="paid")
    assert ok["withdrawal"]["status"] == "approved"
    assert await balance_of(c.bob, service) == (0, 0, 1000)
    no = await admin.dist.decide_withdrawal(service.jid, second["id"], "reject", reason="no")
    assert no["withdrawal"]["status"] == "rejected"
    assert await balance_of(c.bob, service) == (0, 1000, 0)
    # Deciding again: the same decision is harmless, the other one a conflict.
    await admin.dist.decide_withdrawal(service.jid, first["id"], "approve")
    await expect_error(admin.dist.decide_withdrawal(service.jid, first["id"], "reject"), "conflict")
    await expect_error(admin.dist.decide_withdrawal(service.jid, "999999999", "reject"),
                       "item-not-found")  # fmt: skip
    stranger = await service.client()
    await expect_error(stranger.dist.withdraw(service.jid, 1000, "CNY"), "registration-required")
    log = await admin.dist.audit(service.jid, max_entries=10)
    actions = {i["action"] for i in log["audit"]["entries"]}
    assert {"withdrawal.approve", "withdrawal.reject"} <= actions


async def test_settlement_is_idempotent_and_catches_up(service: Service) -> None:
    c = await full_chain(service)
    settle = service.app.services.settlement.settle
    await settle_what_came_before(service)
    for day in range(3):
        await c.bot.dist.pay(service.jid, f"cu-{day}", c.carol.bare, 10000, "CNY")
        service.clock.advance(days=1)
    assert await balance_of(c.bob, service) == (900, 0, 0)
    assert await settle() == 0  # nothing has been held for 7 days yet
    service.clock.advance(days=5)  # day 8 of the first payment, day 6 of the last
    assert await settle() == 2
    assert await balance_of(c.bob, service) == (300, 600, 0)
    assert await settle() == 0  # twice: nothing more
    service.clock.advance(days=30)  # downtime: everything overdue is settled at once
    assert await settle() == 1
    assert await balance_of(c.bob, service) == (0, 900, 0)
    # Settling concurrently settles each payment once.
    await c.bot.dist.pay(service.jid, "cu-x", c.carol.bare, 10000, "CNY")
    service.clock.advance(days=8)
    counts = await asyncio.gather(*(settle() for _ in range(4)))
    assert sum(counts) == 1
    assert await balance_of(c.bob, service) == (0, 1200, 0)


async def test_the_scheduler_runs_the_settlement_job(service: Service) -> None:
    from datetime import UTC, datetime

    from imserver.jobs import SETTLE_JOB

    c = await full_chain(service)
    jobs = service.app.jobs
    job = jobs.scheduler.get_job(SETTLE_JOB)
    assert job is not None and job.next_run_time is not None
    await c.bot.dist.pay(service.jid, "job-1", c.carol.bare, 10000, "CNY")
    service.clock.advance(days=8)
    runs = jobs.runs
    job.modify(next_run_time=datetime.now(UTC))
    for _ in range(100):
        if jobs.runs > runs:
            break
        await asyncio.sleep(0.05)
    assert jobs.runs > runs
    assert await balance_of(c.bob, service) == (0, 300, 0)


async def test_statement_pages_with_rsm(service: Service) -> None:
    c = await full_chain(service)
    for i in range(5):
        await c.bot.dist.pay(service.jid, f"st-{i}", c.carol.bare, 1000 * (i + 1), "CNY")
    page = (await c.bob.dist.statement(service.jid, max_items=2))["statement"]
    entries = [dict(e.xml.attrib) for e in page["entries"]]
    assert [(e["kind"], e["bucket"], e["amount"], e["payment"]) for e in entries] == [
        ("payment", "pending", "30", "st-0"),
        ("payment", "pending", "60", "st-1"),
    ]
    rsm = page["rsm"]
    assert (rsm["count"], rsm["first_index"]) == ("5", "0")
    nxt = (await c.bob.dist.statement(service.jid, max_items=2, after=rsm["last"]))["statement"]
    assert [e["payment"] for e in nxt["entries"]] == ["st-2", "st-3"]
    assert nxt["rsm"]["first_index"] == "2"
    last = (await c.bob.dist.statement(service.jid, max_items=2, before=True))["statement"]
    assert [e["payment"] for e in last["entries"]] == ["st-3", "st-4"]
    prev = await c.bob.dist.statement(service.jid, max_items=2, before=last["rsm"]["first"])
    assert [e["payment"] for e in prev["statement"]["entries"]] == ["st-1", "st-2"]
    # Another member's statement: admins only.
    admin = await service.admin()
    other = await admin.dist.statement(service.jid, jid=c.bob.bare)
    assert other["statement"]["rsm"]["count"] == "5"
    await expect_error(c.carol.dist.statement(service.jid, jid=c.bob.bare), "forbidden")


async def test_notifications_wait_for_the_link_and_are_sent_once(service: Service) -> None:
    c = await full_chain(service)
    component = service.app.component
    payments = service.app.services.payments
    # Drop the link to Prosody; the component reconnects by itself.
    component.disconnect()
    for _ in range(100):
        if not component.connected_event.is_set():
            break
        await asyncio.sleep(0.02)
    # Committed while the link is down (as if the process had died after the commit).
    await payments.pay(c.net.merchant.bare, "nl-1", c.carol.bare, "10000", "CNY")
    await asyncio.wait_for(component.connected_event.wait(), 20)
    msg = await next_message(c.bob, timeout=20)
    assert earnings(msg)[0]["payment"] == "nl-1"
    await component.notifier.idle()
    assert await service.app.services.outbox.unsent() == 0
    # Never twice: another reconnect sends nothing more.
    component.disconnect()
    await asyncio.sleep(0.2)
    await asyncio.wait_for(component.connected_event.wait(), 20)
    await asyncio.sleep(0.5)
    assert c.bob.messages.empty()


async def test_earnings_within_the_window_are_coalesced(service: Service) -> None:
    c = await full_chain(service)
    payments = service.app.services.payments
    # Two payments committed before the outbox is drained: one message per earner.
    await payments.pay(c.net.merchant.bare, "co-1", c.carol.bare, "10000", "CNY")
    await payments.pay(c.net.merchant.bare, "co-2", c.carol.bare, "20000", "CNY")
    service.app.component.notifier.kick()
    msg = await next_message(c.bob)
    assert [e["payment"] for e in earnings(msg)] == ["co-1", "co-2"]
    assert "¥3.00" in msg["body"] and "¥6.00" in msg["body"]
    await asyncio.sleep(0.3)
    assert c.bob.messages.empty()


async def test_balance_rules(service: Service) -> None:
    c = await full_chain(service)
    stranger = await service.client()
    await expect_error(stranger.dist.balance(service.jid), "registration-required")
    answer = await c.carol.dist.balance(service.jid)
    assert balances(answer) == {}
    admin = await service.admin()
    await c.bot.dist.pay(service.jid, "bal-1", c.carol.bare, 10000, "CNY")
    iq = admin.iq(service.jid, "get")
    iq["balance"]["jid"] = c.bob.bare
    assert balances(await iq.send(timeout=10)) == {"CNY": (300, 0, 0)}
    iq = c.alice.iq(service.jid, "get")
    iq["balance"]["jid"] = c.bob.bare
    await expect_error(iq.send(timeout=10), "forbidden")


def _attrs(el: Any) -> dict[str, str]:
    return dict(el.xml.attrib)


async def test_ledger_check_command(service: Service) -> None:
    """`imserver ledger check` on the live database: exit status 0 and the sums."""
    import os
    import sys

    c = await full_chain(service)
    await c.bot.dist.pay(service.jid, "cli-1", c.carol.bare, 10000, "CNY")
    # Only the database comes from the environment (test switches are not config).
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSERVER_")}
    env["IMSERVER_DATABASE__URL"] = service.config.database.url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imserver.cli",
        "--config",
        "/nonexistent.toml",
        "ledger",
        "check",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out, err)
    assert b"ledger OK" in out and b"CNY 0" in out
