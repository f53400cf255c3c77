"""Loading the region data set into the database, over members that already exist.

A newer data set can retire a code (its row names a ``successor``) or move a region under
another parent.  Members keep the code they were issued with (their rule numbers never
change), but their agency chains follow the data: in the load's own transaction, every
member whose chain is no longer the chain of its code's live successor is re-linked, by
set-based statements per group of codes.  A retired region's agent moves to the successor
when the successor has no agent and no other retired region competes for it; otherwise
the successor keeps its own agent (or stays vacant) and the retired region's agent earns
nothing more from those chains.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from imserver.domain import chains
from imserver.geo.regions import Region
from imserver.service.context import Context
from imserver.store import audit, members, regions
from imserver.store.db import Conn
from imserver.store.regions import RegionShape

# A successor chain longer than this is a broken table (the loader refuses loops anyway).
_MAX_HOPS = 10
# Deepest region line (province, city, district) with room to spare, as store.regions.line.
_MAX_DEPTH = 6


@dataclass(frozen=True)
class LoadReport:
    """What a load changed."""

    regions: int
    retired: int
    members_relinked: int
    agents_moved: tuple[tuple[str, str], ...] = field(default=())  # (from code, to code)
    agents_left: tuple[str, ...] = field(default=())  # retired codes whose agent stayed

    def summary(self) -> str:
        """One line for the command line."""
        text = (
            f"{self.regions} regions loaded ({self.retired} retired codes); "
            f"{self.members_relinked} members' agency chains follow successors"
        )
        if self.agents_moved:
            text += "; agents moved: " + ", ".join(f"{a}->{b}" for a, b in self.agents_moved)
        if self.agents_left:
            text += "; agents of retired regions left in place: " + ", ".join(self.agents_left)
        return text


def _micro(deg: float) -> int:
    return round(deg * 1_000_000)


def live_code(table: dict[str, RegionShape], code: str) -> str | None:
    """Follow successors from ``code`` to the live code (None when unknown)."""
    current: str | None = code
    for _ in range(_MAX_HOPS + 1):
        if current is None or current not in table:
            return None
        successor = table[current][2]
        if successor is None:
            return current
        current = successor
    return None


def expected_line(table: dict[str, RegionShape], code: str) -> tuple[tuple[str, int], ...]:
    """(code, level) of the live region of ``code`` and its ancestors, the region first.

    The same line the membership use case stores when a member is created.
    """
    out: list[tuple[str, int]] = []
    current = live_code(table, code)
    while current is not None and current in table and len(out) < _MAX_DEPTH:
        level, parent, _ = table[current]
        out.append((current, level))
        current = parent
    return tuple(out)


def _agent_moves(
    table: dict[str, RegionShape], agents: dict[str, int]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Which retired regions' agents move to their successor, and which stay put."""
    by_target: dict[str, list[str]] = defaultdict(list)
    for code in agents:
        shape = table.get(code)
        if shape is None or shape[2] is None:
            continue
        target = live_code(table, code)
        if target is not None:
            by_target[target].append(code)
    moves: list[tuple[str, str]] = []
    left: list[str] = []
    for target, sources in sorted(by_target.items()):
        # A renumbering (one old code, one new) carries its agent; a merger of several
        # agented regions, or onto a region with its own agent, is the operator's call.
        if len(sources) == 1 and target not in agents:
            moves.append((sources[0], target))
        else:
            left.extend(sorted(sources))
    return moves, left


async def load_regions(ctx: Context, data: Sequence[Region], actor: str = "cli") -> LoadReport:
    """Insert or update every region by code in one transaction; chains follow successors.

    No region row and no member is ever deleted, and no rule number changes.
    """
    rows: list[dict[str, object]] = [
        {
            "code": r.code,
            "name": r.name,
            "level": r.level,
            "parent_code": r.parent,
            "lat_e6": _micro(r.lat),
            "lon_e6": _micro(r.lon),
            "successor_code": r.successor,
        }
        for r in data
    ]

    async def use_case(conn: Conn) -> LoadReport:
        before = await regions.shapes(conn)
        loaded = await regions.upsert_many(conn, rows)
        after = dict(before)
        after.update({r.code: (r.level, r.parent, r.successor) for r in data})

        agents = await regions.agents_by_region(conn)
        moves, left = _agent_moves(after, agents)
        for source, target in moves:
            await regions.move_agent(conn, source, target)
            agents[target] = agents.pop(source)
            # Members already at the successor had a vacant level there: now it is filled.
            await members.point_agency_at(conn, target, agents[target])

        # Codes whose live line changed with this data set, plus any member whose stored
        # chain still names a retired region (a load interrupted before, or an older one).
        codes = await regions.member_region_codes(conn)
        stale = {c for c in codes if expected_line(before, c) != expected_line(after, c)}
        stale |= await regions.codes_linked_to_retired(conn)
        groups: dict[tuple[tuple[str, int], ...], list[str]] = defaultdict(list)
        for code in sorted(stale):
            line = expected_line(after, code)
            if line:
                groups[line].append(code)
        relinked = 0
        for line, group in groups.items():
            links = chains.agency_chain(line, agents)
            relinked += await regions.relink_agency(
                conn,
                group,
                [(chains.SCOPE_LEVELS[link.scope], link.region, link.agent_id) for link in links],
            )
        retired = sum(1 for shape in after.values() if shape[2] is not None)
        report = LoadReport(loaded, retired, relinked, tuple(moves), tuple(left))
        if moves or relinked or before.keys() != after.keys():
            await audit.record(
                conn,
                at=ctx.clock(),
                actor=actor,
                action="regions.load",
                details={
                    "regions": loaded,
                    "new": len(after.keys() - before.keys()),
                    "relinked": relinked,
                    "agents_moved": [list(m) for m in moves],
                },
            )
        return report

    return await ctx.db.transaction(use_case)


async def region_count(ctx: Context) -> int:
    """How many regions the database holds."""
    return await ctx.db.transaction(regions.count)
