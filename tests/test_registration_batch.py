"""The batched registration path: group commit, one answer per request, on both databases.

Service-level (the registration use case as the XMPP layer calls it): requests gathered
together are taken by the writer as one batch, so each test can say what one batch does.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from imserver.service.context import Context
from imserver.service.errors import ServiceError
from imserver.service.membership import Location
from imserver.service.registry import Services
from imserver.service.views import MemberView
from imserver.store import members as store_members
from imserver.store.db import Database, Retry
from imserver.store.models import AgencyLink, Member, Upline
from tests.conftest import OTHER_DOMAIN, Service

RULE = re.compile(r"^(\d{6})-U(\d{8})$")


def condition(outcome: object) -> str:
    assert isinstance(outcome, ServiceError), outcome
    assert outcome.text, "every refusal carries a human text"
    return outcome.condition


def joined(outcome: object) -> MemberView:
    assert isinstance(outcome, MemberView), outcome
    return outcome


async def count(service: Service, stmt: Any) -> int:
    async with service.app.db.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def stored(service: Service, jids: list[str]) -> set[str]:
    async with service.app.db.engine.connect() as conn:
        found = await conn.execute(select(Member.jid).where(Member.jid.in_(jids)))
        return set(found.scalars())


async def upline(service: Service, jid: str) -> list[str]:
    view = await service.app.services.membership.chain(service.config.admins[0], jid)
    assert [link.level for link in view.upline] == list(range(1, len(view.upline) + 1))
    return [link.jid for link in view.upline]


async def by_jid(service: Service, jids: list[str]) -> list[Any]:
    async with service.app.db.engine.connect() as conn:
        return list((await store_members.by_jids(conn, jids)).values())


async def stored_upline(service: Service, jid: str) -> list[int]:
    """The stored upline's member ids, nearest first (every stored level)."""
    stmt = (
        select(Upline.ancestor_id)
        .join(Member, Member.id == Upline.member_id)
        .where(Member.jid == jid)
        .order_by(Upline.level)
    )
    async with service.app.db.engine.connect() as conn:
        return list((await conn.execute(stmt)).scalars())


async def shop(service: Service, region: str = "440305") -> str:
    merchant = service.new_jid("shop")
    await service.app.services.membership.add_merchant(
        service.config.admins[0], merchant, "Tea House", None, Location(region=region)
    )
    return merchant


async def test_one_batch_answers_each_registration_on_its_own(service: Service) -> None:
    svc = service.app.services
    admin = service.config.admins[0]
    merchant = await shop(service)
    old, alice, gone, left, bot = (
        service.new_jid(p) for p in ("old", "alice", "gone", "left", "bot")
    )
    for jid in (old, alice, gone, left):
        await svc.membership.register(jid, merchant)
    await svc.repair.terminate(admin, gone, "test")
    await svc.repair.delete(admin, left, "test")
    await svc.bots.change(merchant, bot, None, "link")
    new = [service.new_jid(f"n{i}-") for i in range(9)]
    nobody = service.new_jid("nobody")
    foreign = service.new_jid("far", OTHER_DOMAIN)
    writer = svc.membership.writer
    batches = writer.batches
    outcomes = await asyncio.gather(
        svc.membership.register(new[0], merchant),  # good
        svc.membership.register(old, merchant),  # already a member
        svc.membership.register(new[1], nobody),  # unknown referrer
        svc.membership.register(new[2], gone),  # terminated referrer
        svc.membership.register(new[3], new[0]),  # referred by the first, same batch
        svc.membership.register(new[4], new[3]),  # and one level further down
        svc.membership.register(new[5], new[6]),  # referred by one who joins later: unknown
        svc.membership.register(new[6], alice),  # good, under a stored user
        svc.membership.register(new[7], left),  # deleted referrer
        svc.membership.register(foreign, merchant),  # a domain whose users may not join
        svc.membership.register(bot, merchant),  # a bot JID is never a member
        svc.membership.register(gone, merchant),  # terminated: cannot join again
        svc.membership.register(new[8], new[4]),  # three levels, all in the batch
        return_exceptions=True,
    )
    assert writer.batches == batches + 1, "submitted together, committed together"
    first, *_ = outcomes
    assert joined(first).referrer == merchant and joined(first).region == "440305"
    assert condition(outcomes[1]) == "conflict"
    assert condition(outcomes[2]) == "item-not-found"
    assert condition(outcomes[3]) == "not-acceptable"
    assert joined(outcomes[4]).referrer == new[0]
    assert joined(outcomes[5]).referrer == new[3]
    assert condition(outcomes[6]) == "item-not-found"
    assert joined(outcomes[7]).referrer == alice
    assert condition(outcomes[8]) == "not-acceptable"
    assert "left the network" in str(outcomes[8])
    assert condition(outcomes[9]) == "forbidden"
    assert condition(outcomes[10]) == "forbidden"
    assert condition(outcomes[11]) == "conflict"
    assert "terminated" in str(outcomes[11])
    assert joined(outcomes[12]).referrer == new[4]

    good = [new[0], new[3], new[4], new[6], new[8]]
    everyone = [*new, old, foreign, bot, gone]
    assert await stored(service, everyone) == {*good, old, gone}
    views = [joined(outcomes[i]) for i in (0, 4, 5, 7, 12)]
    assert [v.jid for v in views] == good
    assert all(v.role == "user" and v.status == "active" for v in views)
    # Rule numbers: unique, taken in the batch's order from the region's counter.
    seqs = [int(RULE.match(v.rule_number).group(2)) for v in views]  # type: ignore[union-attr]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # The chains are those of registrations one after the other.
    assert await upline(service, new[0]) == [merchant]
    assert await upline(service, new[3]) == [new[0], merchant]
    assert await upline(service, new[4]) == [new[3], new[0]]  # two levels by default
    assert await upline(service, new[6]) == [alice, merchant]
    ids = {m.jid: m.id for m in await by_jid(service, good)}
    three = [ids[new[4]], ids[new[3]], ids[new[0]]]
    assert await stored_upline(service, new[8]) == three, "three stored levels"
    view = await svc.membership.chain(admin, new[8])
    assert [(a.scope_level, a.region_code) for a in view.agents] == [
        (3, "440305"),
        (2, "440300"),
        (1, "440000"),
    ]
    links = (
        select(func.count())
        .select_from(AgencyLink)
        .join(Member, Member.id == AgencyLink.member_id)
        .where(Member.jid.in_(good))
    )
    assert await count(service, links) == 3 * len(good)
    # What a repeat answers now: each newcomer is a member.
    for jid in good:
        with pytest.raises(ServiceError) as again:
            await svc.membership.register(jid, merchant)
        assert again.value.condition == "conflict"


async def test_the_same_jid_twice_in_one_batch_joins_once(service: Service) -> None:
    svc = service.app.services
    merchant = await shop(service)
    other = await shop(service, "110101")
    twice = service.new_jid("twice")
    batches = svc.membership.writer.batches
    first, second, third = await asyncio.gather(
        svc.membership.register(twice, merchant),
        svc.membership.register(twice, merchant),
        svc.membership.register(twice, other),
        return_exceptions=True,
    )
    assert svc.membership.writer.batches == batches + 1
    view = joined(first)
    assert condition(second) == condition(third) == "conflict"
    assert view.rule_number in str(second) and view.rule_number in str(third)
    by_jid = select(func.count(Member.id)).where(Member.jid == twice)
    assert await count(service, by_jid) == 1
    assert await upline(service, twice) == [merchant]


async def test_a_batch_of_newcomers_in_several_regions(service: Service) -> None:
    """Referrers in two regions: each newcomer gets its referrer's region, that region's
    agency chain and a number from that region's counter."""
    svc = service.app.services
    north, south = await shop(service, "110101"), await shop(service, "440305")
    newcomers = [service.new_jid("r") for _ in range(12)]
    answers = await asyncio.gather(
        *(svc.membership.register(j, (north, south)[i % 2]) for i, j in enumerate(newcomers))
    )
    regions = [a.region for a in answers]
    assert regions == ["110101", "440305"] * 6
    for region in ("110101", "440305"):
        seqs = [int(a.rule_number[-8:]) for a in answers if a.region == region]
        assert seqs == list(range(seqs[0], seqs[0] + 6))
    view = await svc.membership.chain(service.config.admins[0], newcomers[0])
    assert [a.region_code for a in view.agents] == ["110101", "110100", "110000"]


async def test_another_process_registering_the_same_jids(service: Service) -> None:
    """Two writers (a second set of services on its own database handle, as another
    process) register the same JIDs at once: each JID is stored once, and exactly one of
    its two requests joins while the other is told it is a member already (the loser of a
    unique-key race runs its batch again and finds the winner's row)."""
    svc = service.app.services
    merchant = await shop(service)
    jids = [service.new_jid("race") for _ in range(40)]
    other_db = Database(service.config.database.url)
    other = Services.build(Context(other_db, service.config, service.app.ctx.clock))
    try:
        mine, theirs = await asyncio.gather(
            asyncio.gather(
                *(svc.membership.register(j, merchant) for j in jids), return_exceptions=True
            ),
            asyncio.gather(
                *(other.membership.register(j, merchant) for j in reversed(jids)),
                return_exceptions=True,
            ),
        )
    finally:
        await other.membership.close()
        await other.close()
        await other_db.dispose()
    for jid, a, b in zip(jids, mine, reversed(theirs), strict=True):
        outcomes = sorted(("ok" if isinstance(x, MemberView) else condition(x)) for x in (a, b))
        assert outcomes == ["conflict", "ok"], (jid, a, b)
    assert await stored(service, jids) == set(jids)
    by_jid = select(func.count(Member.id)).where(Member.jid.in_(jids))
    assert await count(service, by_jid) == len(jids)
    answered = [x for x in (*mine, *theirs) if isinstance(x, MemberView)]
    assert len({a.rule_number for a in answered}) == len(jids), "rule numbers unique"


async def test_lines_changed_before_they_were_locked_run_the_batch_again(
    service: Service,
) -> None:
    """``store.members.lock_lines`` with a line that is not the stored one (a repair
    committed between the read and the lock) asks for the batch to run again; on SQLite
    nothing can change under the write lock and the referrers come back as given."""
    merchant = await shop(service)
    a, b = service.new_jid("a"), service.new_jid("b")
    await service.app.services.membership.register(a, merchant)
    await service.app.services.membership.register(b, a)
    found = await by_jid(service, [a, b, merchant])
    refs = {m.id: m for m in found if m.jid in (a, b)}
    ids = {m.jid: m.id for m in found}
    right = {ids[a]: [ids[merchant]], ids[b]: [ids[a], ids[merchant]]}
    stale = {ids[a]: [ids[merchant]], ids[b]: [ids[merchant]]}

    async def lock(lines: dict[int, list[int]]) -> dict[int, Any]:
        async with service.app.db.engine.begin() as conn:
            return await store_members.lock_lines(conn, refs, lines)

    assert await lock(right) == refs
    if service.backend == "sqlite":
        assert await lock(stale) == refs
    else:
        with pytest.raises(Retry):
            await lock(stale)


@pytest.mark.parametrize("referrers", [1, 2])
async def test_a_referrer_deleted_before_it_was_locked_is_refused(
    service: Service, monkeypatch: pytest.MonkeyPatch, referrers: int
) -> None:
    """PostgreSQL: another process deletes a referrer (a root: its stored upline stays
    empty) after the batch read it and before the batch locked it. The batch reads it
    again under the lock, as a registration alone does, and refuses it: not-acceptable,
    by the JID the newcomer named. With one referrer in the batch the lock is
    ``repair.lock_line``, with several ``members.lock_lines``."""
    if service.backend != "postgresql":
        pytest.skip("SQLite's single writer: nobody can delete between read and lock")
    from imserver.store import repair as store_repair

    svc = service.app.services
    admin = service.config.admins[0]
    doomed, other_shop = await shop(service), await shop(service)
    other_db = Database(service.config.database.url)
    other = Services.build(Context(other_db, service.config, service.app.ctx.clock))
    deleted = asyncio.Event()

    async def delete_first() -> None:
        if not deleted.is_set():
            deleted.set()
            await other.repair.delete(admin, doomed, "test")

    original_line, original_lines = store_repair.lock_line, store_members.lock_lines

    async def lock_line(conn: Any, member_id: int, **kw: Any) -> Any:
        await delete_first()
        return await original_line(conn, member_id, **kw)

    async def lock_lines(conn: Any, *args: Any) -> Any:
        await delete_first()
        return await original_lines(conn, *args)

    monkeypatch.setattr(store_repair, "lock_line", lock_line)
    monkeypatch.setattr(store_members, "lock_lines", lock_lines)
    newcomer, bystander = service.new_jid("new"), service.new_jid("by")
    try:
        calls = [svc.membership.register(newcomer, doomed)]
        if referrers == 2:
            calls.append(svc.membership.register(bystander, other_shop))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await other.membership.close()
        await other.close()
        await other_db.dispose()
    assert deleted.is_set()
    assert condition(outcomes[0]) == "not-acceptable"
    assert doomed in str(outcomes[0]) and "deleted" in str(outcomes[0])
    assert await stored(service, [newcomer]) == set()
    if referrers == 2:
        assert joined(outcomes[1]).referrer == other_shop
