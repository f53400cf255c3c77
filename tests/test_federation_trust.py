"""Members from other XMPP servers: trust per domain and limits per domain (issue 16).

Through the real Prosody fixture: its third domain, FAR_DOMAIN, is not one of the
component's member domains, so it stands for another server (the server-to-server link
itself is tested in tests/test_federation.py); its trust starts at the config's default,
invite-only. The gate's counting is also checked alone, without a server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from imserver.config import load_config
from imserver.service.errors import ServiceError
from imserver.service.federation import DomainLimited, Gate
from imserver.store.domains import DomainRecord
from imserver.store.models import AuditEntry
from tests.conftest import FAR_DOMAIN, Service
from tests.support.clients import Client, expect_error
from tests.support.commands import say
from tests.support.network import Network, build_network, chain_of, member_of

CONFIG = Path(__file__).parents[1] / "config.toml"


async def _far(service: Service) -> Client:
    return await service.client(service.new_jid("far", FAR_DOMAIN))


async def _trust(service: Service, trust: str) -> str:
    admin = await service.admin()
    return await say(admin, service.jid, f"trust {FAR_DOMAIN} {trust} federation test")


async def _next_hour(service: Service) -> None:
    """Move the clock to the start of the next hour: the domain's hourly count resets."""
    now = service.clock.now
    service.clock.now = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


@pytest.fixture
async def net(service: Service) -> AsyncIterator[Network]:
    await _next_hour(service)
    yield await build_network(service)
    await _trust(service, "default")


async def test_invite_only_joins_through_a_local_referrer_or_an_invite(
    service: Service, net: Network
) -> None:
    first = await _far(service)
    joined = member_of(await first.dist.register(service.jid, net.merchant.bare))
    assert joined["jid"] == first.bare
    # Through a referrer of its own (remote) domain: refused, with what would do.
    second = await _far(service)
    error = await expect_error(second.dist.register(service.jid, first.bare), "forbidden")
    assert "invite only" in error["error"]["text"]
    # Through that member's invite code: in.
    joined = member_of(await second.dist.register(service.jid, joined["rule-number"]))
    assert joined["referrer"] == first.bare
    # A remote member is a member like any other: its chain, by the full bare JID.
    chain = chain_of(await second.dist.chain(service.jid))
    assert [jid for _, jid, _ in chain["upline"]][:2] == [first.bare, net.merchant.bare]


async def test_blocked_then_open(service: Service, net: Network) -> None:
    member = await _far(service)
    await member.dist.register(service.jid, net.merchant.bare)
    answer = await _trust(service, "blocked")
    assert answer.startswith(f"{FAR_DOMAIN} is blocked now"), answer
    newcomer = await _far(service)
    error = await expect_error(newcomer.dist.register(service.jid, net.merchant.bare), "forbidden")
    assert FAR_DOMAIN in error["error"]["text"]
    # The admin's change is in the audit log, with the reason.
    async with service.app.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(AuditEntry.details, AuditEntry.reason).where(
                    AuditEntry.action == "domain.trust"
                )
            )
        ).all()
    assert any(f'"{FAR_DOMAIN}"' in d and '"blocked"' in d and r == "federation test"
               for d, r in rows), rows  # fmt: skip
    # Open: a remote referrer will do.
    assert (await _trust(service, "open")).startswith(f"{FAR_DOMAIN} is open now")
    joined = member_of(await newcomer.dist.register(service.jid, member.bare))
    assert joined["referrer"] == member.bare
    listing = await say(await service.admin(), service.jid, "domains")
    assert FAR_DOMAIN in listing and "open" in listing, listing


async def test_trust_is_for_admins_and_checked(service: Service, net: Network) -> None:
    user = await service.client()
    await user.dist.register(service.jid, net.merchant.bare)
    assert "Not done" in await say(user, service.jid, f"trust {FAR_DOMAIN} open")
    admin = await service.admin()
    ours = service.config.xmpp.domain
    for bad in (f"trust {FAR_DOMAIN} trusted", "trust a@b open", f"trust {ours} open"):
        answer = await say(admin, service.jid, bad)
        assert answer.startswith(("Not done", "trust must")), (bad, answer)


async def test_hourly_limit_refuses_and_tells_the_admins(service: Service, net: Network) -> None:
    await _trust(service, "open")
    limit = service.config.federation.hourly_registrations
    admin = await service.admin()
    while not admin.messages.empty():
        admin.messages.get_nowait()
    people = [await _far(service) for _ in range(limit + 1)]
    for person in people[:limit]:
        await person.dist.register(service.jid, net.merchant.bare)
    error = await expect_error(
        people[limit].dist.register(service.jid, net.merchant.bare), "resource-constraint"
    )
    assert "this hour" in error["error"]["text"]
    alert = await asyncio.wait_for(admin.messages.get(), 10)
    assert FAR_DOMAIN in alert["body"] and "refused" in alert["body"], alert["body"]
    # The next hour, the same person gets in.
    await _next_hour(service)
    await people[limit].dist.register(service.jid, net.merchant.bare)


# -- the gate alone -----------------------------------------------------------------------


def _gate(records: dict[str, DomainRecord], **federation: object) -> Gate:
    env = {f"IMSERVER_FEDERATION__{k.upper()}": str(v) for k, v in federation.items()}
    config = load_config(CONFIG, env=env)
    return Gate(config, datetime(2026, 12, 6, 18, 30, tzinfo=UTC), records)


def test_gate_counts_members_and_hours() -> None:
    hour = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
    earlier = hour - timedelta(hours=1)
    records = {
        "full.example": DomainRecord("full.example", "open", None, None, 3, earlier, 0),
        "busy.example": DomainRecord("busy.example", "open", None, None, 0, hour, 2),
        "stale.example": DomainRecord("stale.example", "open", None, None, 0, earlier, 2),
    }
    gate = _gate(records, max_members=3, hourly_registrations=2)
    with pytest.raises(DomainLimited, match="has 3 members"):
        gate.admit("a@full.example", "shop@localhost", False)
    with pytest.raises(DomainLimited, match="this hour"):
        gate.admit("a@busy.example", "shop@localhost", False)
    # Last hour's count does not count; a new domain starts from nothing.
    gate.admit("a@stale.example", "shop@localhost", False)
    gate.admit("b@stale.example", "shop@localhost", False)
    with pytest.raises(DomainLimited):
        gate.admit("c@stale.example", "shop@localhost", False)
    gate.admit("a@new.example", "b@new.example", True)  # invite-only by default: by invite
    with pytest.raises(ServiceError, match="invite only"):
        gate.admit("c@new.example", "b@new.example", False)
    gate.admit("d@new.example", "shop@localhost", False)
    gate.admit("x@localhost", "y@localhost", False)  # ours: never counted
    assert gate.counts == {"stale.example": (2, hour, 2), "new.example": (2, hour, 2)}
