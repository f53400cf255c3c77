"""Two component processes behind one ejabberd, on one PostgreSQL (issue 12).

ejabberd balances the stanzas for ``dist.localhost`` among both connections at random, so
any request, any step of a command and any answer to the component's own pings may reach
either process. What must hold, each against real servers and real clients:

- payments: every id answered and distributed exactly once, also when 20% of the ids are
  sent twice at the same moment (the two copies mostly reach different processes);
  identical answers; the ledger check passes; every earner notified of every earning,
  none twice (no link drops here);
- registrations racing to refer each other across the processes never make a cycle;
- an agent replaced, an upline terminated and the policy changed while payments flow:
  each payment pays the chain and policy in force when it committed (a payment answered
  before a change was asked for pays the old state, one sent after the change was
  answered pays the new one, and one in between pays one of the two, whole);
- one process SIGKILLed during the load: the other goes on; every acknowledged payment is
  stored once; the notifications the killed one had claimed are delivered after the lease;
- two-step ad-hoc commands and chat confirmations complete whichever process each step
  reaches.

``make test`` runs small sizes; ``make soak`` (``-m soak``) runs 10,000 payments and 1,000
racing pairs. Figures are printed as one JSON line per test (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from imserver.devserver.ejabberd import EjabberdInstance
from tests.conftest import DOMAIN, EJABBERD_COMPONENT, SECRET
from tests.support.clients import PASSWORD, Client
from tests.support.commands import adhoc_start, adhoc_submit, result_values, say
from tests.support.ejabberd import Cluster, component_cluster
from tests.support.faults import Bot, LoadStats, pay_until_answered, shares_of
from tests.support.network import assign_agent, chain_of
from tests.test_faults import World, _check, _network

COMPONENT = EJABBERD_COMPONENT
ADMIN = f"admin@{DOMAIN}"


@dataclass
class Rig:
    """The cluster, the fault runs' network on it, and a World for their checks."""

    cluster: Cluster
    world: World
    tmp: Path
    extra: list[Client] = field(default_factory=list)

    async def clients(self, names: list[str], resource: str = "") -> list[Client]:
        """Accounts and logged-in plain clients (they queue their messages)."""
        ejabberd: EjabberdInstance = self.world.prosody  # type: ignore[assignment]
        for name in names:
            await asyncio.to_thread(ejabberd.add_account, f"{name}@{DOMAIN}", PASSWORD)
        jids = [f"{n}@{DOMAIN}{'/' + resource if resource else ''}" for n in names]
        gate = asyncio.Semaphore(32)  # thousands of SCRAM logins at once time out

        async def login(jid: str) -> Client:
            async with gate:
                return await Client(jid).open(ejabberd.client_port, 60)

        opened = await asyncio.gather(*(login(j) for j in jids))
        self.extra += opened
        return list(opened)


@pytest.fixture
async def rig(ejabberd: EjabberdInstance, tmp_path: Path) -> AsyncIterator[Rig]:
    async with component_cluster(ejabberd, COMPONENT, SECRET, ADMIN, tmp_path) as cluster:
        clients, earners, bots = await _network(ejabberd, COMPONENT)  # type: ignore[arg-type]
        world = World(
            "postgresql",
            cluster.url,
            cluster.env,
            ejabberd,  # type: ignore[arg-type]
            cluster.processes[0],
            COMPONENT,
            clients,
            earners,
            bots,
        )
        r = Rig(cluster, world, tmp_path)
        try:
            yield r
        finally:
            await asyncio.gather(*(c.close() for c in clients + r.extra))


def _both_answered(cluster: Cluster, op: str) -> list[int]:
    """How many ``op`` requests each process answered (from its pipeline log)."""
    return [
        sum(n for (o, _), n in cluster.answered(i).items() if o == op)
        for i in range(len(cluster.processes))
    ]


# -- payments ---------------------------------------------------------------------------


async def _pay_many(
    bots: list[Bot],
    prefix: str,
    count: int,
    stats: LoadStats,
    *,
    twice: float = 0.2,
    workers: int = 8,
    stop: asyncio.Event | None = None,
) -> int:
    """``count`` payments (until ``stop``, when given) from ``workers`` per bot; a share
    ``twice`` of the ids is sent twice at the same moment. Returns the ids sent twice."""
    rng = random.Random(prefix)
    ids = iter(range(count))
    doubled = 0

    async def worker(bot: Bot, w: int) -> None:
        nonlocal doubled
        for n in ids:
            if stop is not None and stop.is_set():
                return
            ref = f"{prefix}-{bot.client.bare.split('@')[0]}-{w}-{n}"
            payer, amount = rng.choice(bot.payers), rng.randrange(100, 100_000)
            copies = 2 if rng.random() < twice else 1
            doubled += copies == 2
            deadline = time.monotonic() + 60
            await asyncio.gather(
                *(
                    pay_until_answered(
                        bot, COMPONENT, ref, payer, amount, stats, timeout=5, deadline=deadline
                    )
                    for _ in range(copies)
                )
            )

    await asyncio.gather(*(worker(b, w) for b in bots for w in range(workers)))
    return doubled


async def run_payments(rig: Rig, count: int, prefix: str) -> dict[str, Any]:
    stats = LoadStats()
    t0 = time.monotonic()
    doubled = await _pay_many(rig.world.bots, prefix, count, stats)
    seconds = time.monotonic() - t0
    figures = await _check(rig.world, stats, prefix, windows=[])
    answered = _both_answered(rig.cluster, "set payment")
    figures |= {
        "run": "two processes, payments",
        "ids": count,
        "sent_twice_at_once": doubled,
        "payment_requests_answered_by": answered,
        "seconds": round(seconds, 1),
    }
    print(json.dumps(figures))
    assert len(stats.answers) == count
    assert min(answered) > count // 10, f"one process answered almost nothing: {answered}"
    # No link dropped: not one notification twice (``_check`` allows repeats only around
    # a fault window, and there is none).
    assert figures["notifications"]["doubled"] == 0
    return figures


async def test_payments_through_two_processes(rig: Rig) -> None:
    await run_payments(rig, 400, "two")


@pytest.mark.soak
async def test_soak_10000_payments_through_two_processes(rig: Rig) -> None:
    await run_payments(rig, 10_000, "soaktwo")


async def test_one_process_killed_during_the_load(rig: Rig) -> None:
    stats, stop = LoadStats(), asyncio.Event()
    load = asyncio.ensure_future(
        _pay_many(rig.world.bots, "twokill", 1_000_000, stats, twice=0.0, stop=stop)
    )
    await asyncio.sleep(2.0)
    killed_at = time.time()
    rig.cluster.processes[0].kill()
    before = len(stats.answers)
    await asyncio.sleep(3.0)
    stop.set()
    await asyncio.wait_for(load, 90)
    after = len(stats.answers) - before
    # The checks wait for the lease: the killed process's claims go out from the other.
    figures = await _check(rig.world, stats, "twokill", windows=[(killed_at, time.time())])
    figures |= {"run": "two processes, one killed", "answered_after_kill": after}
    print(json.dumps(figures))
    assert rig.cluster.processes[1].alive
    assert after > 0, "the survivor answered nothing after the kill"


# -- registrations racing -----------------------------------------------------------------


async def run_race(rig: Rig, pairs: int) -> dict[str, Any]:
    """Each pair (a, b) sends at once: a joins through the shop and through b, b through
    the shop and through a. Each must end a member once, and no chain may loop."""
    shop = rig.world.bots[0].merchant
    names = [f"race{i}{side}" for i in range(pairs) for side in "ab"]
    clients = await rig.clients(names)
    by_name = dict(zip(names, clients, strict=True))
    outcomes: dict[str, int] = {}

    async def join(who: Client, referrer: str) -> str:
        try:
            await who.dist.register(COMPONENT, referrer, timeout=20)
            return "joined"
        except IqError as exc:
            return str(exc.iq["error"]["condition"])

    async def pair(i: int) -> None:
        a, b = by_name[f"race{i}a"], by_name[f"race{i}b"]
        got = await asyncio.gather(join(a, shop), join(a, b.bare), join(b, shop), join(b, a.bare))
        for g in got:
            outcomes[g] = outcomes.get(g, 0) + 1
        assert got[:2].count("joined") == 1, (a.bare, got)
        assert got[2:].count("joined") == 1, (b.bare, got)

    await asyncio.gather(*(pair(i) for i in range(pairs)))
    loops = []
    for client in clients:
        chain = chain_of(await client.dist.chain(COMPONENT, timeout=20))
        upline = [jid for _, jid, _ in chain["upline"]]
        if client.bare in upline or shop not in upline:
            loops.append((client.bare, upline))
    figures = {"run": "racing registrations", "pairs": pairs, "outcomes": outcomes}
    print(json.dumps(figures))
    assert not loops, f"chains that loop or lost the shop: {loops[:5]}"
    assert outcomes["joined"] == 2 * pairs
    return figures


async def test_registrations_racing_to_refer_each_other(rig: Rig) -> None:
    await run_race(rig, 40)


@pytest.mark.soak
async def test_soak_1000_pairs_racing_to_refer_each_other(rig: Rig) -> None:
    await run_race(rig, 1000)


# -- changes while payments flow -----------------------------------------------------------


@dataclass
class Paid:
    payer: str
    sent: float
    answered: float
    shares: list[tuple[str, str, str, int]]


def _state(old: bool, new: bool, when: tuple[float, float], paid: Paid) -> bool:
    """Whether ``paid`` shows the state it must: old if answered before the change was
    asked for, new if sent after it was answered, either (whole) in between."""
    asked, done = when
    if paid.answered < asked:
        return old
    if paid.sent > done:
        return new
    return old or new


async def test_changes_while_payments_flow(rig: Rig) -> None:
    world = rig.world
    admin = next(c for c in world.clients if c.bare == ADMIN)
    (district2,) = await rig.clients(["district2"])
    bob = next(c for c in world.clients if c.bare.startswith("bob@"))
    alice = next(c for c in world.clients if c.bare.startswith("alice@"))
    district1 = next(c for c in world.clients if c.bare.startswith("district@"))
    bot = world.bots[0]
    paid: list[Paid] = []
    stop = asyncio.Event()
    rng = random.Random("changes")

    async def worker(w: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            payer = rng.choice(bot.payers)
            sent = time.monotonic()
            iq = await bot.client.dist.pay(
                COMPONENT, f"chg-{w}-{n}", payer, rng.randrange(10_000, 100_000), "CNY", timeout=10
            )
            paid.append(Paid(payer, sent, time.monotonic(), shares_of(iq)))

    load = asyncio.gather(*(worker(w) for w in range(6)))
    changes: dict[str, tuple[float, float]] = {}

    async def change(name: str, call: Any) -> None:
        await asyncio.sleep(1.0)
        asked = time.monotonic()
        await call
        changes[name] = (asked, time.monotonic())

    await change("agent", assign_agent(admin, COMPONENT, district2.bare, "440305"))
    await change("terminate", admin.dist.terminate(COMPONENT, bob.bare, "scale-out", timeout=10))
    await change(
        "policy",
        admin.dist.set_policy(
            COMPONENT, pool_bp=1000, referral_bp=[4000, 1000], agent_bp=(1000, 1000, 1000),
            reason="scale-out test", timeout=10,
        ),
    )  # fmt: skip
    await asyncio.sleep(1.0)
    stop.set()
    await load

    p1p2 = set(bot.payers[:2])  # under bob (level 1) and alice (level 2)
    wrong: list[tuple[str, Paid]] = []
    for p in paid:
        district = [jid for role, scope, jid, _ in p.shares if scope == "district"]
        if not _state(
            district == [district1.bare], district == [district2.bare], changes["agent"], p
        ):
            wrong.append(("agent", p))
        if p.payer in p1p2:
            level1 = [jid for role, lvl, jid, _ in p.shares if role == "referrer" and lvl == "1"]
            if not _state(level1 == [bob.bare], level1 == [alice.bare], changes["terminate"], p):
                wrong.append(("terminate", p))
        else:
            # p3, p4: alice at level 1, the shop at level 2; 30%:20% of the pool, then 40%:10%.
            ref = {lvl: amt for role, lvl, _, amt in p.shares if role == "referrer"}
            ratio = ref.get("1", 0) / max(1, ref.get("2", 0))
            if not _state(abs(ratio - 1.5) < 0.05, abs(ratio - 4.0) < 0.1, changes["policy"], p):
                wrong.append(("policy", p))
    in_between = {
        name: sum(1 for p in paid if not (p.answered < a or p.sent > d))
        for name, (a, d) in changes.items()
    }
    print(json.dumps({"run": "changes while paying", "payments": len(paid),
                      "in_between": in_between}))  # fmt: skip
    assert not wrong, f"payments that paid a state not in force: {wrong[:3]}"
    assert len(paid) > 50
    # The changes hit payments on both sides of them (else the check proves nothing).
    for name, (asked, done) in changes.items():
        assert any(p.answered < asked for p in paid) and any(p.sent > done for p in paid), name


# -- two-step commands -----------------------------------------------------------------------


async def test_two_step_commands_reach_either_process(rig: Rig) -> None:
    shop = rig.world.bots[0].merchant
    names = [f"step{i}" for i in range(40)]
    members = await rig.clients(names)
    await asyncio.gather(*(m.dist.register(COMPONENT, shop, timeout=20) for m in members))
    (admin,) = [c for c in await rig.clients(["admin"], resource="commands")]
    adhoc_done = chat_done = 0
    for member in members[:20]:
        step = await adhoc_start(admin, COMPONENT, "terminate")
        assert step["command"]["status"] == "executing"
        step = await adhoc_submit(
            admin, COMPONENT, step, {"jid": member.bare, "reason": "scale-out"}, action="next"
        )
        assert step["command"]["status"] == "executing", step
        done = await adhoc_submit(admin, COMPONENT, step, {"confirm": True})
        assert any("Terminated" in v or member.bare in v for v in result_values(done).values())
        adhoc_done += 1
    for member in members[20:]:
        question = await say(admin, COMPONENT, f"terminate {member.bare} scale-out")
        assert "Reply yes" in question, question
        answer = await say(admin, COMPONENT, "yes")
        assert answer.startswith(f"Terminated {member.bare}"), answer
        chat_done += 1
    # Every one of them is terminated, whichever process took each step.
    for member in members:
        chain = chain_of(await admin.dist.chain(COMPONENT, member.bare, timeout=10))
        assert chain["member"]["status"] == "terminated", chain["member"]
    steps = _both_answered(rig.cluster, "adhoc terminate")
    print(json.dumps({"run": "two-step commands", "adhoc": adhoc_done, "chat": chat_done,
                      "adhoc_steps_answered_by": steps}))  # fmt: skip
    assert min(steps) > 0, f"one process took no step: {steps}"
