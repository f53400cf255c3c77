"""The money commands end to end: bots, balance, statement, withdrawals, policy, through
the ad-hoc path and the chat path, with their effects and who may run them."""

from __future__ import annotations

import uuid

from tests.conftest import OTHER_DOMAIN, Service
from tests.support.clients import Client, expect_error
from tests.support.commands import (
    adhoc_run,
    adhoc_start,
    adhoc_submit,
    command_nodes,
    form_fields,
    result_table,
    result_values,
    say,
)
from tests.support.network import Network, build_network
from tests.test_commands import sessions


async def _buyers(svc: Service, net: Network) -> tuple[Client, Client]:
    """alice (referred by the merchant) and bob (referred by alice)."""
    alice = await svc.client(svc.new_jid("alice"))
    bob = await svc.client(svc.new_jid("bob"))
    await alice.dist.register(svc.jid, net.merchant.bare)
    await bob.dist.register(svc.jid, alice.bare)
    return alice, bob


def _order() -> str:
    return f"order-{uuid.uuid4().hex[:10]}"


async def test_bots_link_and_unlink(service: Service) -> None:
    net = await build_network(service)
    _alice, bob = await _buyers(service, net)
    bot = await service.client(service.new_jid("till"))
    answer = await say(net.merchant, service.jid, f"link bot {bot.bare}")
    assert answer == f"{bot.bare} may now report payments for {net.merchant.bare}."
    await bot.dist.pay(service.jid, _order(), bob.bare, 10000, "CNY", merchant=net.merchant.bare)
    answer = await say(net.merchant, service.jid, f"unlink {bot.bare}")
    assert answer == f"{bot.bare} no longer reports for {net.merchant.bare}."
    await expect_error(
        bot.dist.pay(service.jid, _order(), bob.bare, 10000, "CNY", merchant=net.merchant.bare),
        "forbidden",
    )
    # Ad-hoc: the merchant's form, the admin naming the merchant.
    step = await adhoc_start(net.merchant, service.jid, "link-bot")
    assert form_fields(step) == {"jid": ("jid-single", True), "merchant": ("jid-single", False)}
    await adhoc_submit(net.merchant, service.jid, step, {"jid": bot.bare})
    admin = await service.admin()
    done = await adhoc_run(
        admin, service.jid, "unlink-bot", {"jid": bot.bare, "merchant": net.merchant.bare}
    )
    assert (
        done["command"]["form"]["title"] == f"{bot.bare} no longer reports for {net.merchant.bare}."
    )
    # A user may not link bots; nothing is linked.
    answer = await say(bob, service.jid, f"link bot {bot.bare}")
    assert answer.startswith("Not done:")
    await expect_error(
        bot.dist.pay(service.jid, _order(), bob.bare, 10000, "CNY", merchant=net.merchant.bare),
        "forbidden",
    )
    assert len(sessions(service)) == 0


async def test_balance_statement_withdrawal(service: Service) -> None:
    net = await build_network(service)
    alice, bob = await _buyers(service, net)
    admin = await service.admin()
    # ¥1,000.00 paid by bob: alice (level 1) earns 30% of the 10% pool = ¥30.00.
    await net.merchant.dist.pay(service.jid, _order(), bob.bare, 100000, "CNY")
    answer = await say(alice, service.jid, "my balance")
    assert answer == (
        f"Balance of {alice.bare}\nAvailable: ¥0.00\nPending: ¥30.00\nReserved: ¥0.00"
    )
    assert (await say(bob, service.jid, "balance")).endswith("nothing earned yet.")
    step = await adhoc_start(alice, service.jid, "balance")
    assert form_fields(step) == {"jid": ("jid-single", False)}
    values = result_values(await adhoc_submit(alice, service.jid, step, {}))
    assert values == {"Available": "¥0.00", "Pending": "¥30.00", "Reserved": "¥0.00"}

    statement = await say(alice, service.jid, "statement")
    assert statement.startswith("Statement: 1 entries") and "¥30.00" in statement
    labels, rows = result_table(await adhoc_run(alice, service.jid, "statement", {"max": "5"}))
    assert labels == ["When (UTC)", "What", "Balance", "Amount", "Reference"]
    assert [r["amount"] for r in rows] == ["¥30.00"]

    # Nothing available before the hold period ends.
    answer = await say(alice, service.jid, "withdraw 12.50 CNY")
    assert answer.startswith("Not done:")
    service.clock.advance(days=8)
    await service.app.services.settlement.settle()
    answer = await say(alice, service.jid, "withdraw 12.505 CNY")
    assert answer.startswith("Not done: CNY has 2 decimals")
    answer = await say(alice, service.jid, "withdraw 12.50 cny")
    assert answer.startswith("Withdrawal #") and "of ¥12.50 asked" in answer
    number = answer.split()[1].lstrip("#")

    pending = await say(admin, service.jid, "withdrawals")
    assert f"#{number} · {alice.bare} · ¥12.50 · pending" in pending
    labels, rows = result_table(await adhoc_start(admin, service.jid, "withdrawals"))
    assert any(r["id"] == f"#{number}" and r["status"] == "pending" for r in rows)
    # Only admins decide.
    assert (await say(alice, service.jid, f"approve {number}")).startswith("Not done:")
    answer = await say(admin, service.jid, f"approve #{number}")
    assert (
        answer
        == f"Withdrawal #{number} of ¥12.50 approved.\nMember: {alice.bare}\nStatus: approved"
    )
    answer = await say(alice, service.jid, "balance")
    assert "Available: ¥17.50" in answer

    # Ask by ad-hoc, reject by ad-hoc: the reservation is released.
    step = await adhoc_start(alice, service.jid, "withdraw")
    assert form_fields(step) == {
        "amount": ("text-single", True),
        "currency": ("text-single", False),
    }
    values = result_values(
        await adhoc_submit(alice, service.jid, step, {"amount": "10", "currency": "CNY"})
    )
    assert values == {"Status": "pending"}
    assert "Reserved: ¥10.00" in await say(alice, service.jid, "balance")
    mine = await say(alice, service.jid, "withdrawals")
    assert "¥10.00 · pending" in mine and "¥12.50 · approved" in mine
    number = next(
        r["id"]
        for r in result_table(await adhoc_start(admin, service.jid, "withdrawals"))[1]
        if r["jid"] == alice.bare
    ).lstrip("#")
    step = await adhoc_start(admin, service.jid, "reject-withdrawal")
    assert form_fields(step) == {"id": ("text-single", True), "reason": ("text-single", False)}
    values = result_values(
        await adhoc_submit(admin, service.jid, step, {"id": number, "reason": "bank closed"})
    )
    assert values["Status"] == "rejected"
    assert "Available: ¥17.50" in await say(alice, service.jid, "balance")
    assert len(sessions(service)) == 0


async def test_policy_show_and_set(service: Service) -> None:
    net = await build_network(service)
    alice, _bob = await _buyers(service, net)
    answer = await say(alice, service.jid, "policy")
    assert "Pool: 10%" in answer and "Referral level 1: 30%" in answer
    assert "District agent: 15%" in answer
    admin = await service.admin()
    step = await adhoc_start(admin, service.jid, "set-policy")
    assert set(form_fields(step)) == {"pool", "referral", "district", "city", "province", "reason"}
    # The same shares again, so that other tests keep the default.
    answer = await say(admin, service.jid, "set policy 1000 3000,2000 1500 1000 500 no change")
    assert answer.startswith("Policy version ") and "Referral level 2: 20%" in answer
    values = result_values(
        await adhoc_submit(
            admin,
            service.jid,
            step,
            {
                "pool": "1000",
                "referral": "3000 2000",
                "district": "1500",
                "city": "1000",
                "province": "500",
            },
        )
    )
    assert values["Pool"] == "10%"
    assert (await say(alice, service.jid, "set policy 1 1 1 1 1")).startswith("Not done:")
    answer = await say(admin, service.jid, "set policy 1000 9000,9000 1500 1000 500")
    assert answer.startswith("Not done:")  # shares over 100% of the pool


async def test_money_command_lists(service: Service) -> None:
    net = await build_network(service)
    alice, _bob = await _buyers(service, net)
    admin = await service.admin()
    foreign = await service.client(service.new_jid("far", OTHER_DOMAIN))
    user_nodes = set(await command_nodes(alice, service.jid))
    assert {"balance", "statement", "withdraw", "withdrawals", "policy"} <= user_nodes
    assert not {"link-bot", "approve-withdrawal", "set-policy"} & user_nodes
    merchant_nodes = set(await command_nodes(net.merchant, service.jid))
    assert {"link-bot", "unlink-bot", "balance"} <= merchant_nodes
    admin_nodes = set(await command_nodes(admin, service.jid))
    assert {"approve-withdrawal", "reject-withdrawal", "set-policy", "link-bot"} <= admin_nodes
    assert set(await command_nodes(foreign, service.jid)) == {"help"}


async def test_sales_of_a_day_and_volume(service: Service) -> None:
    net = await build_network(service)
    _alice, bob = await _buyers(service, net)
    admin = await service.admin()
    bot = await service.client(service.new_jid("till"))
    await say(net.merchant, service.jid, f"link bot {bot.bare}")
    first, second = _order(), _order()
    await net.merchant.dist.pay(service.jid, first, bob.bare, 10000, "CNY")
    await bot.dist.pay(service.jid, second, bob.bare, 2550, "CNY", merchant=net.merchant.bare)
    await net.merchant.dist.refund(service.jid, f"r-{first}", first, 1000)
    day = service.clock().date().isoformat()

    answer = await say(net.merchant, service.jid, "sales")
    lines = answer.splitlines()
    assert lines[0] == (f"{net.merchant.bare} on {day}: 2 payments, 1 refunds; net ¥115.50"), answer
    assert any(f"payment · {first} · {bob.bare} · ¥100.00" in line for line in lines)
    assert any(f"refund of {first} · r-{first} · {bob.bare} · -¥10.00" in line for line in lines)
    # The bot reads its merchant's day; another day is empty.
    assert (await say(bot, service.jid, "payments")).splitlines()[0] == lines[0]
    answer = await say(net.merchant, service.jid, "sales 2020-01-01")
    assert answer.endswith("0 payments, 0 refunds\nno payments")
    assert (await say(net.merchant, service.jid, "sales yesterday")).startswith(
        "Not done: day must be a date"
    )
    # Admins name the merchant; users may not read sales.
    step = await adhoc_start(admin, service.jid, "sales")
    assert form_fields(step) == {"day": ("text-single", False), "merchant": ("jid-single", False)}
    labels, rows = result_table(
        await adhoc_submit(admin, service.jid, step, {"merchant": net.merchant.bare, "day": day})
    )
    assert labels == ["Time (UTC)", "What", "Reference", "Payer", "Amount"]
    assert sorted(r["amount"] for r in rows) == ["-¥10.00", "¥100.00", "¥25.50"]
    assert (await say(bob, service.jid, "sales")).startswith("Not done:")
    answer = await say(net.merchant, service.jid, f"sales {day} {admin.bare}")
    assert answer.startswith("Not done: only admins")

    # Volume in the statistics and the region overview.
    stats = await say(admin, service.jid, "stats")
    assert "Payments CNY: " in stats and "Refunded CNY: " in stats
    overview = await say(admin, service.jid, "region 440305")
    assert "Volume CNY: " in overview and "payments, ¥" in overview
    assert len(sessions(service)) == 0


async def test_agents_see_their_region_earnings(service: Service) -> None:
    net = await build_network(service)
    _alice, bob = await _buyers(service, net)
    # ¥100.00 by bob, then ¥20.00 of it refunded: the district agent's 15% of the 10% pool
    # is ¥1.50, less ¥0.30 = ¥1.20; the city agent's 10% is ¥1.00 less ¥0.20.
    order = _order()
    await net.merchant.dist.pay(service.jid, order, bob.bare, 10000, "CNY")
    await net.merchant.dist.refund(service.jid, _order(), order, 2000)
    answer = await say(net.district_agent, service.jid, "earnings")
    assert answer.startswith("Earnings in 440305")
    assert "¥1.20" in answer and "vacant" not in answer
    # The region's volume counts every test's payments in 440305: only its presence.
    assert "\nVolume CNY: " in answer and "refunded)" in answer
    answer = await say(net.city_agent, service.jid, "earnings 440300")
    assert "¥0.80" in answer
    # An agent may not read another region's earnings; a user may not read any.
    answer = await say(net.city_agent, service.jid, "earnings 110101")
    assert answer.startswith("Not done:")
    answer = await say(bob, service.jid, "earnings 440305")
    assert answer.startswith("Not done:")
    # Admins name any region and see its current agent's figures.
    admin = await service.admin()
    done = await adhoc_run(admin, service.jid, "region-earnings", {"region": "440305"})
    values = result_values(done)
    assert values["Agent"] == net.district_agent.bare
    assert values["Earned (CNY, 1 payments)"] == "¥1.20"
    assert len(sessions(service)) == 0
