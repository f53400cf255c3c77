"""Bot JIDs that report payments for a merchant (the ``bots`` table)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.models import Bot
from imserver.store.prebuilt import locked

# Every request resolves its sender through this one (see store.prebuilt).
_MERCHANT_OF = select(Bot.merchant_id).where(Bot.jid == bindparam("jid"))


async def merchant_of(conn: AsyncConnection, jid: str, *, lock: bool = False) -> int | None:
    """The merchant a bot JID is linked to, if any."""
    stmt = locked(conn, _MERCHANT_OF) if lock else _MERCHANT_OF
    value = (await conn.execute(stmt, {"jid": jid})).scalar_one_or_none()
    return int(value) if value is not None else None


async def is_bot(conn: AsyncConnection, jid: str) -> bool:
    """Whether ``jid`` is linked to a merchant as its bot."""
    return await merchant_of(conn, jid) is not None


async def link(conn: AsyncConnection, jid: str, merchant_id: int, now: datetime) -> None:
    """Link a bot JID to a merchant (a concurrent link of the same JID fails on the key)."""
    await conn.execute(insert(Bot).values(jid=jid, merchant_id=merchant_id, created_at=now))


async def unlink(conn: AsyncConnection, jid: str, merchant_id: int) -> bool:
    """Unlink a bot JID from its merchant; False when it was not linked to that merchant."""
    stmt = delete(Bot).where(Bot.jid == jid, Bot.merchant_id == merchant_id)
    return bool((await conn.execute(stmt)).rowcount)


async def bots_of(conn: AsyncConnection, merchant_id: int) -> list[str]:
    """A merchant's bot JIDs, sorted."""
    stmt = select(Bot.jid).where(Bot.merchant_id == merchant_id).order_by(Bot.jid)
    return list((await conn.execute(stmt)).scalars())
