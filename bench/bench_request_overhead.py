#!/usr/bin/env python3
"""What the request path's bookkeeping costs per request; prints one JSON object.

    python bench/bench_request_overhead.py [--requests N]

Times ``Pipeline._record`` (the step every request ends with: the duration tally the
metrics endpoint reads, and the request log line) in-process, N times per variant:

* ``tally_only``: ``[log] requests = false`` (the line is DEBUG and not written);
* ``text``, ``kv``, ``json``: the line written at INFO in that format, to /dev/null
  through the real handler and formatter (secret redaction included);
* ``before``: the same step as it was before metrics and structured logs (a count and
  a sum per operation and outcome, the DEBUG line not written), for comparison.

Also one scrape: rendering /metrics for 20 operations x 3 outcomes. Microseconds, median
of 5 rounds, in CPU time. The answer to "what do metrics cost a payment": ``tally_only - before``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imserver.config import load_config
from imserver.logs import FORMATTERS, configure, jid_view, secrets_of
from imserver.metrics import ComponentCollector
from imserver.service.figures import SIZES, Tally
from imserver.xmpp.pipeline import Pipeline

OPERATIONS = [f"set op{i}" for i in range(20)]
OUTCOMES = ["ok", "bad-request", "forbidden"]


def per_call_us(fn: Callable[[int], None], n: int, rounds: int = 5) -> float:
    """Median over rounds of the CPU time of one call, in microseconds (CPU time, not wall
    time: the machine is shared, and what a request costs the process is its CPU)."""
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        for i in range(n):
            fn(i)
        times.append((time.process_time() - t0) / n * 1e6)
    return round(statistics.median(times), 3)


def pipeline(requests: bool, fmt: str) -> Pipeline:
    env = {"IMSERVER_LOG__REQUESTS": json.dumps(requests), "IMSERVER_LOG__FORMAT": fmt}
    config = load_config(None, env=env)
    p = Pipeline.__new__(Pipeline)
    p.stats = {}
    p.show_jid = jid_view(config.log, config.xmpp.secret)
    p.request_level = logging.INFO if requests else logging.DEBUG
    configure(config)  # as imserver run does, then the same handler to /dev/null
    handler = logging.StreamHandler(open("/dev/null", "w"))  # noqa: SIM115
    handler.setFormatter(FORMATTERS[fmt](secrets_of(config)))
    logging.getLogger().handlers[:] = [handler]
    return p


def before(n: int) -> float:
    """The step as it was: count and seconds per (operation, outcome), DEBUG line off."""
    stats: dict[tuple[str, str], list[float]] = {}
    log = logging.getLogger("imserver.xmpp.pipeline")

    def record(i: int) -> None:
        started = time.perf_counter()
        elapsed = time.perf_counter() - started
        key = (OPERATIONS[i % 20], "ok")
        s = stats.get(key)
        if s is None:
            s = stats[key] = [0, 0.0]
        s[0] += 1
        s[1] += elapsed
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request")

    return per_call_us(record, n)


def variant(n: int, requests: bool, fmt: str) -> float:
    p = pipeline(requests, fmt)

    def record(i: int) -> None:
        p._record(OPERATIONS[i % 20], f"user{i % 1000}@example.org", "ok", time.perf_counter())

    return per_call_us(record, n)


def scrape_us() -> float:
    tallies = {(o, r): Tally() for o in OPERATIONS for r in OUTCOMES}
    for i, t in enumerate(tallies.values()):
        for j in range(100):
            t.observe((i * j % 97) / 1000)
    writer = SimpleNamespace(sizes=Tally(SIZES))
    app: Any = SimpleNamespace(
        component=SimpleNamespace(
            pipeline=SimpleNamespace(stats=tallies),
            notifier=SimpleNamespace(sent=0),
            connected_event=asyncio.Event(),
            link_changed=0.0,
            link_drops=0,
        ),
        services=SimpleNamespace(
            payments=SimpleNamespace(writer=writer), membership=SimpleNamespace(writer=writer)
        ),
        jobs=SimpleNamespace(runs=0, last_run=None),
        db=SimpleNamespace(unavailable=0),
    )
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ComponentCollector(app))
    return per_call_us(lambda _i: generate_latest(registry), 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    n = parser.parse_args().requests
    result = {
        "bench": "request_overhead",
        "python": platform.python_version(),
        "requests_per_round": n,
        "us_per_request": {
            "before": before(n),
            "tally_only": variant(n, False, "text"),
            **{fmt: variant(n, True, fmt) for fmt in FORMATTERS},
        },
        "us_per_scrape_60_series": scrape_us(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
