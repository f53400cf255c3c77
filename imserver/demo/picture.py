"""The picture of the demo's network: the referral trees, coloured by district, under the
agents of each level, as SVG and PNG (matplotlib, no system library needed).

Rows from the top: the province agent, the city agent, the district agents, the
merchants (the roots of the referral trees), then the users by depth. Each tree's
leaves take the next places from left to right, and a parent stands above the middle of
its children, so the trees never cross.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from imserver.demo.city import AREAS, CITY, DISTRICTS, PROVINCE
from imserver.service.network_report import NetworkReport

DISTRICT_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
AGENT_COLOURS = {PROVINCE.code: "#555555", CITY.code: "#8c564b"}
ROW = {"province": 0, "city": 1, "district": 2, "merchant": 3}


@dataclass(frozen=True)
class Pictures:
    """The files written."""

    svg: Path
    png: Path


def _colour(region: str) -> str:
    codes = [d.code for d in DISTRICTS]
    if region in codes:
        return DISTRICT_COLOURS[codes.index(region) % len(DISTRICT_COLOURS)]
    return AGENT_COLOURS.get(region, "#7f7f7f")


def layout(report: NetworkReport) -> dict[str, tuple[float, float]]:
    """Positions (x, row) of the members, and of the agents as ``agent:<region>``."""
    known = {m.jid for m in report.members}
    children: dict[str, list[str]] = defaultdict(list)
    roots = []
    for m in report.members:
        if m.role == "merchant" or m.referrer not in known:
            if m.role == "merchant":
                roots.append(m)
        else:
            assert m.referrer is not None
            children[m.referrer].append(m.jid)
    order = [d.code for d in DISTRICTS]
    roots.sort(key=lambda m: (order.index(m.region) if m.region in order else 99, m.jid))
    pos: dict[str, tuple[float, float]] = {}
    next_x = 0.0

    def place(jid: str, row: int) -> float:
        nonlocal next_x
        kids = children.get(jid, [])
        if not kids:
            x, next_x = next_x, next_x + 1.0
        else:
            xs = [place(k, row + 1) for k in kids]
            x = (xs[0] + xs[-1]) / 2
        pos[jid] = (x, float(row))
        return x

    for root in roots:
        place(root.jid, ROW["merchant"])
        next_x += 1.0  # a gap between trees
    by_district: dict[str, list[float]] = defaultdict(list)
    for root in roots:
        by_district[root.region].append(pos[root.jid][0])
    centre = (next_x - 2.0) / 2 if next_x > 1 else 0.0
    for area in AREAS:
        agent = report.agents.get(area.code)
        if agent is None:
            continue
        xs = by_district.get(area.code)
        x = (min(xs) + max(xs)) / 2 if xs else centre
        pos[f"agent:{area.code}"] = (x, float(ROW[area.scope]))
    return pos


def draw(report: NetworkReport, folder: Path, title: str) -> Pictures:
    """Draw the network; write ``network.svg`` and ``network.png`` into ``folder``."""
    pos = layout(report)
    width = max(12.0, 0.09 * max((x for x, _ in pos.values()), default=0.0))
    depth = max((y for _, y in pos.values()), default=3.0)
    fig = Figure(figsize=(min(width, 60.0), 3.5 + 0.9 * depth), layout="constrained")
    ax = fig.add_subplot()
    # Agency lines: province -> city -> each district -> its merchants.
    agency = [(PROVINCE.code, CITY.code)] + [(CITY.code, d.code) for d in DISTRICTS]
    lines = [(f"agent:{a}", f"agent:{b}") for a, b in agency]
    lines += [(f"agent:{m.region}", m.jid) for m in report.members if m.role == "merchant"]
    for a, b in lines:
        if a in pos and b in pos:
            ax.plot(*_line(pos[a], pos[b]), color="#999999", lw=0.8, ls="--", zorder=1)
    for m in report.members:
        if m.referrer in pos and m.jid in pos and m.role != "merchant":
            ax.plot(
                *_line(pos[m.referrer], pos[m.jid]),
                color=_colour(m.region),
                lw=0.6,
                alpha=0.6,
                zorder=1,
            )
    _nodes(ax, pos, report)
    for m in report.members:
        if m.role == "merchant" and m.jid in pos:
            x, y = pos[m.jid]
            ax.annotate(
                m.jid.split(".")[0], (x, y), (4, 4), textcoords="offset points", fontsize="x-small"
            )
    for area in AREAS:
        if (where := pos.get(f"agent:{area.code}")) is not None:
            ax.annotate(
                f"{area.name} {area.code}",
                where,
                (8, 2),
                textcoords="offset points",
                fontsize="small",
            )
    rows = int(depth)
    ax.set_yticks(range(rows + 1))
    ax.set_yticklabels(
        ["province agent", "city agent", "district agents", "merchants"]
        + [f"users, level {i}" for i in range(1, rows - 2)]
    )
    ax.invert_yaxis()
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title)
    handles = [
        Line2D([], [], marker="o", ls="", color=_colour(d.code), label=f"{d.name} ({d.code})")
        for d in DISTRICTS
    ]
    handles += [
        Line2D([], [], marker="*", ls="", color="#555555", markersize=12, label="agent"),
        Line2D([], [], marker="s", ls="", color="#555555", label="merchant"),
        Line2D([], [], marker="o", ls="", color="#555555", markersize=4, label="user"),
        Line2D([], [], ls="--", color="#999999", label="agency"),
        Line2D([], [], ls="-", color="#555555", label="referral"),
    ]
    fig.legend(handles=handles, loc="outside lower center", fontsize="small", ncol=len(handles))
    folder.mkdir(parents=True, exist_ok=True)
    pictures = Pictures(folder / "network.svg", folder / "network.png")
    fig.savefig(pictures.svg)
    fig.savefig(pictures.png, dpi=110)
    return pictures


def _line(a: tuple[float, float], b: tuple[float, float]) -> tuple[list[float], list[float]]:
    return [a[0], b[0]], [a[1], b[1]]


def _nodes(ax: Axes, pos: dict[str, tuple[float, float]], report: NetworkReport) -> None:
    """Agents as stars, merchants as squares, users as dots, coloured by region."""
    groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for m in report.members:
        if m.jid in pos:
            shape = "s" if m.role == "merchant" else "o"
            groups[(shape, _colour(m.region))].append(pos[m.jid])
    for area in AREAS:
        key = f"agent:{area.code}"
        if key in pos:
            groups[("*", _colour(area.code))].append(pos[key])
    sizes = {"*": 220.0, "s": 60.0, "o": 12.0}
    for (shape, colour), points in groups.items():
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        ax.scatter(
            xs,
            ys,
            s=sizes[shape],
            marker=shape,
            c=colour,
            zorder=2,
            edgecolors="white",
            linewidths=0.5,
        )
