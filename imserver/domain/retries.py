"""When a notification bounced by an unreachable remote server goes again, or never."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """A bounced notification waits ``first`` after its first bounce, twice as long after
    each next one, never longer than ``longest``; once ``give_up_after`` has passed since
    its first bounce, the next bounce ends it (undeliverable)."""

    first: timedelta = timedelta(seconds=5)
    longest: timedelta = timedelta(minutes=10)
    give_up_after: timedelta = timedelta(days=7)

    def delay(self, bounces: int) -> timedelta:
        """The wait after the ``bounces``-th bounce (1 for the first)."""
        doublings: int = min(max(bounces - 1, 0), 32)
        return min(self.first * (1 << doublings), self.longest)

    def deadline(self, first_bounce: datetime) -> datetime:
        """The last moment a notification that first bounced at ``first_bounce`` is sent."""
        return first_bounce + self.give_up_after

    def next_try(self, first_bounce: datetime, now: datetime, bounces: int) -> datetime | None:
        """When to send again after the ``bounces``-th bounce, which came at ``now``; None:
        give up (the deadline has passed). The last wait is cut short at the deadline, so
        that a notification gets its last try then rather than up to ``longest`` later."""
        deadline = self.deadline(first_bounce)
        if now >= deadline:
            return None
        return min(now + self.delay(bounces), deadline)
