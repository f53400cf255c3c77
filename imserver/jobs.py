"""Scheduled jobs (APScheduler): settlement of earnings after the hold period."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from imserver.service.registry import Services

log = logging.getLogger(__name__)

SETTLE_JOB = "settlement"
# Earnings are held for days: settling every minute keeps them at most a minute late.
SETTLE_INTERVAL_SECONDS = 60


class Jobs:
    """The scheduler of one process. Every job is a use case that is safe to run twice
    (and in several processes at once), so nothing needs a distributed lock."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.runs = 0
        self.last_run: datetime | None = None  # when a settlement last ended without error

    async def settle(self) -> int:
        """The settlement job: settle whatever is due by the service clock."""
        try:
            settled = await self.services.settlement.settle()
        except Exception:
            log.exception("settlement failed; it runs again at the next interval")
            return 0
        self.runs += 1
        self.last_run = datetime.now(UTC)
        if settled:
            log.info("made %d settlements", settled)
        return settled

    def start(self) -> None:
        """Register the jobs and start; the first settlement runs at once (catch-up)."""
        self.scheduler.add_job(
            self.settle,
            IntervalTrigger(seconds=SETTLE_INTERVAL_SECONDS),
            id=SETTLE_JOB,
            next_run_time=datetime.now(UTC),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
            replace_existing=True,
        )
        self.scheduler.start()

    def shutdown(self) -> None:
        """Stop the scheduler (a running job is not waited for; it is safe to cut)."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
