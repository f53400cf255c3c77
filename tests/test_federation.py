"""Federation through real servers: two private Prosody servers linked by s2s on loopback
(tests/support/federation.py), the component on server A, members on server B."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from slixmpp import Message

from plugins.distribution import NS
from tests.support.clients import Client
from tests.support.commands import say
from tests.support.faults import shares_of
from tests.support.federation import (  # noqa: F401 (federation_fixture: the fixture)
    A_DOMAIN,
    B_DOMAIN,
    Federation,
    Home,
    federation_fixture,
    home_component,
)
from tests.support.network import Network, build_network, chain_of


async def test_servers_talk_over_s2s(federation: Federation) -> None:
    """The rig itself: a user of each server reaches the other, both ways (dialback)."""
    a = await federation.client(f"alice@{A_DOMAIN}")
    b = await federation.client(f"bob@{B_DOMAIN}")
    try:
        a.send_message(mto=b.bare, mbody="over s2s", mtype="chat")
        got = await asyncio.wait_for(b.messages.get(), 15)
        assert (str(got["from"].bare), str(got["body"])) == (a.bare, "over s2s")
        b.send_message(mto=a.bare, mbody="and back", mtype="chat")
        got = await asyncio.wait_for(a.messages.get(), 15)
        assert (str(got["from"].bare), str(got["body"])) == (b.bare, "and back")
    finally:
        await asyncio.gather(a.close(), b.close())


# Lets server B's users join. The one line to switch to the trust policy of issue 16
# (B's domain `open`, or `invite-only` joined through a local merchant) when it lands.
ADMIT_REMOTE = {"IMSERVER_XMPP__MEMBER_DOMAINS": json.dumps([A_DOMAIN, B_DOMAIN])}


@pytest.fixture(scope="module")
async def home(
    federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Home]:
    """The component on server A, letting server B's users in."""
    async with home_component(federation, tmp_path_factory.mktemp("db"), ADMIT_REMOTE) as h:
        yield h


@dataclass
class RemoteReferrer:
    """A member of server B who joined through a merchant of A, and the merchant's bot."""

    net: Network
    member: Client
    bot: Client

    async def payer(self, home: Home) -> Client:
        """A payer of A whom the remote member referred."""
        payer = await home.client(home.new_jid("payer"))
        await payer.dist.register(home.jid, self.member.bare)
        return payer


async def remote_referrer(home: Home) -> RemoteReferrer:
    net = await build_network(home)
    member = await home.client(home.new_jid("rita", B_DOMAIN))
    await member.dist.register(home.jid, net.merchant.bare, timeout=15)
    bot = await home.client(home.new_jid("bot"))
    await net.merchant.dist.bot(home.jid, bot.bare)
    return RemoteReferrer(net, member, bot)


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
    payer = await r.payer(home)
    answer = await r.bot.dist.pay(home.jid, "fed-1", payer.bare, 10000, "CNY")
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
    # The chat interface works over s2s too.
    assert "¥" in await say(r.member, home.jid, "balance", timeout=15)
    figures(
        "remote_member",
        join_s=round(joined - started, 2),
        notification_s=round(notified - paid, 3),
        amount=amount,
    )
