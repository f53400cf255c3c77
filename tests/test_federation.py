"""Federation through real servers: two private Prosody servers linked by s2s on loopback
(tests/support/federation.py), the component on server A, members on server B."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from slixmpp import Iq, Message
from sqlalchemy import String, func, select

from imserver.devserver.prosody import ProsodyError, ProsodyInstance, free_port
from imserver.domain.money import format_amount
from imserver.metrics import ComponentCollector
from imserver.status import Report, database_status
from imserver.store.models import Base
from plugins.distribution import NS
from tests.conftest import BACKENDS
from tests.support.clients import Client, expect_error
from tests.support.commands import adhoc_run, command_nodes, result_values, say
from tests.support.faults import shares_of
from tests.support.federation import (  # noqa: F401 (federation_fixture: the fixture)
    Federation,
    Home,
    federation_fixture,
    home_component,
)
from tests.support.network import Network, build_network, chain_of, member_of


async def test_servers_talk_over_s2s(federation: Federation) -> None:
    """The rig itself: a user of each server reaches the other, both ways (dialback)."""
    a = await federation.client(f"alice@{federation.a.domain}")
    b = await federation.client(f"bob@{federation.b.domain}")
    try:
        a.send_message(mto=b.bare, mbody="over s2s", mtype="chat")
        got = await asyncio.wait_for(b.messages.get(), 15)
        assert (str(got["from"].bare), str(got["body"])) == (a.bare, "over s2s")
        b.send_message(mto=a.bare, mbody="and back", mtype="chat")
        got = await asyncio.wait_for(a.messages.get(), 15)
        assert (str(got["from"].bare), str(got["body"])) == (b.bare, "and back")
    finally:
        await asyncio.gather(a.close(), b.close())


def test_a_taken_s2s_address_is_refused(
    federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A server whose s2s address is in use does not start (it would pass for ready)."""
    taken = federation.b.domain
    other = ProsodyInstance(
        tmp_path_factory.mktemp("prosody-c"),
        domain=taken,
        client_port=free_port(),
        component_port=free_port(),
        s2s_interfaces=(taken,),
    )
    with pytest.raises(ProsodyError, match=f"port 5269 on {re.escape(taken)} is already in use"):
        other.start()
    assert other.process is None


def admit_remote(fed: Federation) -> dict[str, str]:
    """The settings that let server B's users join: B is remote (A alone is ours) and
    invite-only, so its users join through a local merchant. Short waits between tries
    after a bounce: a test waits for the last one."""
    return {
        "IMSERVER_XMPP__MEMBER_DOMAINS": json.dumps([fed.a.domain]),
        "IMSERVER_FEDERATION__TRUST": json.dumps({fed.b.domain: "invite-only"}),
        "IMSERVER_FEDERATION__RETRY_FIRST_SECONDS": "1",
        "IMSERVER_FEDERATION__RETRY_LONGEST_SECONDS": "4",
    }


@asynccontextmanager
async def admitting_home(
    federation: Federation,
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> AsyncIterator[Home]:
    """The component on server A, letting server B's users in (``env`` adds settings)."""
    db_dir = tmp_path_factory.mktemp("db")
    settings = {**admit_remote(federation), **(env or {})}
    async with home_component(federation, backend, db_dir, settings, name) as h:
        yield h
        # Whatever the remote members went through, the ledger balances.
        report = await h.app.services.ledger.check()
        assert report.ok, report.problems


@pytest.fixture(scope="module")
async def home(
    federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Home]:
    """The component on SQLite: the through-servers tests need one backend (the store
    functions they add are run on both by the bounce and the give-up tests)."""
    async with admitting_home(federation, "sqlite", tmp_path_factory) as h:
        yield h


@pytest.fixture(scope="module", params=BACKENDS)
async def any_home(
    request: pytest.FixtureRequest,
    federation: Federation,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Home]:
    """The component on each backend (``home`` itself for SQLite)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("home")
        return
    async with admitting_home(federation, request.param, tmp_path_factory) as h:
        yield h


@dataclass
class RemoteReferrer:
    """A member of server B who joined through a merchant of A, a payer of A whom it
    referred, and the merchant's bot."""

    home: Home
    net: Network
    member: Client
    payer: Client
    bot: Client

    async def pay(self, ref: str) -> Iq:
        """The bot reports a payment of the payer (¥100): it earns for the member."""
        return await self.bot.dist.pay(self.home.jid, ref, self.payer.bare, 10000, "CNY")


async def remote_referrer(home: Home) -> RemoteReferrer:
    net = await build_network(home)
    member = await home.client(home.new_jid("rita", home.federation.b.domain))
    await member.dist.register(home.jid, net.merchant.bare, timeout=15)
    payer = await home.client(home.new_jid("payer"))
    await payer.dist.register(home.jid, member.bare)
    bot = await home.client(home.new_jid("bot"))
    await net.merchant.dist.bot(home.jid, bot.bare)
    return RemoteReferrer(home, net, member, payer, bot)


def earnings(msg: Message) -> list[dict[str, str]]:
    """The <earning/> elements of a notification, as attributes."""
    return [dict(e.xml.attrib) for e in msg["earnings"]]


async def next_notification(client: Client, timeout: float) -> Message:
    """The next earning notification the client gets (other messages skipped)."""
    while True:
        msg = await asyncio.wait_for(client.messages.get(), timeout)
        if msg["type"] == "chat" and msg.xml.find(f"{{{NS}}}earning") is not None:
            return msg


def figures(test: str, **values: object) -> None:
    """The test's figures as one JSON line (shown with ``pytest -s``)."""
    print(json.dumps({"test": test, **values}, sort_keys=True))


async def test_remote_member_joins_earns_and_reads(home: Home) -> None:
    """A member of B joins through a merchant of A, is paid for a payer it referred,
    gets the notification over s2s and reads its balance and statement over s2s."""
    started = time.monotonic()
    r = await remote_referrer(home)
    joined = time.monotonic()
    chain = chain_of(await r.member.dist.chain(home.jid, timeout=15))
    assert chain["member"]["jid"] == r.member.bare
    assert [(level, jid) for level, jid, _ in chain["upline"]] == [(1, r.net.merchant.bare)]
    answer = await r.pay("fed-1")
    earned = [s for s in shares_of(answer) if s[2] == r.member.bare]
    # The default policy: level 1 of the referral pool (10 %) takes 30 %.
    assert [(role, level, amount) for role, level, _, amount in earned] == [("referrer", "1", 300)]
    amount = earned[0][3]
    paid = time.monotonic()
    msg = await next_notification(r.member, timeout=15)
    notified = time.monotonic()
    assert msg["from"].bare == home.jid
    assert [(e["payment"], e["amount"]) for e in earnings(msg)] == [("fed-1", str(amount))]
    balance = {
        a["currency"]: (int(a["pending"]), int(a["available"]))
        for a in (await r.member.dist.balance(home.jid, timeout=15))["balance"]["amounts"]
    }
    assert balance == {"CNY": (amount, 0)}
    page = (await r.member.dist.statement(home.jid, timeout=15))["statement"]
    assert [(e["kind"], e["amount"], e["payment"]) for e in page["entries"]] == [
        ("payment", str(amount), "fed-1")
    ]
    # The chat interface works over s2s too, and the ad-hoc commands.
    assert "¥" in await say(r.member, home.jid, "balance", timeout=15)
    nodes = await command_nodes(r.member, home.jid)
    assert {"balance", "statement", "withdraw", "invite"} <= set(nodes), nodes
    done = await adhoc_run(r.member, home.jid, "balance", {})
    assert result_values(done)["Pending"] == format_amount(amount, "CNY"), done
    # Earnings of a remote member are held: nothing to withdraw yet.
    withdraw = r.member.dist.withdraw(home.jid, amount, "CNY", timeout=15)
    await expect_error(withdraw, "not-acceptable")
    figures(
        "remote_member",
        join_s=round(joined - started, 2),
        notification_s=round(notified - paid, 3),
        amount=amount,
    )


async def test_remote_members_are_terminated_and_erased_like_ours(home: Home) -> None:
    """An admin ends the service of a member of B and erases another: their chains are
    repaired, they earn nothing more, and their requests over s2s get the answers a
    local member's would; an erased JID is nowhere in the database."""
    admin = await home.admin()
    ended = await remote_referrer(home)
    await ended.pay("fed-end-1")
    answer = member_of(await admin.dist.terminate(home.jid, ended.member.bare, "a farm"))
    assert (answer["status"], answer["repaired"]) == ("terminated", "1")
    chain = chain_of(await ended.payer.dist.chain(home.jid))
    assert [jid for _, jid, _ in chain["upline"]] == [ended.net.merchant.bare]
    paid = await ended.pay("fed-end-2")
    assert all(jid != ended.member.bare for _, _, jid, _ in shares_of(paid))
    # Over s2s, the terminated member cannot join again, nor refer anyone.
    await expect_error(
        ended.member.dist.register(home.jid, ended.net.merchant.bare, timeout=15), "conflict"
    )
    newcomer = await home.client(home.new_jid("nico"))
    await expect_error(newcomer.dist.register(home.jid, ended.member.bare), "not-acceptable")

    erased = await remote_referrer(home)
    await erased.pay("fed-erase-1")
    await next_notification(erased.member, timeout=15)
    jid = erased.member.bare
    answer = member_of(await admin.dist.delete(home.jid, jid, "asked to be forgotten"))
    assert answer["status"] == "deleted" and answer["jid"].endswith("@erased.invalid")
    assert await _rows_naming(home, jid) == {}
    chain = chain_of(await erased.payer.dist.chain(home.jid))
    assert [j for _, j, _ in chain["upline"]] == [erased.net.merchant.bare]
    # The JID may join again over s2s, as a new member with a new rule number.
    again = member_of(
        await erased.member.dist.register(home.jid, erased.net.merchant.bare, timeout=15)
    )
    assert again["jid"] == jid and again["rule-number"] != answer["rule-number"]


async def _rows_naming(home: Home, jid: str) -> dict[str, int]:
    """table.column -> how many rows hold ``jid``, over every text column (none: {})."""
    found: dict[str, int] = {}
    async with home.app.db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if isinstance(column.type, String):
                    stmt = select(func.count()).where(column.contains(jid, autoescape=True))
                    count = int((await conn.execute(stmt)).scalar_one())
                    if count:
                        found[f"{table.name}.{column.name}"] = count
    return found


OUTAGE = 10.0  # seconds server B is down in `make test`; 30 s in `make soak`
PAY_EVERY = 3.0  # a payment that earns for B's member every this many seconds meanwhile


async def test_nothing_lost_while_the_remote_server_is_down(
    home: Home, federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    await remote_outage(home, federation, caplog, OUTAGE)


@pytest.mark.soak
async def test_soak_remote_server_down_30_s(
    home: Home, federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    await remote_outage(home, federation, caplog, 30.0)


async def remote_outage(
    home: Home, federation: Federation, caplog: pytest.LogCaptureFixture, outage: float
) -> None:
    """Server B stopped for ``outage`` seconds while payments earn for its member: server
    A bounces each notification back, the outbox keeps it and sends it again (same id)
    until B is back; every notification arrives then, none twice, and the outage is
    logged once."""
    outbox = home.app.services.outbox
    notifier = home.app.component.notifier
    r = await remote_referrer(home)
    await r.pay(f"down{outage:.0f}-0")
    await next_notification(r.member, timeout=15)  # the link works before the outage
    await r.member.close()
    del home.clients[r.member.bare]
    bounced_before = notifier.bounced
    caplog.set_level(logging.WARNING, logger="imserver.service.outbox")

    await asyncio.to_thread(federation.b.stop)
    down = time.monotonic()
    paid: list[str] = []
    while time.monotonic() - down < outage - PAY_EVERY:
        ref = f"down{outage:.0f}-{len(paid) + 1}"
        assert any(s[2] == r.member.bare for s in shares_of(await r.pay(ref)))
        paid.append(ref)
        await asyncio.sleep(PAY_EVERY)
    await asyncio.sleep(max(0.0, outage - (time.monotonic() - down)))
    bounced = notifier.bounced - bounced_before
    waiting = await outbox.unsent()
    # Every notification was bounced back and waits (none marked sent and forgotten).
    assert bounced >= len(paid) and waiting >= 1, (bounced, waiting)
    # Started from the main thread (blocking the loop a moment): it dies with the run.
    federation.b.start()
    back = time.monotonic()

    member = await home.client(r.member.bare)
    got: dict[str, list[str]] = {}  # payment -> the ids of the messages it came in
    arrivals: list[float] = []
    while set(got) < set(paid):
        try:
            msg = await next_notification(member, timeout=30)
        except TimeoutError:
            break
        arrivals.append(time.monotonic() - back)
        for e in earnings(msg):
            got.setdefault(e["payment"], []).append(str(msg["id"]))
    assert sorted(got) == sorted(paid), f"missing {sorted(set(paid) - set(got))}"
    # None twice: nothing more comes once the retries are over.
    await asyncio.sleep(2 * outbox.retry.longest.total_seconds())
    for msg in drain(member):
        for e in earnings(msg):
            got.setdefault(e["payment"], []).append(str(msg["id"]))
    repeated = {p: ids for p, ids in got.items() if len(ids) > 1}
    assert not repeated, repeated
    assert await outbox.unsent() == 0
    remote = federation.b.domain
    # The component's own warnings (a client logging in again names the domain too).
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("imserver") and r.levelno >= logging.WARNING
        and remote in r.getMessage()
    ]  # fmt: skip
    assert len(warnings) == 1, warnings
    figures(
        "remote_outage",
        outage_s=outage,
        payments=len(paid),
        bounced=bounced,
        messages=len(arrivals),
        first_after_s=round(arrivals[0], 2),
        last_after_s=round(arrivals[-1], 2),
        repeated=len(repeated),
    )


GIVE_UP = 4.0  # seconds: [federation] give_up_after_seconds of the give-up test


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Wait until ``check()`` holds (looked at every 0.1 s), else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_notifications_are_given_up_after_the_remote_server_stays_down(
    backend: str,
    federation: Federation,
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With give_up_after_seconds of 4: a notification whose remote server has bounced
    it for longer is given up (never sent, even once the server is back), counted in the
    status and the metrics, logged once and told to the admins in chat; one that bounced
    for less arrives once the server is back. The ledger is untouched (the fixture checks
    it balances; the balance reads all three earnings). On both backends: it is the one
    test that gives up (about 13 s each, a component of its own config)."""
    env = {
        "IMSERVER_FEDERATION__RETRY_FIRST_SECONDS": "0.5",
        "IMSERVER_FEDERATION__RETRY_LONGEST_SECONDS": "1",
        "IMSERVER_FEDERATION__GIVE_UP_AFTER_SECONDS": str(GIVE_UP),
    }
    async with admitting_home(federation, backend, tmp_path_factory, env, "own") as home:
        health, notifier = home.app.services.health, home.app.component.notifier
        admin = await home.admin()
        r = await remote_referrer(home)
        await r.pay("gone-0")
        await next_notification(r.member, timeout=15)  # the link works before the outage
        await r.member.close()
        del home.clients[r.member.bare]
        caplog.set_level(logging.WARNING, logger="imserver.service.outbox")

        async def retrying() -> bool:
            return (await health.backlog()).outbox_retrying == 1

        async def given_up() -> bool:
            return notifier.given_up == 1

        await asyncio.to_thread(federation.b.stop)
        try:
            await r.pay("gone-1")
            await until("retry waiting", retrying, 10)
            down = time.monotonic()
            await until("given-up notification", given_up, GIVE_UP + 10)
            waited = time.monotonic() - down
            bounced = notifier.bounced
            await r.pay("kept-1")
            await until("bounce of the second payment", retrying, 10)
            assert notifier.bounced > bounced
        finally:
            federation.b.start()  # the module's other tests need B, whatever happened
        back = time.monotonic()

        member = await home.client(r.member.bare)
        msg = await next_notification(member, timeout=15)
        arrived = time.monotonic() - back
        assert [e["payment"] for e in earnings(msg)] == ["kept-1"]
        # The given-up one never comes: its retries (at most 1 s apart) are over.
        await asyncio.sleep(3.0)
        late = [m for m in drain(member) if m.xml.find(f"{{{NS}}}earning") is not None]
        assert not late, [earnings(m) for m in late]
        backlog = await health.backlog()
        assert (backlog.outbox_pending, backlog.outbox_retrying, backlog.outbox_given_up) == (
            0,
            0,
            1,
        )
        # The member's money is all there: both earnings, given up or not.
        amounts = (await member.dist.balance(home.jid, timeout=15))["balance"]["amounts"]
        assert [int(a["pending"]) for a in amounts] == [900]  # 3 payments of 300

        # imserver status (its database part, as the command reads it) and the metrics.
        report = Report()
        await asyncio.to_thread(database_status, home.app.config, report, True)
        assert (
            "remote     0 notifications wait for an unreachable remote server; 1 given up"
            in report.lines
        ), report.lines
        assert report.ok, report.text()
        collector = ComponentCollector(home.app)
        collector.backlog = backlog
        gauges = {m.name: m.samples[0].value for m in collector.collect() if not m.samples[1:]}
        assert gauges["imserver_outbox_given_up"] == 1
        assert gauges["imserver_outbox_remote_retrying"] == 0

        # Logged once as the outage began, once as the first notification was given up.
        remote = federation.b.domain
        warnings = [
            rec.getMessage()
            for rec in caplog.records
            if rec.name == "imserver.service.outbox" and remote in rec.getMessage()
        ]
        assert len(warnings) == 2 and "given up" in warnings[1], warnings
        # The admins heard of it in chat.
        told = [str(m["body"]) for m in drain(admin) if "given up" in str(m["body"])]
        assert len(told) == 1 and remote in told[0], told
    figures(
        "remote_give_up",
        backend=backend,
        give_up_s=GIVE_UP,
        given_up_after_s=round(waited, 2),
        kept_arrived_after_s=round(arrived, 2),
    )


def drain(client: Client) -> list[Message]:
    """The messages the client has received and nobody has read yet."""
    out = []
    while not client.messages.empty():
        out.append(client.messages.get_nowait())
    return out


def bounce(sender: Client, component: str, message_id: str, condition: str) -> None:
    """Send the component an error for ``message_id``, as a server's bounce looks."""
    msg = sender.make_message(mto=component, mtype="error")
    msg["id"] = message_id
    msg["error"]["type"] = "cancel"
    msg["error"]["condition"] = condition
    msg.send()


async def test_a_bounce_is_believed_only_from_its_recipient(any_home: Home) -> None:
    """An error for a notification puts it back only when it comes from the recipient
    (or its server) for a message sent to it, with a condition that says its server was
    unreachable; then the same message comes again with the same id."""
    home = any_home
    notifier = home.app.component.notifier
    r = await remote_referrer(home)
    await r.pay("forged-1")
    mine = str((await next_notification(r.member, timeout=15))["id"])
    theirs = str((await next_notification(r.net.merchant, timeout=15))["id"])
    mallory = await home.client(home.new_jid("mallory"))
    before = notifier.bounced
    bounce(mallory, home.jid, mine, "remote-server-not-found")  # not its recipient
    bounce(r.member, home.jid, theirs, "remote-server-not-found")  # not a message sent to it
    bounce(r.member, home.jid, mine, "service-unavailable")  # not an unreachable server
    bounce(r.member, home.jid, "earning-" + "9" * 40, "remote-server-not-found")  # not our id
    # Each sender's next request is handled after its bounce: then the outbox has decided.
    await say(mallory, home.jid, "help", timeout=15)
    await say(r.member, home.jid, "help", timeout=15)
    await notifier.idle()
    assert (notifier.bounced - before, await home.app.services.outbox.unsent()) == (0, 0)
    await asyncio.sleep(1.5)  # a retry would have come by now
    assert r.member.messages.empty() and r.net.merchant.messages.empty()
    # From its recipient, for its message: the same message again, same id.
    bounce(r.member, home.jid, mine, "remote-server-timeout")
    again = await next_notification(r.member, timeout=15)
    assert (str(again["id"]), [e["payment"] for e in earnings(again)]) == (mine, ["forged-1"])
    assert notifier.bounced - before == 1
