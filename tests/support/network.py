"""Building a small network through the real protocol, for end-to-end tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slixmpp import Iq

from tests.support.clients import Client


async def add_merchant(
    admin: Client,
    component: str,
    jid: str,
    *,
    name: str = "Tea House",
    region: str | None = "440305",
    referrer: str | None = None,
    location: dict[str, str] | None = None,
) -> Iq:
    """Have the admin create a merchant; returns the result IQ."""
    where = location or {"region": region or ""}
    return await admin.dist.merchant(component, jid, name, where, referrer=referrer, timeout=10)


async def assign_agent(admin: Client, component: str, jid: str, region: str) -> Iq:
    """Have the admin make ``jid`` the agent of ``region``."""
    return await admin.dist.agent(component, jid, region, timeout=10)


def member_of(iq: Iq) -> dict[str, str]:
    """The attributes of the answer's <member/>."""
    return dict(iq["member"].xml.attrib)


def chain_of(iq: Iq) -> dict[str, Any]:
    """The chain answer as plain data: member, upline [(level, jid, rule)], agents."""
    chain = iq["chain"]
    return {
        "member": dict(chain["member"].xml.attrib),
        "upline": [
            (int(link["level"]), link["jid"], link["rule-number"])
            for link in chain["upline"]["links"]
        ],
        "agents": [
            (link["scope"], link["region"], link["jid"] or None)
            for link in chain["agents"]["links"]
        ],
    }


@dataclass
class Network:
    """A merchant in district 440305 with agents at district, city and province."""

    merchant: Client
    district_agent: Client
    city_agent: Client
    province_agent: Client
    merchant_rule: str


async def build_network(svc: Any) -> Network:
    """Create the standard network through the admin's requests."""
    admin = await svc.admin()
    merchant = await svc.client(svc.new_jid("shop"))
    agents = [await svc.client(svc.new_jid(p)) for p in ("district", "city", "province")]
    for agent, region in zip(agents, ("440305", "440300", "440000"), strict=True):
        await assign_agent(admin, svc.jid, agent.bare, region)
    answer = await add_merchant(admin, svc.jid, merchant.bare)
    return Network(merchant, *agents, member_of(answer)["rule-number"])
