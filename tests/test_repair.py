"""Chain repair end to end: terminate, delete, reassign, agents, audit; both databases.

After every change the stored chains are compared with two references: the uplines
recomputed from the live parent pointers (``domain.chains.ancestors``), and the stored
uplines before the change repaired by ``domain.chains.repaired_upline``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import select, text

from imserver.domain.chains import ancestors, moved_upline, repaired_upline
from imserver.domain.policy import MAX_LEVELS
from imserver.store import repair as store_repair
from imserver.store.models import AgencyLink, Agent, Member, Upline
from tests.conftest import Service
from tests.support.clients import Client, expect_error
from tests.support.faults import wait_for
from tests.support.network import (
    add_merchant,
    assign_agent,
    build_network,
    chain_of,
    member_of,
)

# -- reading the database directly (the references need every row) -----------------------


async def _rows(svc: Service, stmt: Any) -> list[Any]:
    async with svc.app.db.engine.connect() as conn:
        return list(await conn.execute(stmt))


async def stored_uplines(svc: Service) -> dict[int, list[int]]:
    """Every stored upline, nearest first."""
    out: dict[int, list[int]] = {}
    for member_id, _level, ancestor in await _rows(
        svc,
        select(Upline.member_id, Upline.level, Upline.ancestor_id).order_by(
            Upline.member_id, Upline.level
        ),
    ):
        out.setdefault(member_id, []).append(ancestor)
    return out


async def member_id(svc: Service, jid: str) -> int:
    rows = await _rows(svc, select(Member.id).where(Member.jid == jid))
    assert rows, f"{jid} is not stored"
    return int(rows[0][0])


async def assert_chains_consistent(svc: Service) -> None:
    """Every stored chain equals the one recomputed from the live parent pointers."""
    members = await _rows(svc, select(Member.id, Member.referrer_id, Member.status))
    active = {m for m, _p, status in members if status == "active"}
    parent = {m: p for m, p, status in members if status == "active"}
    for m, p in parent.items():
        assert p is None or p in active, f"active member {m} points at non-active {p}"
    stored = await stored_uplines(svc)
    assert set(stored) <= active, "a member that left still has a stored upline"
    for m in active:
        expected = ancestors(parent, m)[:MAX_LEVELS]
        assert stored.get(m, []) == expected, f"member {m}: {stored.get(m)} != {expected}"
    agents = dict(await _rows(svc, select(Agent.region_code, Agent.member_id)))
    assert set(agents.values()) <= active, "a member that left is still an agent"
    links = await _rows(
        svc, select(AgencyLink.member_id, AgencyLink.region_code, AgencyLink.agent_id)
    )
    for m, region, agent in links:
        if m in active:
            assert agent == agents.get(region), f"member {m}, region {region}: stale agent"


def assert_repaired(
    before: dict[int, list[int]], after: dict[int, list[int]], removed: int
) -> None:
    """``after`` is ``before`` repaired by the reference rule for the removed member."""
    for m, upline in before.items():
        if m == removed:
            continue
        assert after.get(m, []) == repaired_upline(upline, removed, before.get(removed, []))
    assert removed not in after


async def chain_down(svc: Service, top: str, length: int) -> list[Client]:
    """``length`` users, each referred by the previous one, the first by ``top``."""
    users: list[Client] = []
    referrer = top
    for _ in range(length):
        user = await svc.client()
        await user.dist.register(svc.jid, referrer)
        users.append(user)
        referrer = user.bare
    return users


async def audit_entries(admin: Client, svc: Service, **kw: Any) -> list[dict[str, Any]]:
    """The audit page as dicts (attributes, plus parsed details)."""
    answer = await admin.dist.audit(svc.jid, **kw)
    out = []
    for entry in answer["audit"]["entries"]:
        item = dict(entry.xml.attrib)
        item["details"] = json.loads(entry.xml.text) if entry.xml.text else {}
        out.append(item)
    return out


async def pay(svc: Service, merchant: Client, payer: str, ref: str) -> list[tuple[str, str, str]]:
    """The merchant reports a payment of 100.00 CNY; (role, level or scope, jid) of each share
    that goes to someone (the amounts are the payments tests' business)."""
    answer = await merchant.dist.pay(svc.jid, ref, payer, 10000, "CNY")
    return [
        (s["role"], s["level"] or s["scope"], s["jid"])
        for s in answer["distribution"]["shares"]
        if s["role"] in ("referrer", "agent")
    ]


# -- tests ---------------------------------------------------------------------------------


async def test_delete_a_middle_member_of_a_five_level_chain(service: Service) -> None:
    net = await build_network(service)
    admin = await service.admin()
    u = await chain_down(service, net.merchant.bare, 5)  # merchant <- u0 <- ... <- u4
    old_rule = chain_of(await u[2].dist.chain(service.jid))["member"]["rule-number"]
    u2_id = await member_id(service, u[2].bare)
    # Payments before the deletion: u2 earns (its JID is a notification's recipient) and
    # pays (its JID is in the payload of the notifications of those who earn).
    await pay(service, net.merchant, u[3].bare, "before-delete-1")
    await pay(service, net.merchant, u[2].bare, "before-delete-2")
    held = await _rows(
        service,
        text("SELECT count(*) FROM outbox WHERE recipient = :j OR payload LIKE :p").bindparams(
            j=u[2].bare, p=f"%{u[2].bare}%"
        ),
    )
    assert held[0][0] >= 2
    before = await stored_uplines(service)

    answer = member_of(await admin.dist.delete(service.jid, u[2].bare, reason="asked to leave"))
    assert answer["status"] == "deleted"
    assert answer["jid"] == f"erased-{u2_id}@erased.invalid"
    assert answer["rule-number"] == old_rule  # history keeps the number, never reused
    assert answer["referrer"] == u[1].bare
    # Stored chains through u2: u3 (level 1) and u4 (level 2); u3 is re-attached.
    assert (answer["repaired"], answer["reattached"]) == ("2", "1")

    after = await stored_uplines(service)
    assert_repaired(before, after, u2_id)
    await assert_chains_consistent(service)
    rules = {c.bare: chain_of(await c.dist.chain(service.jid)) for c in (u[3], u[4])}
    assert [x[1] for x in rules[u[3].bare]["upline"]] == [u[1].bare, u[0].bare]
    assert [x[1] for x in rules[u[4].bare]["upline"]] == [u[3].bare, u[1].bare]
    assert rules[u[3].bare]["member"]["referrer"] == u[1].bare
    # The next payment pays the repaired chain.
    paid = await pay(service, net.merchant, u[4].bare, "after-delete")
    assert paid[:2] == [("referrer", "1", u[3].bare), ("referrer", "2", u[1].bare)]

    # The JID is gone everywhere; the deleted member is no member any more.
    for table, column in (
        ("members", "jid"),
        ("audit_log", "target"),
        ("audit_log", "details"),
        ("outbox", "recipient"),
        ("outbox", "payload"),
    ):
        hits = await _rows(
            service,
            text(f"SELECT count(*) FROM {table} WHERE {column} LIKE :j").bindparams(
                j=f"%{u[2].bare}%"
            ),
        )
        assert hits[0][0] == 0, f"{table}.{column} still holds the deleted JID"
    await expect_error(u[2].dist.chain(service.jid), "registration-required")
    # An erased referrer is told apart from an unknown one.
    newcomer = await service.client()
    await expect_error(newcomer.dist.register(service.jid, u[2].bare), "not-acceptable")
    # Deleting again: the JID is unknown; the pseudonym is already deleted.
    await expect_error(admin.dist.delete(service.jid, u[2].bare), "item-not-found")
    await expect_error(admin.dist.delete(service.jid, answer["jid"]), "conflict")

    # The JID may join again, as a new member with a new rule number.
    again = member_of(await u[2].dist.register(service.jid, net.merchant.bare))
    assert again["status"] == "active" and again["rule-number"] != old_rule
    member_of(await newcomer.dist.register(service.jid, u[2].bare))
    await assert_chains_consistent(service)

    entries = await audit_entries(admin, service, max_entries=20)
    deletion = next(e for e in entries if e["action"] == "member.delete")
    assert deletion["target"] == answer["jid"] and deletion["reason"] == "asked to leave"
    assert deletion["actor"] == admin.bare
    assert deletion["details"]["rule_number"] == old_rule


async def test_terminate_a_member_with_1000_direct_referrals(service: Service) -> None:
    net = await build_network(service)
    admin = await service.admin()
    top = await chain_down(service, net.merchant.bare, 2)  # merchant <- p <- x
    parent, x = top
    membership = service.app.services.membership
    # 1,000 direct referrals (and a few deeper levels) are created through the service
    # layer, not by 1,000 XMPP clients: the registration path is the same use case, and
    # logging 1,000 accounts into Prosody would only test Prosody. The terminate below
    # goes through XMPP.
    children = [service.new_jid("kid") for _ in range(1000)]
    for batch in range(0, len(children), 50):
        await asyncio.gather(
            *(membership.register(jid, x.bare) for jid in children[batch : batch + 50])
        )
    grandchildren = [service.new_jid("grand") for _ in range(30)]
    for i, jid in enumerate(grandchildren):
        await membership.register(jid, children[i])
    great = [service.new_jid("great") for _ in range(5)]
    for i, jid in enumerate(great):
        await membership.register(jid, grandchildren[i])
    x_id = await member_id(service, x.bare)
    before = await stored_uplines(service)

    answer = member_of(await admin.dist.terminate(service.jid, x.bare, reason="fraud", timeout=60))
    assert answer["status"] == "terminated" and answer["jid"] == x.bare
    assert answer["repaired"] == str(1000 + 30 + 5) and answer["reattached"] == "1000"
    after = await stored_uplines(service)
    assert_repaired(before, after, x_id)
    await assert_chains_consistent(service)
    # Every direct referral now hangs under x's referrer.
    kid = chain_of(await admin.dist.chain(service.jid, children[0]))
    assert [link[1] for link in kid["upline"]] == [parent.bare, net.merchant.bare]
    assert kid["member"]["referrer"] == parent.bare
    paid = await pay(service, net.merchant, children[0], "after-terminate")
    assert paid[:2] == [("referrer", "1", parent.bare), ("referrer", "2", net.merchant.bare)]
    paid = await pay(service, net.merchant, great[0], "deep-after-terminate")
    assert paid[:2] == [
        ("referrer", "1", grandchildren[0]),
        ("referrer", "2", children[0]),
    ]

    # A terminated JID cannot join again, and cannot refer anyone.
    await expect_error(x.dist.register(service.jid, net.merchant.bare), "conflict")
    newcomer = await service.client()
    await expect_error(newcomer.dist.register(service.jid, x.bare), "not-acceptable")
    await expect_error(admin.dist.terminate(service.jid, x.bare), "conflict")
    gone = chain_of(await admin.dist.chain(service.jid, x.bare))
    assert gone["member"]["status"] == "terminated" and gone["upline"] == []

    # A terminated member may still be deleted (erasure); nothing left to repair.
    erased = member_of(await admin.dist.delete(service.jid, x.bare, reason="erasure request"))
    assert (erased["status"], erased["repaired"]) == ("deleted", "0")
    await assert_chains_consistent(service)
    actions = [e["action"] for e in await audit_entries(admin, service, max_entries=5)]
    assert actions[:2] == ["member.delete", "member.terminate"]


async def test_terminate_and_replace_a_district_agent(service: Service) -> None:
    net = await build_network(service)
    admin = await service.admin()
    users = await chain_down(service, net.merchant.bare, 3)
    district = net.district_agent.bare

    answer = member_of(await admin.dist.terminate(service.jid, district, reason="contract ended"))
    assert answer["status"] == "terminated" and answer["vacated"] == "440305"
    await assert_chains_consistent(service)
    for user in users:
        agents = chain_of(await user.dist.chain(service.jid))["agents"]
        assert agents[0] == ("district", "440305", None)  # vacant until an admin assigns
        assert agents[1] == ("city", "440300", net.city_agent.bare)
    late = await service.client()
    await late.dist.register(service.jid, users[-1].bare)
    assert chain_of(await late.dist.chain(service.jid))["agents"][0][2] is None
    # The vacant district share goes to the platform.
    paid = await pay(service, net.merchant, users[-1].bare, "vacant-district")
    assert [p for p in paid if p[0] == "agent"] == [
        ("agent", "city", net.city_agent.bare),
        ("agent", "province", net.province_agent.bare),
    ]
    # The terminated agent cannot be assigned again.
    await expect_error(assign_agent(admin, service.jid, district, "440305"), "not-acceptable")

    replacement = await service.client(service.new_jid("district"))
    await assign_agent(admin, service.jid, replacement.bare, "440305")
    await assert_chains_consistent(service)
    for user in [*users, late, net.merchant]:
        agents = chain_of(await user.dist.chain(service.jid))["agents"]
        assert agents[0] == ("district", "440305", replacement.bare)
    # The region's chains were updated in place: every link of the region points at her.
    stale = await _rows(
        service,
        select(AgencyLink.member_id).where(
            AgencyLink.region_code == "440305",
            AgencyLink.agent_id.is_distinct_from(await member_id(service, replacement.bare)),
        ),
    )
    assert stale == []
    paid = await pay(service, net.merchant, late.bare, "new-district")
    assert ("agent", "district", replacement.bare) in paid
    entry = (await audit_entries(admin, service, max_entries=2))[1]
    assert entry["action"] == "member.terminate" and entry["details"]["vacated"] == ["440305"]


async def test_reassign_moves_the_downline_and_refuses_cycles(service: Service) -> None:
    net = await build_network(service)
    admin = await service.admin()
    other = await service.client(service.new_jid("shop"))
    await add_merchant(admin, service.jid, other.bare, name="Other Shop")
    a, b, c, d = await chain_down(service, net.merchant.bare, 4)
    e = (await chain_down(service, other.bare, 1))[0]

    # The reason is required; oneself and the own downline are refused.
    await expect_error(admin.dist.reassign(service.jid, b.bare, e.bare, ""), "bad-request")
    await expect_error(admin.dist.reassign(service.jid, b.bare, b.bare, "x"), "bad-request")
    await expect_error(admin.dist.reassign(service.jid, a.bare, d.bare, "loop"), "not-acceptable")
    await expect_error(
        admin.dist.reassign(service.jid, b.bare, "nobody@localhost", "x"), "item-not-found"
    )
    await assert_chains_consistent(service)

    before = await stored_uplines(service)
    answer = member_of(await admin.dist.reassign(service.jid, b.bare, e.bare, "moved shops"))
    assert answer["referrer"] == e.bare and answer["status"] == "active"
    assert answer["repaired"] == "3"  # b itself, c and d
    await assert_chains_consistent(service)
    after = await stored_uplines(service)
    b_id = await member_id(service, b.bare)
    for m, line in before.items():
        if m != b_id:
            assert after.get(m, []) == moved_upline(line, b_id, after[b_id])
    assert [x[1] for x in chain_of(await b.dist.chain(service.jid))["upline"]] == [
        e.bare,
        other.bare,
    ]
    assert [x[1] for x in chain_of(await d.dist.chain(service.jid))["upline"]] == [c.bare, b.bare]
    c_id = await member_id(service, c.bare)
    e_id = await member_id(service, e.bare)
    d_id = await member_id(service, d.bare)
    assert (await stored_uplines(service))[d_id] == [c_id, b_id, e_id]
    paid = await pay(service, net.merchant, c.bare, "after-move")
    assert paid[:2] == [("referrer", "1", b.bare), ("referrer", "2", e.bare)]
    # Moving it back up (under its old grandparent) works too; a no-op changes nothing.
    member_of(await admin.dist.reassign(service.jid, b.bare, net.merchant.bare, "back"))
    await assert_chains_consistent(service)
    same = member_of(await admin.dist.reassign(service.jid, b.bare, net.merchant.bare, "again"))
    assert same["repaired"] == "0"
    # A terminated member is neither moved nor a referrer to move under.
    await admin.dist.terminate(service.jid, e.bare)
    await expect_error(admin.dist.reassign(service.jid, c.bare, e.bare, "x"), "not-acceptable")
    await expect_error(admin.dist.reassign(service.jid, e.bare, c.bare, "x"), "not-acceptable")
    await assert_chains_consistent(service)

    entries = [x for x in await audit_entries(admin, service, max_entries=10)]
    moves = [x for x in entries if x["action"] == "member.reassign"]
    assert [m["reason"] for m in moves[:2]] == ["back", "moved shops"]
    assert moves[1]["details"] == {"chains": 3, "from": a.bare, "to": e.bare}


async def test_non_admins_are_forbidden_and_nothing_changes(service: Service) -> None:
    net = await build_network(service)
    a, b = await chain_down(service, net.merchant.bare, 2)
    stranger = await service.client()
    before = await stored_uplines(service)
    for who in (b, stranger, net.merchant, net.district_agent):
        await expect_error(who.dist.terminate(service.jid, a.bare), "forbidden")
        await expect_error(who.dist.delete(service.jid, a.bare), "forbidden")
        await expect_error(
            who.dist.reassign(service.jid, b.bare, net.merchant.bare, "x"), "forbidden"
        )
        await expect_error(who.dist.audit(service.jid), "forbidden")
    assert await stored_uplines(service) == before
    chain = chain_of(await a.dist.chain(service.jid))
    assert chain["member"]["status"] == "active"
    # Bad requests from the admin change nothing either.
    admin = await service.admin()
    await expect_error(admin.dist.terminate(service.jid, "not a jid"), "bad-request")
    await expect_error(admin.dist.terminate(service.jid, "ghost@localhost"), "item-not-found")
    await expect_error(admin.dist.terminate(service.jid, a.bare, "x" * 501), "bad-request")
    assert await stored_uplines(service) == before


async def test_audit_log_pages_back(service: Service) -> None:
    admin = await service.admin()
    net = await build_network(service)
    await chain_down(service, net.merchant.bare, 1)
    first = await audit_entries(admin, service, max_entries=3)
    assert len(first) == 3
    ids = [int(e["id"]) for e in first]
    assert ids == sorted(ids, reverse=True)
    assert all(e["at"].endswith("Z") and e["actor"] for e in first)
    older = await audit_entries(admin, service, max_entries=3, before=ids[-1])
    assert older and all(int(e["id"]) < ids[-1] for e in older)
    everything = await audit_entries(admin, service, max_entries=200)
    assert {"agent.assign", "merchant.add"} <= {e["action"] for e in everything}
    await expect_error(admin.dist.audit(service.jid, max_entries=0), "bad-request")
    await expect_error(admin.dist.audit(service.jid, max_entries=201), "bad-request")
    iq = admin.iq(service.jid, "get")
    iq["audit"]["before"] = "abc"
    await expect_error(iq.send(timeout=10), "bad-request")


async def test_terminate_races_registrations_under_its_line(service: Service) -> None:
    net = await build_network(service)
    admin = await service.admin()
    _p, x = await chain_down(service, net.merchant.bare, 2)
    membership = service.app.services.membership
    kids = [service.new_jid("kid") for _ in range(20)]
    for jid in kids:
        await membership.register(jid, x.bare)
    newcomers = [service.new_jid("new") for _ in range(60)]
    # Registrations under x's children (whose chains run through x) and under x itself,
    # racing the termination of x: whatever the order, every chain ends up right.
    results = await asyncio.gather(
        admin.dist.terminate(service.jid, x.bare, timeout=60),
        *(
            membership.register(jid, x.bare if i % 10 == 0 else kids[i % len(kids)])
            for i, jid in enumerate(newcomers)
        ),
        return_exceptions=True,
    )
    assert not isinstance(results[0], BaseException), results[0]
    refused = [r for r in results[1:] if isinstance(r, BaseException)]
    # Only registrations under x itself may be refused (x was terminated first).
    assert len(refused) <= len(newcomers) // 10
    await assert_chains_consistent(service)


async def test_parent_and_child_terminated_at_once_with_registrations(service: Service) -> None:
    net = await build_network(service)
    admin = await service.admin()
    a, b, c = await chain_down(service, net.merchant.bare, 3)
    membership = service.app.services.membership
    under_c = [service.new_jid("kid") for _ in range(10)]
    for jid in under_c:
        await membership.register(jid, c.bare)
    newcomers = [service.new_jid("new") for _ in range(30)]
    # b and c (its direct referral) go at once while people join below c: the two
    # repairs touch the same chains; whichever commits second sees the first one's rows.
    results = await asyncio.gather(
        admin.dist.terminate(service.jid, b.bare, timeout=60),
        admin.dist.terminate(service.jid, c.bare, timeout=60),
        *(membership.register(jid, under_c[i % 10]) for i, jid in enumerate(newcomers)),
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    await assert_chains_consistent(service)
    kid = chain_of(await admin.dist.chain(service.jid, under_c[0]))
    assert [link[1] for link in kid["upline"]] == [a.bare, net.merchant.bare]


async def waits_for_a_lock(svc: Service) -> bool:
    """Whether a transaction of ``svc`` is blocked behind another's locks right now.

    PostgreSQL: a backend of this database waits for a lock not granted. SQLite (one
    writer at a time, behind the database's asyncio lock): a task is queued on that lock.
    Only the two requests of the test write meanwhile, so the one blocked is the second.
    """
    if svc.backend == "sqlite":
        return bool(svc.app.db._write_lock._waiters)  # asyncio.Lock's queue
    waiting = await _rows(
        svc,
        text(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = current_database()"
        ),
    )
    return int(waiting[0][0]) > 0


class Gate:
    """Wraps ``store.repair.lock_line``: the call for one member holds its locks until
    released, so a test can order a registration and a repair deterministically."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, member: int) -> None:
        self.member = member
        self.locked = asyncio.Event()
        self.release = asyncio.Event()
        original = store_repair.lock_line

        async def gated(conn: Any, member_id: int, **kw: Any) -> Any:
            result = await original(conn, member_id, **kw)
            if member_id == self.member and not self.locked.is_set():
                self.locked.set()
                await self.release.wait()
            return result

        monkeypatch.setattr(store_repair, "lock_line", gated)


async def test_a_registration_holding_the_line_makes_the_repair_wait(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = await build_network(service)
    admin = await service.admin()
    x, kid = await chain_down(service, net.merchant.bare, 2)
    gate = Gate(monkeypatch, await member_id(service, kid.bare))
    newcomer = service.new_jid("new")
    joining = asyncio.create_task(service.app.services.membership.register(newcomer, kid.bare))
    await asyncio.wait_for(gate.locked.wait(), 10)
    ending = asyncio.create_task(admin.dist.terminate(service.jid, x.bare, timeout=30))
    blocked = await wait_for(lambda: waits_for_a_lock(service), 10, 0.02)
    assert blocked and not ending.done(), "the repair must wait for the registration"
    gate.release.set()
    await joining
    answer = member_of(await ending)
    assert answer["repaired"] == "2"  # kid and the newcomer, committed before the repair
    await assert_chains_consistent(service)
    got = chain_of(await admin.dist.chain(service.jid, newcomer))
    assert [link[1] for link in got["upline"]] == [kid.bare, net.merchant.bare]


async def test_a_repair_holding_the_line_makes_the_registration_retry(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = await build_network(service)
    admin = await service.admin()
    x, kid = await chain_down(service, net.merchant.bare, 2)
    gate = Gate(monkeypatch, await member_id(service, x.bare))
    ending = asyncio.create_task(admin.dist.terminate(service.jid, x.bare, timeout=30))
    await asyncio.wait_for(gate.locked.wait(), 10)
    newcomer = service.new_jid("new")
    joining = asyncio.create_task(service.app.services.membership.register(newcomer, kid.bare))
    blocked = await wait_for(lambda: waits_for_a_lock(service), 10, 0.02)
    assert blocked and not joining.done(), "the registration must wait for the repair"
    gate.release.set()
    member_of(await ending)
    view = await joining
    assert view.referrer == kid.bare
    await assert_chains_consistent(service)
    got = chain_of(await admin.dist.chain(service.jid, newcomer))
    assert [link[1] for link in got["upline"]] == [kid.bare, net.merchant.bare]


async def test_the_first_agent_of_a_region_waits_for_registrations_in_it(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imserver.store import members as store_members

    admin = await service.admin()
    shop = await service.client(service.new_jid("shop"))
    # 650102 (天山区, Urumqi): no agent at any level in this session's other tests.
    await add_merchant(admin, service.jid, shop.bare, region="650102", name="Bazaar")
    locked, release = asyncio.Event(), asyncio.Event()
    original = store_members.agents_of

    async def gated(conn: Any, codes: Any, **kw: Any) -> Any:
        found = await original(conn, codes, **kw)
        if "650102" in codes and not locked.is_set():
            locked.set()
            await release.wait()
        return found

    monkeypatch.setattr(store_members, "agents_of", gated)
    newcomer = service.new_jid("new")
    joining = asyncio.create_task(service.app.services.membership.register(newcomer, shop.bare))
    await asyncio.wait_for(locked.wait(), 10)  # it has read "no agent" for the region
    agent = service.new_jid("agent")
    assigning = asyncio.create_task(assign_agent(admin, service.jid, agent, "650102"))
    blocked = await wait_for(lambda: waits_for_a_lock(service), 10, 0.02)
    assert blocked and not assigning.done(), "the assignment must wait for the registration"
    release.set()
    await joining
    await assigning
    await assert_chains_consistent(service)
    got = chain_of(await admin.dist.chain(service.jid, newcomer))
    assert got["agents"][0] == ("district", "650102", agent)
