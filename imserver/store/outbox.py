"""The notification outbox: rows written in the transaction that caused them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Table, bindparam, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.store.dialect import bulk_insert, skip_locked, utc
from imserver.store.models import OutboxMessage

_OUTBOX: Table = OutboxMessage.__table__  # type: ignore[assignment]


class ClaimedRow(NamedTuple):
    """A claimed notification as the sender needs it: the payload stays JSON text until
    its message is written; ``message_id`` is the message it goes out in."""

    id: int
    recipient: str
    payload: str
    message_id: int


# One encoder for every row: json.dumps with options builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


async def add(
    conn: AsyncConnection, rows: Sequence[tuple[int, str, dict[str, str]]], now: datetime
) -> None:
    """Queue notifications: (member id, recipient JID, payload of text values)."""
    await bulk_insert(
        conn,
        _OUTBOX,
        ("member_id", "recipient", "payload", "created_at", "sent_at"),
        [
            (member_id, recipient, _ENCODE(payload), now, None)
            for member_id, recipient, payload in rows
        ],
    )


# (recipient, id) of the last row a claim took: the next claim goes on after it.
Cursor = tuple[str, int]


async def claim(
    conn: AsyncConnection,
    token: str,
    now: datetime,
    lapsed_before: datetime,
    after: Cursor | None,
    limit: int,
    per_message: int,
) -> list[ClaimedRow]:
    """Take up to ``limit`` unsent rows that nobody holds (never claimed, or claimed
    before ``lapsed_before`` by a sender that never confirmed them) and that wait for no
    retry after ``now`` (a bounce), in recipient order
    after ``after``, for the round ``token``; each taken row gets its message.

    A recipient's rows are taken all together or not at all (unless they alone fill the
    page), so a recipient gets one message per round. A row keeps the message it was
    first put in; new rows make new messages of at most ``per_message`` rows per
    recipient, whose id is their lowest row id. PostgreSQL skips rows that another
    process is claiming.
    """
    stmt = (
        select(
            OutboxMessage.id,
            OutboxMessage.recipient,
            OutboxMessage.payload,
            OutboxMessage.message_id,
        )
        .where(
            OutboxMessage.sent_at.is_(None),
            or_(OutboxMessage.claimed_at.is_(None), OutboxMessage.claimed_at < lapsed_before),
            or_(OutboxMessage.retry_at.is_(None), OutboxMessage.retry_at <= now),
        )
        .order_by(OutboxMessage.recipient, OutboxMessage.id)
        .limit(limit + 1)
    )
    if after is not None:
        stmt = stmt.where(tuple_(OutboxMessage.recipient, OutboxMessage.id) > tuple_(*after))
    rows = list(await conn.execute(skip_locked(conn, stmt)))
    if len(rows) > limit:
        last = rows[-1][1]
        whole = [r for r in rows if r[1] != last]
        rows = whole or rows[:limit]
    out: list[ClaimedRow] = []
    fresh: dict[str, list[int]] = {}  # recipient -> ids of its rows in the open message
    for oid, recipient, payload, message_id in rows:
        if message_id is None:
            group = fresh.setdefault(recipient, [])
            if len(group) == per_message:
                group = fresh[recipient] = []
            group.append(oid)
            message_id = group[0]
        out.append(ClaimedRow(oid, recipient, payload, message_id))
    if out:
        await conn.execute(
            _CLAIM.values(claimed_at=now, claim_token=token),
            [{"b_id": r.id, "b_message": r.message_id} for r in out],
        )
    return out


_CLAIM = (
    update(OutboxMessage)
    .where(OutboxMessage.id == bindparam("b_id"))
    .values(message_id=bindparam("b_message"))
)


async def confirm(conn: AsyncConnection, token: str, now: datetime) -> int:
    """The server has the messages of the round ``token``: its rows are sent. Returns
    how many (none when the round was given back and claimed again meanwhile)."""
    result = await conn.execute(
        update(OutboxMessage)
        .where(OutboxMessage.claim_token == token, OutboxMessage.sent_at.is_(None))
        .values(sent_at=now)
    )
    return int(result.rowcount or 0)


async def unclaim(conn: AsyncConnection, token: str) -> None:
    """Give back what the round ``token`` claimed and nobody confirmed (never written,
    or lost with the link): any sender takes it again at once, in the same messages."""
    await conn.execute(
        update(OutboxMessage)
        .where(OutboxMessage.claim_token == token, OutboxMessage.sent_at.is_(None))
        .values(claimed_at=None, claim_token=None)
    )


class HandedRow(NamedTuple):
    """A row of a message that went to the server: whom to, how often it bounced and
    when it first did (None: never)."""

    id: int
    recipient: str
    bounces: int
    first_bounced_at: datetime | None


async def handed_rows(conn: AsyncConnection, message_id: int) -> list[HandedRow]:
    """The rows of the message ``message_id`` that a sender claimed (it wrote them to the
    server, or is about to), whether or not the server confirmed them, and that were
    not given up."""
    stmt = select(
        OutboxMessage.id,
        OutboxMessage.recipient,
        OutboxMessage.bounces,
        OutboxMessage.first_bounced_at,
    ).where(
        OutboxMessage.message_id == message_id,
        OutboxMessage.claimed_at.is_not(None),
        OutboxMessage.given_up_at.is_(None),
    )
    return [HandedRow(i, r, b, utc(at)) for i, r, b, at in await conn.execute(stmt)]


async def retry_later(
    conn: AsyncConnection,
    ids: Sequence[int],
    retry_at: datetime,
    bounces: int,
    first_bounced_at: datetime,
) -> None:
    """Make these rows unsent and unclaimed again, not to be claimed before ``retry_at``
    (they keep their message and its id). Dropping the claim token also keeps a late
    confirmation of the round that sent them from marking them sent."""
    await conn.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids))
        .values(
            sent_at=None,
            claimed_at=None,
            claim_token=None,
            retry_at=retry_at,
            bounces=bounces,
            first_bounced_at=first_bounced_at,
        )
    )


async def give_up(conn: AsyncConnection, ids: Sequence[int], now: datetime, bounces: int) -> None:
    """These rows are undeliverable: given up at ``now``. They count as sent too, so that
    no claim (nor the indexes of the unsent) ever looks at them again."""
    await conn.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids))
        .values(sent_at=now, given_up_at=now, claim_token=None, retry_at=None, bounces=bounces)
    )


async def retrying_count(conn: AsyncConnection) -> int:
    """How many unsent notifications were bounced by a remote server and wait to go again
    (or went again and our server has not confirmed them yet)."""
    stmt = (
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.sent_at.is_(None), OutboxMessage.retry_at.is_not(None))
    )
    return int((await conn.execute(stmt)).scalar_one())


async def given_up_count(conn: AsyncConnection) -> int:
    """How many notifications were given up (their remote server unreachable too long)."""
    stmt = (
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.given_up_at.is_not(None))
    )
    return int((await conn.execute(stmt)).scalar_one())


async def unsent_count(conn: AsyncConnection) -> int:
    """How many notifications wait to be sent."""
    stmt = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
    return int((await conn.execute(stmt)).scalar_one())


async def oldest_unsent(conn: AsyncConnection) -> datetime | None:
    """When the oldest notification still waiting for our own server was written (None:
    none waits); those that wait for a remote server's retry are counted apart."""
    stmt = (
        select(OutboxMessage.created_at)
        .where(OutboxMessage.sent_at.is_(None), OutboxMessage.retry_at.is_(None))
        .order_by(OutboxMessage.id)
        .limit(1)
    )
    return (await conn.execute(stmt)).scalar()
