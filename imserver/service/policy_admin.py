"""Reading and replacing the distribution policy at run time (versioned)."""

from __future__ import annotations

from imserver.domain.policy import Policy, PolicyError
from imserver.service.authz import Capability, resolve_actor
from imserver.service.context import Context
from imserver.service.errors import bad_request
from imserver.service.inputs import parse_reason
from imserver.service.money_views import PolicyView
from imserver.service.policies import current_policy
from imserver.store import audit, policies
from imserver.store.db import Conn


def _view(version: int, p: Policy) -> PolicyView:
    return PolicyView(version, p.pool_bp, p.referral_bp, p.agent_bp, p.allow_third_level)


def _bp(raw: str | None, what: str) -> int:
    if raw is None or not raw.isdigit() or len(raw) > 5:
        raise bad_request(f"{what} must be basis points (0..10000)")
    return int(raw)


def parse_policy(
    pool: str | None,
    referral: str | None,
    district: str | None,
    city: str | None,
    province: str | None,
    third_level: str | None,
) -> Policy:
    """A complete policy from the wire attributes, validated by the domain rules."""
    levels = (referral or "").replace(",", " ").split()
    if not levels:
        raise bad_request("referral-bp must list the levels' basis points, nearest first")
    if third_level not in (None, "", "true", "false", "1", "0"):
        raise bad_request("allow-third-level must be true or false")
    policy = Policy(
        pool_bp=_bp(pool, "pool-bp"),
        referral_bp=tuple(_bp(x, "referral-bp") for x in levels),
        agent_bp=(_bp(district, "district-bp"), _bp(city, "city-bp"), _bp(province, "province-bp")),
        allow_third_level=third_level in ("true", "1"),
    )
    try:
        policy.validate()
    except PolicyError as exc:
        raise bad_request(str(exc)) from None
    return policy


class PolicyAdmin:
    """``policy`` get (members, bots, admins) and set (admins)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def get(self, sender: str) -> PolicyView:
        """The policy in force and its version."""

        async def use_case(conn: Conn) -> PolicyView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.POLICY_READ)
            current = await current_policy(conn)
            return _view(current.version, current.policy)

        return await self.ctx.db.transaction(use_case)

    async def replace(
        self, sender: str, fields: dict[str, str | None], reason: str | None
    ) -> PolicyView:
        """Store a new version; payments from now on use it, earlier ones keep theirs.

        ``fields`` holds the wire attributes (pool-bp, referral-bp, district-bp, city-bp,
        province-bp, allow-third-level); the whole policy is given, nothing is inherited.
        """

        async def use_case(conn: Conn) -> PolicyView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.POLICY_SET)
            why = parse_reason(reason)
            policy = parse_policy(
                fields.get("pool-bp"),
                fields.get("referral-bp"),
                fields.get("district-bp"),
                fields.get("city-bp"),
                fields.get("province-bp"),
                fields.get("allow-third-level"),
            )
            now = self.ctx.clock()
            version = await policies.add(conn, policy, sender, now)
            await audit.record(
                conn,
                at=now,
                actor=sender,
                action="policy.set",
                target=f"policy:{version}",
                details=policy.as_dict(),
                reason=why,
            )
            return _view(version, policy)

        return await self.ctx.db.transaction(use_case)
