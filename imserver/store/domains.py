"""Remote XMPP domains: an admin's trust for each, and their registration counts."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import for_update, upsert, utc
from imserver.store.models import RemoteDomain


@dataclass(frozen=True)
class DomainRecord:
    """What is stored of a remote domain (absent: never seen, config trust, no counts)."""

    domain: str
    trust: str | None
    trust_set_by: str | None
    trust_set_at: datetime | None
    members: int
    hour_start: datetime | None
    hour_count: int


_COLUMNS = (
    RemoteDomain.domain,
    RemoteDomain.trust,
    RemoteDomain.trust_set_by,
    RemoteDomain.trust_set_at,
    RemoteDomain.members,
    RemoteDomain.hour_start,
    RemoteDomain.hour_count,
)


def _record(row: Any) -> DomainRecord:
    domain, trust, set_by, set_at, members, hour_start, hour_count = row
    return DomainRecord(domain, trust, set_by, utc(set_at), members, utc(hour_start), hour_count)


async def get_many(
    conn: AsyncConnection, domains: Collection[str], *, lock: bool = False
) -> dict[str, DomainRecord]:
    """The stored rows of these domains (locked until commit with ``lock``)."""
    if not domains:
        return {}
    stmt = select(*_COLUMNS).where(RemoteDomain.domain.in_(sorted(domains)))
    rows = await conn.execute(for_update(conn, stmt) if lock else stmt)
    return {r[0]: _record(r) for r in rows}


async def all_rows(conn: AsyncConnection) -> list[DomainRecord]:
    """Every stored domain, by name."""
    rows = await conn.execute(select(*_COLUMNS).order_by(RemoteDomain.domain))
    return [_record(r) for r in rows]


async def set_trust(
    conn: AsyncConnection, domain: str, trust: str | None, actor: str, now: datetime
) -> None:
    """Store an admin's trust for ``domain`` (None: back to the config's)."""
    values = {"trust": trust, "trust_set_by": actor, "trust_set_at": now}
    stmt = upsert(conn, RemoteDomain).values(domain=domain, members=0, hour_count=0, **values)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=[RemoteDomain.domain], set_=values)
    )


async def count_registrations(
    conn: AsyncConnection, counts: dict[str, tuple[int, datetime | None, int]]
) -> None:
    """Store the new counts of these domains: domain -> (members, hour start, that hour's
    registrations)."""
    for domain, (members, hour_start, hour_count) in counts.items():
        values = {"members": members, "hour_start": hour_start, "hour_count": hour_count}
        stmt = upsert(conn, RemoteDomain).values(domain=domain, **values)
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=[RemoteDomain.domain], set_=values)
        )


async def stored_trusts(conn: AsyncConnection) -> dict[str, str]:
    """domain -> trust, of the domains whose trust an admin set (a short list)."""
    rows = await conn.execute(
        select(RemoteDomain.domain, RemoteDomain.trust).where(RemoteDomain.trust.is_not(None))
    )
    return {d: t for d, t in rows if t is not None}
