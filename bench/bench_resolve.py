#!/usr/bin/env python3
"""Benchmark location resolution in-process; prints one JSON object.

    python bench/bench_resolve.py [--points N] [--addresses N] [--seed S]

Measures, in this fresh process:

* start-up: reading the region table, building the resolver (region index
  and address name table) and loading the district boundaries, each timed,
  with the resident-memory growth (RSS from /proc) they cause, and again
  after all the lookups below (points in every province);
* per-lookup latency (median and 99th percentile, microseconds) and CPU
  time per call (unaffected by other processes on a busy machine) of
  ``resolve_point`` for WGS-84 and GCJ-02 points, of points off the coast
  that take the nearest-district path, and of ``resolve_address`` for
  full, short and noisy addresses.

Points are district centroids jittered by up to ~5 km, with a fixed seed,
so runs are comparable.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_kib() -> int:
    """Resident set size of this process in KiB (Linux), else peak RSS."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def latency(samples_ns: Sequence[int], cpu_ns: int) -> dict[str, float]:
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "n": len(ordered),
        # CPU time of this process per call: unlike wall time, not inflated by
        # other processes on a busy machine.
        "cpu_us_per_call": round(cpu_ns / len(ordered) / 1000, 1),
        "median_us": round(statistics.median(ordered) / 1000, 1),
        "p99_us": round(p99 / 1000, 1),
        "max_us": round(ordered[-1] / 1000, 1),
    }


def run(calls: Sequence[Callable[[], Any]]) -> tuple[dict[str, float], Counter[str]]:
    outcomes: Counter[str] = Counter()
    for call in calls[: min(50, len(calls))]:  # warm caches and prepared geometries
        with contextlib.suppress(ValueError):
            call()
    samples = []
    cpu_start = time.process_time_ns()
    for call in calls:
        start = time.perf_counter_ns()
        try:
            result = call()
            outcome = result.how
            # Within the uncertainty band (an answer a person would be asked to confirm).
            uncertain = bool(getattr(result, "uncertain", False))
        except ValueError as exc:
            outcome, uncertain = type(exc).__name__, False
        samples.append(time.perf_counter_ns() - start)
        outcomes[outcome] += 1
        outcomes["uncertain"] += uncertain
    return latency(samples, time.process_time_ns() - cpu_start), outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--addresses", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    gc.collect()
    rss0 = rss_kib()
    _, import_s = timed(lambda: __import__("imserver.geo.resolver"))
    from imserver.geo.boundaries import Boundaries
    from imserver.geo.crs import wgs84_to_gcj02
    from imserver.geo.index import RegionIndex, is_structural_name
    from imserver.geo.regions import load_regions_csv
    from imserver.geo.resolver import Resolver

    rss_import = rss_kib()
    regions, regions_s = timed(load_regions_csv)
    boundaries, boundaries_s = timed(Boundaries.load)
    resolver, resolver_s = timed(lambda: Resolver(regions, boundaries))
    gc.collect()
    rss_loaded = rss_kib()

    index = RegionIndex(regions)
    districts = [r for r in regions if r.level == 3 and r.successor is None]
    centres = [(r.lat, r.lon) for r in districts]

    def jitter() -> tuple[float, float]:
        lat, lon = rng.choice(centres)
        return lat + rng.uniform(-0.045, 0.045), lon + rng.uniform(-0.045, 0.045)

    wgs_points = [jitter() for _ in range(args.points)]
    gcj_points = [wgs84_to_gcj02(*p) for p in wgs_points]
    # Near the coast: 青岛栈桥's tip, 鼓浪屿 (absent from the polygons), 蓬莱阁,
    # and random points around the tip of the Liaodong peninsula, on land,
    # just off it (nearest district) and far out (refused).
    offshore = [(36.0578, 120.3158), (24.4475, 118.0640), (37.8290, 120.7470)]
    offshore += [(38.95 + rng.uniform(-0.3, 0.3), 121.75 + rng.uniform(0, 0.2)) for _ in range(97)]

    full_names = [index.full_name(r.code) for r in regions if r.successor is None]
    full_names = [n for n in full_names if not is_structural_name(n)]
    addresses: list[str] = []
    for _ in range(args.addresses):
        name = rng.choice(full_names)
        kind = rng.random()
        if kind < 0.4:
            addresses.append(name)
        elif kind < 0.8:
            addresses.append(f"{name}人民路{rng.randint(1, 999)}号{rng.randint(1, 30)}楼")
        else:
            addresses.append(rng.choice(districts).name)  # district alone: often ambiguous

    point = resolver.resolve_point
    point_stats, point_how = run([partial(point, *p) for p in wgs_points])
    gcj_stats, _ = run([partial(point, *p, crs="gcj02") for p in gcj_points])
    sea_stats, sea_how = run([partial(point, *p) for p in offshore])
    addr_stats, addr_how = run([partial(resolver.resolve_address, a) for a in addresses])
    code_stats, _ = run([partial(resolver.resolve_code, r.code) for r in regions])
    gc.collect()
    # After lookups in every province: GEOS builds indexes lazily, so this is the
    # geography's resident share in a process that has been answering for a while.
    rss_used = rss_kib()

    data_dir = Path(__file__).resolve().parents[1] / "imserver" / "geo" / "data"
    print(
        json.dumps(
            {
                "bench": "resolve",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "startup": {
                    "import_s": round(import_s, 4),
                    "regions_csv_s": round(regions_s, 4),
                    "boundaries_load_s": round(boundaries_s, 4),
                    "resolver_index_s": round(resolver_s, 4),
                    "total_s": round(import_s + regions_s + boundaries_s + resolver_s, 4),
                },
                "memory": {
                    "rss_before_kib": rss0,
                    "rss_delta_import_kib": rss_import - rss0,
                    "rss_delta_loaded_kib": rss_loaded - rss0,
                    "rss_delta_after_lookups_kib": rss_used - rss0,
                },
                "data": {
                    "regions": len(regions),
                    "district_polygons": len(resolver.boundaries()),
                    "files_bytes": {
                        p.name: p.stat().st_size for p in sorted(data_dir.iterdir()) if p.is_file()
                    },
                },
                "resolve_point_wgs84": {**point_stats, "outcomes": dict(point_how)},
                "resolve_point_gcj02": gcj_stats,
                "resolve_point_near_coast": {**sea_stats, "outcomes": dict(sea_how)},
                "resolve_address": {**addr_stats, "outcomes": dict(addr_how)},
                "resolve_code": code_stats,
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
