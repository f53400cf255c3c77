"""The human interface end to end: every command as an ad-hoc command and as chat text,
the command lists per requester, suggestions, session clean-up and authorization."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from slixmpp.exceptions import IqError
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.models import Bot, CommandSession
from imserver.xmpp.commands.adhoc import SessionStore
from tests.conftest import OTHER_DOMAIN, Service
from tests.support.clients import Client, expect_error
from tests.support.commands import (
    COMMANDS_NS,
    adhoc_run,
    adhoc_start,
    adhoc_submit,
    command_nodes,
    form_fields,
    result_table,
    result_values,
    say,
)
from tests.support.network import Network, build_network, chain_of

RULE = re.compile(r"\d{6}-[UMA]\d{8}")

# Chat keyword (first word of the usage) of every ad-hoc node.
KEYWORDS = {
    "join": "join",
    "chain": "chain",
    "invite": "invite",
    "invites": "invites",
    "invite-statistics": "invite",
    "balance": "balance",
    "statement": "statement",
    "withdraw": "withdraw",
    "withdrawals": "withdrawals",
    "policy": "policy",
    "link-bot": "link",
    "unlink-bot": "unlink",
    "sales": "sales",
    "find-member": "find",
    "add-merchant": "merchant",
    "assign-agent": "agent",
    "region-overview": "region",
    "region-members": "members",
    "region-earnings": "earnings",
    "statistics": "stats",
    "terminate": "terminate",
    "delete": "delete",
    "reassign": "reassign",
    "audit": "audit",
    "approve-withdrawal": "approve",
    "reject-withdrawal": "reject",
    "set-policy": "set",
    "trust": "trust",
    "domains": "domains",
    "help": "help",
}
MEMBER_NODES = {
    "chain", "invite", "invites", "balance", "statement", "withdraw", "withdrawals", "policy",
    "help",
}  # fmt: skip
# Who may run each command (the admin of the tests is no member: it may also join, and
# it reads chains, balances and statements of anyone).
ALLOWED = {
    "join": {"nonmember", "admin"},
    "chain": {"user", "merchant", "agent", "admin"},
    "invite": {"user", "merchant", "agent", "admin"},
    "invites": {"user", "merchant", "agent", "admin"},
    "invite-statistics": {"admin"},
    "balance": {"user", "merchant", "agent", "admin"},
    "statement": {"user", "merchant", "agent", "admin"},
    "withdraw": {"user", "merchant", "agent"},
    "withdrawals": {"user", "merchant", "agent", "admin"},
    "policy": {"user", "merchant", "agent", "bot", "admin"},
    "link-bot": {"merchant", "admin"},
    "unlink-bot": {"merchant", "admin"},
    "sales": {"merchant", "bot", "admin"},
    "find-member": {"admin"},
    "add-merchant": {"admin"},
    "assign-agent": {"admin"},
    "region-overview": {"admin"},
    "region-members": {"agent", "admin"},
    "region-earnings": {"agent", "admin"},
    "statistics": {"admin"},
    "terminate": {"admin"},
    "delete": {"admin"},
    "reassign": {"admin"},
    "audit": {"admin"},
    "approve-withdrawal": {"admin"},
    "reject-withdrawal": {"admin"},
    "set-policy": {"admin"},
    "trust": {"admin"},
    "domains": {"admin"},
    "help": {"nonmember", "user", "merchant", "bot", "agent", "admin", "foreign"},
}
assert set(ALLOWED) == set(KEYWORDS)


@dataclass
class World:
    """One requester of each kind, on a standard network."""

    net: Network
    admin: Client
    user: Client
    nonmember: Client
    bot: Client
    foreign: Client

    @property
    def agent(self) -> Client:
        return self.net.district_agent

    @property
    def merchant(self) -> Client:
        return self.net.merchant


async def _link_bot(svc: Service, bot_jid: str, merchant_jid: str) -> None:
    async def use_case(conn: AsyncConnection) -> None:
        from imserver.store import members

        merchant = await members.get_by_jid(conn, merchant_jid)
        assert merchant is not None
        await conn.execute(
            insert(Bot).values(jid=bot_jid, merchant_id=merchant.id, created_at=svc.clock())
        )

    await svc.app.db.transaction(use_case)


async def make_world(svc: Service) -> World:
    net = await build_network(svc)
    user = await svc.client(svc.new_jid("user"))
    await user.dist.register(svc.jid, net.merchant.bare)
    bot = await svc.client(svc.new_jid("bot"))
    await _link_bot(svc, bot.bare, net.merchant.bare)
    return World(
        net,
        await svc.admin(),
        user,
        await svc.client(svc.new_jid("stranger")),
        bot,
        await svc.client(svc.new_jid("far", OTHER_DOMAIN)),
    )


@pytest.fixture(scope="module")
async def world(service: Service) -> World:
    return await make_world(service)


def sessions(svc: Service) -> SessionStore:
    store = svc.app.component.plugin["xep_0050"].sessions
    assert isinstance(store, SessionStore)
    return store


async def is_member(svc: Service, admin: Client, jid: str) -> bool:
    try:
        await admin.dist.chain(svc.jid, jid)
    except IqError as exc:
        assert exc.iq["error"]["condition"] == "item-not-found"
        return False
    return True


# -- users ---------------------------------------------------------------------------


async def test_join_by_adhoc(service: Service, world: World) -> None:
    newcomer = await service.client(service.new_jid("adhocjoin"))
    step = await adhoc_start(newcomer, service.jid, "join")
    assert form_fields(step) == {"referrer": ("jid-single", True)}
    done = await adhoc_submit(newcomer, service.jid, step, {"referrer": world.merchant.bare})
    values = result_values(done)
    assert RULE.fullmatch(values["Rule number"]) and "-U" in values["Rule number"]
    assert values["Referrer"] == world.merchant.bare and values["Region"] == "440305"
    chain = chain_of(await newcomer.dist.chain(service.jid))
    assert chain["upline"][0][1] == world.merchant.bare
    assert len(sessions(service)) == 0


async def test_join_by_text(service: Service, world: World) -> None:
    newcomer = await service.client(service.new_jid("textjoin"))
    answer = await say(newcomer, service.jid, "join")
    assert "missing referrer" in answer and "Usage: join <referrer>" in answer
    answer = await say(newcomer, service.jid, "join nobody@localhost")
    assert answer.startswith("Not done: referrer nobody@localhost is not a member")
    answer = await say(newcomer, service.jid, f"Join {world.user.bare}")
    assert answer.startswith("Welcome! You joined as 440305-U")
    assert f"Referrer: {world.user.bare}" in answer
    chain = chain_of(await newcomer.dist.chain(service.jid))
    assert [link[1] for link in chain["upline"]] == [world.user.bare, world.merchant.bare]
    answer = await say(newcomer, service.jid, f"/register {world.user.bare}")
    assert answer.startswith("Not done:") and "already a member" in answer


async def test_chain_both_ways(service: Service, world: World) -> None:
    answer = await say(world.user, service.jid, "my chain")
    assert answer.startswith(f"Chain of {world.user.bare}")
    assert f"Upline 1: {world.merchant.bare}" in answer
    assert f"District agent 440305: {world.agent.bare}" in answer
    assert f"City agent 440300: {world.net.city_agent.bare}" in answer

    step = await adhoc_start(world.user, service.jid, "chain")
    assert form_fields(step) == {"jid": ("jid-single", False)}
    values = result_values(await adhoc_submit(world.user, service.jid, step, {}))
    assert values["JID"] == world.user.bare
    assert values["Upline 1"].startswith(world.merchant.bare)
    assert values["Province agent 440000"] == world.net.province_agent.bare
    # Another member's chain: admins and the region's agent, not other users.
    values = result_values(
        await adhoc_run(world.admin, service.jid, "chain", {"jid": world.user.bare})
    )
    assert values["JID"] == world.user.bare
    answer = await say(world.agent, service.jid, f"chain {world.user.bare}")
    assert answer.startswith(f"Chain of {world.user.bare}")
    answer = await say(world.merchant, service.jid, f"chain {world.user.bare}")
    assert answer.startswith("Not done: only admins")
    assert len(sessions(service)) == 0


# -- admins --------------------------------------------------------------------------


async def test_add_merchant_both_ways(service: Service, world: World) -> None:
    shop = service.new_jid("shop")
    answer = await say(world.admin, service.jid, f'merchant {shop} "Tea House" 440305')
    assert answer.startswith("Merchant added: 440305-M")
    assert "Name: Tea House" in answer
    assert await is_member(service, world.admin, shop)
    # Named words, a referrer, the two-word keyword.
    shop2 = service.new_jid("shop")
    answer = await say(
        world.admin,
        service.jid,
        f"add merchant {shop2} 'Noodle Bar' location=310106 referrer={world.user.bare}",
    )
    assert answer.startswith("Merchant added: 310106-M"), answer
    assert f"Referrer: {world.user.bare}" in answer
    # A location that resolves to no region: the error says why and shows the usage.
    answer = await say(world.admin, service.jid, f"merchant {service.new_jid('s')} X 0.0,-150.0")
    assert answer.startswith("Not done:") and "Usage: merchant" in answer

    step = await adhoc_start(world.admin, service.jid, "add-merchant")
    assert form_fields(step) == {
        "jid": ("jid-single", True),
        "name": ("text-single", True),
        "location": ("text-single", True),
        "referrer": ("jid-single", False),
        "district": ("text-single", False),
    }
    shop3 = service.new_jid("shop")
    values = result_values(
        await adhoc_submit(
            world.admin,
            service.jid,
            step,
            {"jid": shop3, "name": "Dim Sum", "location": "440305"},
        )
    )
    assert values["JID"] == shop3 and values["Role"] == "merchant"
    assert values["Name"] == "Dim Sum" and values["Rule number"].startswith("440305-M")
    # A form without a required field: bad-request, and the session is freed.
    step = await adhoc_start(world.admin, service.jid, "add-merchant")
    await expect_error(
        adhoc_submit(world.admin, service.jid, step, {"jid": service.new_jid("s")}), "bad-request"
    )
    assert len(sessions(service)) == 0


async def test_assign_agent_both_ways(service: Service, world: World) -> None:
    carol = service.new_jid("carol")
    answer = await say(world.admin, service.jid, f"agent {carol} 310101")
    assert answer.startswith(f"{carol} is now the agent of 310101.")
    assert "Rule number: 310101-A" in answer

    step = await adhoc_start(world.admin, service.jid, "assign-agent")
    assert form_fields(step) == {"jid": ("jid-single", True), "region": ("text-single", True)}
    dave = service.new_jid("dave")
    values = result_values(
        await adhoc_submit(world.admin, service.jid, step, {"jid": dave, "region": "310100"})
    )
    assert values["JID"] == dave and values["Role"] == "agent"
    overview = await say(world.admin, service.jid, "region 310101")
    assert f"agent {carol}" in overview.splitlines()[0]
    assert f"above · 310100 · 上海市 · city · {dave}" in overview, overview


async def test_find_member_both_ways(service: Service, world: World) -> None:
    rule_number = chain_of(await world.user.dist.chain(service.jid))["member"]["rule-number"]
    answer = await say(world.admin, service.jid, f"find {rule_number}")
    assert answer.startswith(f"Member {rule_number}")
    assert f"JID: {world.user.bare}" in answer and "Direct referrals:" in answer
    answer = await say(world.admin, service.jid, f"whois {world.agent.bare}")
    assert "Agent of: 440305" in answer

    step = await adhoc_start(world.admin, service.jid, "find-member")
    assert form_fields(step) == {"query": ("text-single", True)}
    values = result_values(
        await adhoc_submit(world.admin, service.jid, step, {"query": world.user.bare})
    )
    assert values["Rule number"] == rule_number
    assert values["Upline 1"].startswith(world.merchant.bare)
    step = await adhoc_start(world.admin, service.jid, "find-member")
    await expect_error(
        adhoc_submit(world.admin, service.jid, step, {"query": "ghost@localhost"}),
        "item-not-found",
    )
    assert (await say(world.admin, service.jid, "find ghost@localhost")).startswith(
        "Not done: no member ghost@localhost"
    )


async def test_region_overview_and_members(service: Service) -> None:
    # A district no other test uses (徐汇区, Shanghai), to count exactly.
    admin = await service.admin()
    agent = await service.client(service.new_jid("xicheng"))
    await say(admin, service.jid, f"agent {agent.bare} 310104")
    shop = await service.client(service.new_jid("shop"))
    await say(admin, service.jid, f"merchant {shop.bare} Shop 310104")
    for _ in range(2):
        user = await service.client()
        await user.dist.register(service.jid, shop.bare)

    done = await adhoc_run(admin, service.jid, "region-overview", {"region": "310104"})
    labels, rows = result_table(done)
    assert labels == ["Where", "Code", "Name", "Level", "Agent", "Members"]
    this = rows[0]
    assert this["where"] == "this" and this["code"] == "310104" and this["scope"] == "district"
    assert this["agent"] == agent.bare and this["members"] == "4"  # agent, shop, two users
    assert [r["code"] for r in rows[1:]] == ["310100", "310000"]
    answer = await say(admin, service.jid, "region 310104")
    first = answer.splitlines()[0]
    assert "310104 (district): 4 members" in first and agent.bare in first
    assert "vacant agent levels" in answer.splitlines()[-1]
    city = await say(admin, service.jid, "region 310100")
    assert f"310104 · 徐汇区 · district · {agent.bare} · 4" in city, city

    # Members: the agent of the district lists its own region; admins name one.
    answer = await say(agent, service.jid, "members")
    assert answer.startswith("Members of 310104: 4")
    assert shop.bare in answer
    done = await adhoc_run(admin, service.jid, "region-members", {"region": "310104"})
    labels, rows = result_table(done)
    assert labels == ["Rule number", "JID", "Role"] and len(rows) == 4
    assert sorted(r["role"] for r in rows) == ["agent", "merchant", "user", "user"]
    answer = await say(agent, service.jid, "members 440305")
    assert answer.startswith("Not done: you are not an agent of that region")


async def test_statistics_both_ways(service: Service, world: World) -> None:
    answer = await say(world.admin, service.jid, "stats")
    assert answer.startswith("Network statistics")
    assert re.search(r"Active members: \d+", answer)
    assert re.search(r"Bot JIDs: [1-9]", answer)
    done = await adhoc_start(world.admin, service.jid, "statistics")  # no fields: runs at once
    values = result_values(done)
    assert int(values["Users active"]) >= 1 and int(values["Merchants active"]) >= 1
    # The version in force: other tests of the session may have replaced the policy.
    policy = await service.app.services.policy.get(service.config.admins[0])
    assert values["Policy version"] == str(policy.version)
    assert len(sessions(service)) == 0


# -- discovery, help, suggestions ------------------------------------------------------


async def test_command_lists_per_requester(service: Service, world: World) -> None:
    for kind in KINDS:
        nodes = {node for node, kinds in ALLOWED.items() if kind in kinds}
        client = getattr(world, kind)
        assert set(await command_nodes(client, service.jid)) == nodes, kind
        answer = await say(client, service.jid, "help")
        keywords = {line.split()[0] for line in answer.splitlines()[1:]}
        assert keywords == {KEYWORDS[n] for n in nodes}, (kind, answer)
    assert {n for n, kinds in ALLOWED.items() if "user" in kinds} == MEMBER_NODES
    answer = await say(world.admin, service.jid, "help merchant")
    assert answer.startswith("Add a merchant")
    assert "Usage: merchant <jid> <name> <location> [referrer]" in answer
    # help about a command one may not run says only what one may run.
    answer = await say(world.user, service.jid, "help merchant")
    assert answer.startswith("You can say:") and "merchant <jid>" not in answer


async def test_unknown_text_suggests_close_commands(service: Service, world: World) -> None:
    answer = await say(world.nonmember, service.jid, f"jion {world.merchant.bare}")
    assert answer.startswith("I don't know “jion”. Did you mean:")
    assert "join <referrer> — Join through an invite" in answer
    answer = await say(world.admin, service.jid, "merchnt x")
    assert "merchant <jid> <name> <location> [referrer]" in answer
    # Users are never offered admin commands.
    answer = await say(world.user, service.jid, "merchnt x")
    assert "merchant <jid>" not in answer
    answer = await say(world.user, service.jid, "xyzzy plugh")
    assert answer == "I don't know “xyzzy”. Say help for what you can do."


async def test_chat_ignores_what_is_not_a_command(service: Service, world: World) -> None:
    # An error-type message, and a message without a body: no answer.
    world.user.send_message(mto=service.jid, mbody="help", mtype="error")
    world.user.send_message(mto=service.jid, mbody="", mtype="chat")
    answer = await say(world.user, service.jid, "help")
    assert answer.startswith("You can say:")
    assert world.user.messages.empty()


# -- sessions --------------------------------------------------------------------------


async def test_sessions_are_freed(service: Service, world: World) -> None:
    store = sessions(service)
    step = await adhoc_start(world.admin, service.jid, "find-member")
    assert len(store) == 1  # waiting for the form
    await adhoc_submit(world.admin, service.jid, step, {"query": world.user.bare})
    assert len(store) == 0
    # Cancelled.
    step = await adhoc_start(world.admin, service.jid, "find-member")
    await world.admin.plugin["xep_0050"].send_command(
        service.jid,
        "find-member",
        action="cancel",
        sessionid=step["command"]["sessionid"],
        timeout=10,
    )
    assert len(store) == 0
    # Failed.
    step = await adhoc_start(world.admin, service.jid, "find-member")
    await expect_error(
        adhoc_submit(world.admin, service.jid, step, {"query": "ghost@localhost"}),
        "item-not-found",
    )
    assert len(store) == 0
    # Refused at the start: never stored.
    await expect_error(adhoc_start(world.user, service.jid, "find-member"), "forbidden")
    assert len(store) == 0
    # Someone else may not continue a session.
    step = await adhoc_start(world.admin, service.jid, "find-member")
    await expect_error(
        adhoc_submit(world.user, service.jid, step, {"query": world.user.bare}), "item-not-found"
    )
    await adhoc_submit(world.admin, service.jid, step, {"query": world.user.bare})
    assert len(store) == 0


async def _stored_sessions(service: Service) -> int:
    async def count(conn: AsyncConnection) -> int:
        return int((await conn.execute(select(func.count()).select_from(CommandSession))).scalar())

    return await service.app.db.transaction(count)


async def test_sessions_live_in_the_database(service: Service, world: World) -> None:
    """A step reaches a process that does not remember the session (another process, or
    this one after a restart): it is rebuilt from the database. A step of a session that
    ended is bad-request with <bad-sessionid/>, and starts nothing."""
    store = sessions(service)
    before = await _stored_sessions(service)
    step = await adhoc_start(world.admin, service.jid, "find-member")
    assert await _stored_sessions(service) == before + 1
    store.clear()  # as if this step reached a process that never saw the session
    done = await adhoc_submit(world.admin, service.jid, step, {"query": world.user.bare})
    assert done["command"]["status"] == "completed"
    assert await _stored_sessions(service) == before
    error = await expect_error(
        adhoc_submit(world.admin, service.jid, step, {"query": world.user.bare}), "bad-request"
    )
    assert error.xml.find(f".//{{{COMMANDS_NS}}}bad-sessionid") is not None
    assert len(store) == 0 and await _stored_sessions(service) == before


def test_session_store_expires_abandoned_sessions() -> None:
    now = [0.0]
    store = SessionStore(ttl=10, max_sessions=3, clock=lambda: now[0])
    store["done"] = {"id": "done", "next": None}
    assert "done" not in store and len(store) == 0
    store["a"] = {"id": "a", "next": print}
    now[0] = 5
    store["b"] = {"id": "b", "next": print}
    assert set(store) == {"a", "b"}
    now[0] = 11
    assert set(store) == {"b"}
    store["b"] = {"id": "b", "next": None}  # completed after a further step
    assert len(store) == 0
    for key in "wxyz":
        store[key] = {"id": key, "next": print}
    assert set(store) == {"x", "y", "z"}  # flooded: the oldest goes first


# -- authorization ---------------------------------------------------------------------

KINDS = ("nonmember", "user", "merchant", "bot", "agent", "admin", "foreign")


async def test_authorization_matrix(service: Service) -> None:
    """Each command for each kind of requester; only the allowed ones change anything."""
    w = await make_world(service)
    for node, kinds in ALLOWED.items():
        for kind in KINDS:
            client: Client = getattr(w, kind)
            if kind in kinds:
                step = await adhoc_start(client, service.jid, node)
                assert step["type"] == "result", (node, kind)
                if step["command"]["status"] == "executing":
                    await world_cancel(client, service.jid, step)
                continue
            try:
                await adhoc_start(client, service.jid, node)
            except IqError as exc:
                condition = exc.iq["error"]["condition"]
            else:
                raise AssertionError(f"{kind} may run {node}")
            # A non-member is told to join where members may run the command.
            if kind == "nonmember" and "user" in ALLOWED[node]:
                assert condition == "registration-required", (node, kind)
            else:
                assert condition in ("forbidden", "registration-required"), (node, kind)
    assert len(sessions(service)) == 0

    # Effects through both paths: a refused requester changes nothing.
    for kind in KINDS:
        client = getattr(w, kind)
        ok = kind == "admin"
        shop, agent = service.new_jid("mx"), service.new_jid("ax")
        merchant_answer = await say(client, service.jid, f"merchant {shop} Shop 440305")
        agent_answer = await say(client, service.jid, f"agent {agent} 310105")
        assert merchant_answer.startswith("Merchant added") is ok, (kind, merchant_answer)
        assert ("is now the agent" in agent_answer) is ok, (kind, agent_answer)
        assert await is_member(service, w.admin, shop) is ok
        assert await is_member(service, w.admin, agent) is ok
        if not ok:
            assert merchant_answer.startswith("Not done:")
            assert agent_answer.startswith("Not done:")

    # join: only a non-member of a member domain joins (the shared admin stays no member,
    # as other tests expect).
    for kind in KINDS:
        if kind == "admin":
            continue
        client = getattr(w, kind)
        answer = await say(client, service.jid, f"join {w.merchant.bare}")
        assert answer.startswith("Welcome!") is (kind == "nonmember"), (kind, answer)
        if kind in ("bot", "foreign"):
            assert not await is_member(service, w.admin, client.bare)
    # Read-only admin queries refused to everyone else, with the service's error.
    for kind in KINDS:
        client = getattr(w, kind)
        for text, node in (
            (f"find {w.user.bare}", "find-member"),
            ("region 440305", "region-overview"),
            ("stats", "statistics"),
            ("members 440305", "region-members"),
            ("audit", "audit"),
            (f"terminate {w.user.bare}", "terminate"),
            (f"delete {w.user.bare}", "delete"),
            (f"reassign {w.user.bare} {w.merchant.bare} because", "reassign"),
            ("set policy 1000 3000,2000 1500 1000 500", "set-policy"),
            (f"link bot {service.new_jid('b')} {w.merchant.bare}", "link-bot"),
            ("approve 999999", "approve-withdrawal"),
            ("reject 999999 no", "reject-withdrawal"),
        ):
            answer = await say(client, service.jid, text)
            if kind not in ALLOWED[node]:
                assert answer.startswith("Not done:"), (kind, text, answer)
            elif not node.endswith("-withdrawal"):  # no withdrawal 999999: refused too
                assert not answer.startswith("Not done:"), (kind, text, answer)
    # Nobody but the admin could end or move the user; the admin never said yes.
    chain = chain_of(await w.user.dist.chain(service.jid))
    assert chain["member"]["status"] == "active"
    assert chain["upline"][0][1] == w.merchant.bare


async def world_cancel(client: Client, component: str, step: object) -> None:
    """Cancel an executing ad-hoc session."""
    from slixmpp import Iq

    assert isinstance(step, Iq)
    await client.plugin["xep_0050"].send_command(
        component,
        step["command"]["node"],
        action="cancel",
        sessionid=step["command"]["sessionid"],
        timeout=10,
    )


# -- repair ----------------------------------------------------------------------------


async def _line(svc: Service, merchant: Client, n: int) -> list[Client]:
    """n users, each referred by the previous one, the first by the merchant."""
    users: list[Client] = []
    referrer = merchant.bare
    for _ in range(n):
        user = await svc.client()
        await user.dist.register(svc.jid, referrer)
        users.append(user)
        referrer = user.bare
    return users


async def test_terminate_by_text_asks_first(service: Service, world: World) -> None:
    a, b, c = await _line(service, world.merchant, 3)
    prompt = await say(world.admin, service.jid, f"terminate {b.bare} left the company")
    assert prompt.startswith(f"Terminate {b.bare} (440305-U")
    assert "1 direct referrals" in prompt and prompt.endswith("anything else cancels.")
    assert (await say(world.admin, service.jid, "no")) == "Cancelled: nothing was changed."
    assert chain_of(await c.dist.chain(service.jid))["upline"][0][1] == b.bare
    await say(world.admin, service.jid, f"terminate {b.bare} left the company")
    done = await say(world.admin, service.jid, "yes")
    assert done.startswith(f"Terminated {b.bare}.")
    assert "Status: terminated" in done and "Referrals re-attached: 1" in done
    # c now hangs under a, its nearest active upline.
    assert chain_of(await c.dist.chain(service.jid))["upline"][0][1] == a.bare
    # A "yes" with nothing pending is just not understood.
    assert (await say(world.admin, service.jid, "yes")).startswith("I don't know “yes”")
    audit = await say(world.admin, service.jid, "audit max=5")
    assert f"member.terminate · {b.bare} · left the company" in audit, audit


async def test_terminate_and_delete_by_adhoc(service: Service, world: World) -> None:
    a, b = await _line(service, world.merchant, 2)
    step = await adhoc_start(world.admin, service.jid, "terminate")
    assert form_fields(step) == {"jid": ("jid-single", True), "reason": ("text-single", False)}
    assert step["command"]["actions"] == {"next"}
    confirm = await adhoc_submit(
        world.admin, service.jid, step, {"jid": a.bare, "reason": "fraud"}, action="next"
    )
    assert form_fields(confirm) == {"confirm": ("boolean", True)}
    assert a.bare in confirm["command"]["form"]["instructions"]
    # Not confirmed: nothing changes.
    done = await adhoc_submit(world.admin, service.jid, confirm, {"confirm": False})
    assert done["command"]["form"]["title"] == "Cancelled: nothing was changed."
    assert chain_of(await a.dist.chain(service.jid))["member"]["status"] == "active"
    step = await adhoc_start(world.admin, service.jid, "terminate")
    confirm = await adhoc_submit(world.admin, service.jid, step, {"jid": a.bare}, action="next")
    values = result_values(await adhoc_submit(world.admin, service.jid, confirm, {"confirm": True}))
    assert values["Status"] == "terminated" and values["Referrals re-attached"] == "1"
    assert chain_of(await b.dist.chain(service.jid))["upline"][0][1] == world.merchant.bare

    step = await adhoc_start(world.admin, service.jid, "delete")
    confirm = await adhoc_submit(
        world.admin, service.jid, step, {"jid": b.bare, "reason": "asked"}, action="next"
    )
    values = result_values(await adhoc_submit(world.admin, service.jid, confirm, {"confirm": True}))
    assert values["Status"] == "deleted" and values["JID"] != b.bare
    assert not await is_member(service, world.admin, b.bare)
    assert len(sessions(service)) == 0
    # Unknown member: refused before any question.
    await expect_error(
        adhoc_submit(
            world.admin,
            service.jid,
            await adhoc_start(world.admin, service.jid, "delete"),
            {"jid": "ghost@localhost"},
            action="next",
        ),
        "item-not-found",
    )
    assert len(sessions(service)) == 0


async def test_delete_by_text(service: Service, world: World) -> None:
    (a,) = await _line(service, world.merchant, 1)
    prompt = await say(world.admin, service.jid, f"delete {a.bare}")
    assert prompt.startswith(f"Delete {a.bare} (") and "No undo" in prompt
    done = await say(world.admin, service.jid, "YES")
    assert done.startswith(f"Deleted {a.bare}; now known as ")
    assert not await is_member(service, world.admin, a.bare)


async def test_reassign_both_ways(service: Service, world: World) -> None:
    a, b = await _line(service, world.merchant, 2)
    (c,) = await _line(service, world.merchant, 1)
    answer = await say(world.admin, service.jid, f"reassign {b.bare} {c.bare}")
    assert answer.startswith("missing reason.") and "Usage: reassign" in answer
    answer = await say(world.admin, service.jid, f"move {b.bare} {c.bare} wrong referrer given")
    assert answer.startswith(f"{b.bare} is now under {c.bare}.")
    assert chain_of(await b.dist.chain(service.jid))["upline"][0][1] == c.bare
    # A cycle is refused with the service's reason.
    answer = await say(world.admin, service.jid, f"reassign {c.bare} {b.bare} loop")
    assert answer.startswith("Not done:") and "cycle" in answer

    step = await adhoc_start(world.admin, service.jid, "reassign")
    assert form_fields(step) == {
        "jid": ("jid-single", True),
        "referrer": ("jid-single", True),
        "reason": ("text-single", True),
    }
    values = result_values(
        await adhoc_submit(
            world.admin, service.jid, step, {"jid": b.bare, "referrer": a.bare, "reason": "back"}
        )
    )
    assert values["Referrer"] == a.bare
    labels, rows = result_table(await adhoc_run(world.admin, service.jid, "audit", {"max": "2"}))
    assert labels == ["Entry", "When (UTC)", "Who", "What", "On", "Why"]
    assert [(r["action"], r["target"], r["reason"]) for r in rows] == [
        ("member.reassign", b.bare, "back"),
        ("member.reassign", b.bare, "wrong referrer given"),
    ]
    assert len(sessions(service)) == 0
