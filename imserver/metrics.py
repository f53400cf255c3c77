"""The component's metrics (``/metrics``, Prometheus) and status (``/status``, JSON).

Nothing is counted twice and nothing is counted for Prometheus alone: the request path,
the batched writers, the notifier, the link and the database keep their own plain
counters (:class:`~imserver.service.figures.Tally` for distributions), and the
:class:`ComponentCollector` turns them into Prometheus families when a scrape comes. So
the hot path pays a dictionary lookup, a bisect and a few additions per request, and no
lock: the scrape runs on the same event loop (:mod:`imserver.httpd`). The backlogs of
the database (outbox, settlement) are read once per scrape (a few indexed reads).

Metric names: see docs/operations.md.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from imserver.httpd import LoopbackServer, Request, Response
from imserver.service.figures import Tally
from imserver.service.health import Backlog
from imserver.store.db import Unavailable

if TYPE_CHECKING:
    from imserver.app import App

log = logging.getLogger(__name__)

JSON = "application/json"
INF = float("inf")


def _buckets(tally: Tally) -> list[tuple[str, float]]:
    # The exposition's "le" label: "+Inf" for the last bucket, Python's float text else.
    return [("+Inf" if b == INF else repr(b), float(n)) for b, n in tally.cumulative()]


def _timestamp(at: datetime | None) -> str | None:
    return at.isoformat(timespec="seconds") if at is not None else None


class ComponentCollector(Collector):
    """Reads one running App's counters at scrape time."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.backlog: Backlog | None = None  # the last scrape's read (None: it failed)

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._writers()
        yield from self._link()
        yield from self._database()
        yield from self._backlog()

    def _requests(self) -> Iterator[Metric]:
        stats = self.app.component.pipeline.stats
        labels = ["operation", "outcome"]
        total = CounterMetricFamily(
            "imserver_requests",
            "Requests (IQ, ad-hoc, chat) by operation and outcome",
            labels=labels,
        )
        seconds = HistogramMetricFamily(
            "imserver_request_duration_seconds",
            "Time from a request's arrival to its answer",
            labels=labels,
        )
        for (operation, outcome), tally in sorted(stats.items()):
            total.add_metric([operation, outcome], tally.count)
            seconds.add_metric([operation, outcome], _buckets(tally), tally.total)
        yield total
        yield seconds

    def _writers(self) -> Iterator[Metric]:
        services = self.app.services
        sizes = HistogramMetricFamily(
            "imserver_batch_size",
            "Items per group commit of a batched writer",
            labels=["writer"],
        )
        for name, writer in (
            ("payments", services.payments.writer),
            ("registrations", services.membership.writer),
        ):
            sizes.add_metric([name], _buckets(writer.sizes), writer.sizes.total)
        yield sizes
        yield CounterMetricFamily(
            "imserver_notifications_sent",
            "Earnings sent in notification messages (a repeat after a fault counts again)",
            value=self.app.component.notifier.sent,
        )
        jobs = self.app.jobs
        yield CounterMetricFamily(
            "imserver_settlement_runs",
            "Settlement job runs that ended without error",
            value=jobs.runs,
        )
        if jobs.last_run is not None:
            yield GaugeMetricFamily(
                "imserver_settlement_last_run_timestamp_seconds",
                "When the settlement job last ended without error (Unix time)",
                value=jobs.last_run.timestamp(),
            )

    def _link(self) -> Iterator[Metric]:
        c = self.app.component
        yield GaugeMetricFamily(
            "imserver_xmpp_link_up",
            "1 while the component is connected to the XMPP server",
            value=1.0 if c.connected_event.is_set() else 0.0,
        )
        yield GaugeMetricFamily(
            "imserver_xmpp_link_changed_timestamp_seconds",
            "When the link last went up or down (Unix time)",
            value=c.link_changed,
        )
        yield CounterMetricFamily(
            "imserver_xmpp_link_drops",
            "Times the link to the XMPP server dropped",
            value=c.link_drops,
        )

    def _database(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "imserver_database_unavailable",
            "Transactions that failed because the database was unavailable",
            value=self.app.db.unavailable,
        )
        yield GaugeMetricFamily(
            "imserver_database_up",
            "1 when this scrape could read the database",
            value=0.0 if self.backlog is None else 1.0,
        )

    def _backlog(self) -> Iterator[Metric]:
        b = self.backlog
        if b is None:
            return  # unknown while the database is unavailable: no figure, not a zero
        yield GaugeMetricFamily(
            "imserver_outbox_pending",
            "Notifications not yet confirmed by the XMPP server",
            value=b.outbox_pending,
        )
        yield GaugeMetricFamily(
            "imserver_outbox_oldest_age_seconds",
            "How long the oldest notification waiting for our XMPP server has waited",
            value=b.outbox_age,
        )
        yield GaugeMetricFamily(
            "imserver_outbox_remote_retrying",
            "Pending notifications bounced by an unreachable remote server, to go again",
            value=b.outbox_retrying,
        )
        yield GaugeMetricFamily(
            "imserver_outbox_given_up",
            "Notifications given up: their remote server unreachable past give_up_after",
            value=b.outbox_given_up,
        )
        yield GaugeMetricFamily(
            "imserver_settlement_lag_seconds",
            "How long the oldest payment past its hold has waited for settlement",
            value=b.settlement_lag,
        )


class Endpoint:
    """``/metrics`` and ``/status`` of one App on a :class:`LoopbackServer`."""

    def __init__(self, app: App, server: LoopbackServer) -> None:
        self.app = app
        self.server = server
        self.started = time.time()
        self.collector = ComponentCollector(app)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        server.route("/metrics", self.metrics)
        server.route("/status", self.status)

    async def _read_backlog(self) -> None:
        try:
            self.collector.backlog = await self.app.services.health.backlog()
        except Unavailable:
            self.collector.backlog = None  # the database logged why

    async def metrics(self, _request: Request) -> Response:
        """The Prometheus text format (0.0.4: what every Prometheus version reads, and
        what prometheus-client's own server answers a scraper that asks for nothing else)."""
        await self._read_backlog()
        return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)

    async def status(self, _request: Request) -> Response:
        """What only the running process knows, as JSON (``imserver status`` reads it)."""
        c, jobs, x = self.app.component, self.app.jobs, self.app.config.xmpp
        body: dict[str, Any] = {
            "component": x.component,
            "pid": os.getpid(),
            "started": _timestamp(datetime.fromtimestamp(self.started, UTC)),
            "link": {
                "up": c.connected_event.is_set(),
                "since": _timestamp(datetime.fromtimestamp(c.link_changed, UTC)),
                "drops": c.link_drops,
                "server": f"{x.host}:{x.component_port}",
            },
            "settlement": {"last_run": _timestamp(jobs.last_run), "runs": jobs.runs},
            "database": {"unavailable": self.app.db.unavailable},
        }
        return Response(json.dumps(body).encode(), content_type=JSON)
