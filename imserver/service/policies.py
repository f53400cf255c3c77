"""The distribution policy in force: seeded from config, replaced by admins, versioned."""

from __future__ import annotations

from dataclasses import dataclass

from imserver.domain.policy import Policy
from imserver.service.context import Context
from imserver.store import policies
from imserver.store.db import Conn


@dataclass(frozen=True)
class VersionedPolicy:
    version: int
    policy: Policy


async def current_policy(conn: Conn) -> VersionedPolicy:
    """The newest stored policy (the database, not the config, is the truth at run time)."""
    found = await policies.latest(conn)
    if found is None:
        raise RuntimeError("no policy stored: run `imserver migrate` and start the service")
    return VersionedPolicy(*found)


async def seed_policy(ctx: Context) -> VersionedPolicy:
    """Store the config's policy as version 1 when the database has none yet."""

    async def use_case(conn: Conn) -> VersionedPolicy:
        found = await policies.latest(conn)
        if found is not None:
            return VersionedPolicy(*found)
        policy = ctx.config.policy.to_policy()
        version = await policies.add(conn, policy, "config", ctx.clock())
        return VersionedPolicy(version, policy)

    return await ctx.db.transaction(use_case)
