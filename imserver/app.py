"""Builds the service from a config: database, services, component; runs and stops it."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from datetime import datetime

from imserver.config import Config, ConfigError
from imserver.httpd import LoopbackServer
from imserver.invite_pages import PosterPages
from imserver.jobs import Jobs
from imserver.metrics import Endpoint
from imserver.service.context import Context, utc_now
from imserver.service.policies import seed_policy
from imserver.service.registry import Services
from imserver.store.db import Database
from imserver.xmpp.component import Component

log = logging.getLogger(__name__)


# A payment allocates a few hundred short-lived objects; with CPython's default gen-0
# threshold (700) the collector ran every few payments and, every hundred or so, walked
# the long-lived caches: the payment use case alone took 328 us of CPU per payment with
# the defaults and 266 us with these (SQLite, 256 in flight, this 2-core machine).
GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Collect less often, and never walk what start-up built (it lives until exit)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class App:
    """One running imserver: a database handle, the services and the component."""

    def __init__(self, config: Config, clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config
        self.db = Database(config.database.url, echo=config.database.echo)
        self.ctx = Context(self.db, config, clock)
        self.services = Services.build(self.ctx)
        self.component = Component(config, self.services)
        self.jobs = Jobs(self.services)
        # The HTTP server on loopback, when [metrics] listen is set: /metrics and /status
        # for this machine, /invites/ for the reverse proxy of [invites] public_base_url.
        self.http: LoopbackServer | None = None
        if (address := config.metrics.address) is not None:
            self.http = LoopbackServer(*address)
            Endpoint(self, self.http)
            PosterPages(self.services.invites).install(self.http)

    async def start(self, timeout: float = 15.0) -> None:
        """Seed the policy, connect to the XMPP server and wait for the handshake."""
        self.services.invites.check_font()
        await seed_policy(self.ctx)
        if self.http is not None:
            # Before the link: while it comes up, /status already says it is down.
            try:
                await self.http.start()
            except OSError as exc:
                raise ConfigError(
                    f"metrics.listen: cannot serve on {self.config.metrics.listen} "
                    f"({exc.strerror or exc}); choose a free port or leave it empty"
                ) from None
        self.jobs.start()
        self.component.connect()
        await asyncio.wait_for(self.component.connected_event.wait(), timeout)

    async def stop(self) -> None:
        """Disconnect and close the database (its worker threads included)."""
        if self.http is not None:
            await self.http.stop()
        self.jobs.shutdown()
        await self.component.stop()
        await self.services.close()
        w, c = self.services.payments.writer, self.services.payments.cache
        log.info(
            "payments: %d in %d batches; chain cache: %d hits, %d misses, %d resets",
            w.items, w.batches, c.hits, c.misses, c.resets,
        )  # fmt: skip
        await self.db.dispose()

    async def run_forever(self) -> None:
        """Start, then serve until cancelled."""
        await self.start(timeout=60.0)
        tune_gc()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
