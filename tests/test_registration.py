"""Registration end to end: a real Prosody, the component, real clients, both databases."""

from __future__ import annotations

import asyncio
import re

from tests.conftest import OTHER_DOMAIN, Service
from tests.support.clients import expect_error
from tests.support.network import build_network, chain_of, member_of

RULE = re.compile(r"^(\d{6})-([UMA])(\d{8})$")


async def test_register_builds_chains_and_rule_numbers(service: Service) -> None:
    net = await build_network(service)
    assert RULE.match(net.merchant_rule).groups()[:2] == ("440305", "M")  # type: ignore[union-attr]
    alice = await service.client(service.new_jid("alice"))
    bob = await service.client(service.new_jid("bob"))
    carol = await service.client(service.new_jid("carol"))
    dave = await service.client(service.new_jid("dave"))

    a = member_of(await alice.dist.register(service.jid, net.merchant.bare))
    assert a["jid"] == alice.bare and a["role"] == "user" and a["region"] == "440305"
    assert a["referrer"] == net.merchant.bare and a["status"] == "active"
    assert RULE.match(a["rule-number"]).group(1, 2) == ("440305", "U")  # type: ignore[union-attr]
    b = member_of(await bob.dist.register(service.jid, alice.bare))
    c = member_of(await carol.dist.register(service.jid, bob.bare))
    member_of(await dave.dist.register(service.jid, carol.bare))
    assert b["region"] == c["region"] == "440305"  # inherited from the referring user

    chain = chain_of(await dave.dist.chain(service.jid))
    assert chain["member"]["jid"] == dave.bare
    # Two referral levels under the default policy, nearest first, with rule numbers.
    assert chain["upline"] == [(1, carol.bare, c["rule-number"]), (2, bob.bare, b["rule-number"])]
    assert chain["agents"] == [
        ("district", "440305", net.district_agent.bare),
        ("city", "440300", net.city_agent.bare),
        ("province", "440000", net.province_agent.bare),
    ]
    # A user directly under the merchant has the merchant as level 1 and no level 2.
    chain = chain_of(await alice.dist.chain(service.jid))
    assert chain["upline"] == [(1, net.merchant.bare, net.merchant_rule)]


async def test_vacant_agent_levels_have_no_jid(service: Service) -> None:
    admin = await service.admin()
    from tests.support.network import add_merchant

    shop = await service.client(service.new_jid("shop"))
    # 110101 (东城区, Beijing): nobody is agent there in this session.
    await add_merchant(admin, service.jid, shop.bare, region="110101")
    user = await service.client()
    await user.dist.register(service.jid, shop.bare)
    chain = chain_of(await user.dist.chain(service.jid))
    assert chain["agents"] == [
        ("district", "110101", None),
        ("city", "110100", None),
        ("province", "110000", None),
    ]


async def test_registration_errors_in_protocol_order(service: Service) -> None:
    net = await build_network(service)
    user = await service.client()
    # No referrer, or oneself: bad-request (before anything else).
    iq = user.iq(service.jid, "set")
    iq.enable("register")
    await expect_error(iq.send(timeout=10), "bad-request")
    await expect_error(user.dist.register(service.jid, user.bare), "bad-request")
    await expect_error(user.dist.register(service.jid, "not a jid"), "bad-request")
    # Unknown referrer.
    await expect_error(user.dist.register(service.jid, "nobody@localhost"), "item-not-found")
    # Registered once; a second time is a conflict, even with a bad referrer.
    await user.dist.register(service.jid, net.merchant.bare)
    await expect_error(user.dist.register(service.jid, net.merchant.bare), "conflict")
    await expect_error(user.dist.register(service.jid, "nobody@localhost"), "conflict")
    # A member of another domain may not join.
    foreign = await service.client(service.new_jid("far", OTHER_DOMAIN))
    await expect_error(foreign.dist.register(service.jid, net.merchant.bare), "forbidden")


async def test_chain_access_rules(service: Service) -> None:
    net = await build_network(service)
    alice = await service.client()
    bob = await service.client()
    stranger = await service.client()
    await alice.dist.register(service.jid, net.merchant.bare)
    await bob.dist.register(service.jid, net.merchant.bare)
    # A non-member asking for its own chain must join first.
    await expect_error(stranger.dist.chain(service.jid), "registration-required")
    # A member may not read another member's chain; the admin and the region's agent may.
    await expect_error(bob.dist.chain(service.jid, alice.bare), "forbidden")
    admin = await service.admin()
    assert chain_of(await admin.dist.chain(service.jid, alice.bare))["member"]["jid"] == alice.bare
    got = chain_of(await net.district_agent.dist.chain(service.jid, alice.bare))
    assert got["member"]["jid"] == alice.bare
    await expect_error(admin.dist.chain(service.jid, "ghost@localhost"), "item-not-found")


async def test_admin_only_requests(service: Service) -> None:
    from tests.support.network import add_merchant, assign_agent

    user = await service.client()
    await expect_error(add_merchant(user, service.jid, service.new_jid("x")), "forbidden")
    await expect_error(assign_agent(user, service.jid, user.bare, "440305"), "forbidden")
    admin = await service.admin()
    await expect_error(assign_agent(admin, service.jid, user.bare, "999999"), "item-not-found")
    await expect_error(
        add_merchant(admin, service.jid, service.new_jid("x"), region="999999"), "bad-request"
    )
    # Coordinates resolve through the geography (tests/test_merchant_location.py has more).
    shop = service.new_jid("shop")
    answer = await add_merchant(
        admin, service.jid, shop, location={"lat": "22.54", "lon": "113.93"}
    )
    assert answer["member"]["region"] == "440305"


async def test_unknown_payload_is_service_unavailable(service: Service) -> None:
    user = await service.client()
    await expect_error(
        user.send_raw_iq(service.jid, "get", "<whatever xmlns='urn:example:nope'/>"),
        "service-unavailable",
    )


async def test_concurrent_registrations_are_unique_and_acyclic(service: Service) -> None:
    net = await build_network(service)
    seeds = [await service.client() for _ in range(10)]
    for seed in seeds:
        await seed.dist.register(service.jid, net.merchant.bare)
    referrers = [net.merchant.bare] + [s.bare for s in seeds]
    n = 200
    users = await asyncio.gather(*(service.client() for _ in range(n)))
    answers = await asyncio.gather(
        *(
            u.dist.register(service.jid, referrers[i % len(referrers)], timeout=60)
            for i, u in enumerate(users)
        ),
    )
    rules = [member_of(a)["rule-number"] for a in answers]
    assert len(set(rules)) == n
    assert all(RULE.match(r) for r in rules)
    everyone = seeds + list(users)
    chains = await asyncio.gather(*(u.dist.chain(service.jid, timeout=60) for u in everyone))
    parent = {u.bare: chain_of(c)["upline"][0][1] for u, c in zip(everyone, chains, strict=True)}
    for start in parent:
        seen, node = set(), start
        while node in parent:
            assert node not in seen, "cycle"
            seen.add(node)
            node = parent[node]
        assert node == net.merchant.bare


async def test_a_bot_jid_cannot_become_a_member(service: Service) -> None:
    from tests.support.network import add_merchant, assign_agent

    net = await build_network(service)
    admin = await service.admin()
    bot = service.new_jid("bot")
    await net.merchant.dist.bot(service.jid, bot, action="link")
    await expect_error(add_merchant(admin, service.jid, bot), "conflict")
    await expect_error(assign_agent(admin, service.jid, bot, "440305"), "conflict")
    chain = chain_of(await admin.dist.chain(service.jid, net.merchant.bare))
    assert chain["agents"][0][2] == net.district_agent.bare
