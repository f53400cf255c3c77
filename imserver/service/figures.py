"""Running figures kept in memory for the metrics endpoint (imserver/metrics.py).

A :class:`Tally` is what a Prometheus histogram needs (a count per bucket, a count and a
sum) at the cost of a bisect and three additions per observation: no lock, because every
observer and the reader run on the event loop's thread.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

# Request durations in seconds: from a cached chain read to a stuck database.
SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Items per group commit (service/batching.py): 1 when idle, batch_max under load.
SIZES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 5000.0)


class Tally:
    """Observations sorted into buckets with upper bounds ``bounds`` (and +Inf)."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: Sequence[float] = SECONDS) -> None:
        self.bounds = tuple(bounds)
        self.buckets = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (a bucket holds the values up to its bound)."""
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> Iterator[tuple[float, int]]:
        """(upper bound, observations up to it), +Inf last: Prometheus' ``le`` buckets."""
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.buckets, strict=True):
            running += n
            yield bound, running
