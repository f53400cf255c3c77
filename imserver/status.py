"""``imserver status``: is the service well, and if not, what is wrong and what to do.

Two sources, each asked directly:

* the running component, through its loopback ``/status`` page (``[metrics] listen``):
  only the process knows its link to the XMPP server, and a page that answers only while
  the process lives cannot go stale (a status file would outlive a killed process and
  would need a heartbeat to be believed);
* the database, read by this command itself (the outbox, settlement, counts): it tells
  "the database is down" from "the component is down", and works while the component
  is stopped.

Every problem is one line saying what is wrong and what to do; the exit status is 0 when
there is none, 1 otherwise, so the command serves as a health check.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from imserver.config import Config
from imserver.service.context import Context
from imserver.service.health import Backlog, Counts, Health
from imserver.store.db import Database, Unavailable

# A notification older than this while the link is up, or a payment due for longer than
# this (the settlement job runs every minute), means something is stuck.
OUTBOX_STUCK_SECONDS = 300.0
SETTLEMENT_LATE_SECONDS = 600.0
HTTP_TIMEOUT = 5.0


@dataclass
class Report:
    """Lines to print and the problems among them."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, what: str, text: str) -> None:
        self.lines.append(f"{what:<11}{text}")

    def problem(self, what: str, text: str) -> None:
        self.add(what, f"PROBLEM: {text}")
        self.problems.append(what)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        verdict = (
            "OK" if self.ok else f"{len(self.problems)} PROBLEM(S): {', '.join(self.problems)}"
        )
        return "\n".join([*self.lines, f"status: {verdict}"])


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "never"
    seconds = int((now - at).total_seconds())
    if seconds < 120:
        return f"{at:%Y-%m-%d %H:%M:%S}Z ({seconds} s ago)"
    return f"{at:%Y-%m-%d %H:%M:%S}Z ({seconds // 60} min ago)"


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts) if ts else None


def component_status(config: Config, report: Report) -> dict[str, Any] | None:
    """Ask the running component for its /status; report what it says."""
    address = config.metrics.address
    if address is None:
        report.problem(
            "component",
            "unknown: its status endpoint is off; set [metrics] listen "
            '(e.g. "127.0.0.1:9464", or IMSERVER_METRICS__LISTEN) and restart the component',
        )
        return None
    host, port = address
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as answer:
            page: dict[str, Any] = json.loads(answer.read())
    except (urllib.error.HTTPError, ValueError) as exc:
        report.problem(
            "component",
            f"something that is not imserver answers at {url} ({exc}); is [metrics] listen "
            "the port of this component, and is that port free for it?",
        )
        return None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        report.problem(
            "component",
            f"not running: nothing answers at {url} ({reason}); start it "
            "(systemctl start imserver, or imserver run) and look at its log",
        )
        return None
    now = datetime.now(UTC)
    started = _ago(_parse(page["started"]), now)
    report.add("component", f"{page['component']} running, pid {page['pid']}, since {started}")
    link = page["link"]
    since = _ago(_parse(link["since"]), now)
    if link["up"]:
        report.add("link", f"up to {link['server']} since {since} ({link['drops']} drops)")
    else:
        report.problem(
            "link",
            f"down since {since}: the XMPP server at {link['server']} does not accept the "
            "component; check that it runs and that [xmpp] component and secret match its "
            "component declaration (the component keeps retrying)",
        )
    return page


def _database_name(config: Config) -> str:
    return make_url(config.database.url).render_as_string(hide_password=True)


def _sqlite_missing(config: Config) -> Path | None:
    url = make_url(config.database.url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database)
    return None if path.exists() else path


async def _read(config: Config) -> tuple[Backlog, Counts]:
    db = Database(config.database.url)
    try:
        health = Health(Context(db, config))
        return await health.backlog(), await health.counts()
    finally:
        await db.dispose()


def database_status(config: Config, report: Report, link_up: bool) -> None:
    """Read the backlogs and counts from the database; report them and what is late."""
    name = _database_name(config)
    missing = _sqlite_missing(config)
    if missing is not None:
        report.problem(
            "database",
            f"no database file at {missing}; check [database] url, or create it with "
            "imserver migrate",
        )
        return
    try:
        backlog, counts = asyncio.run(_read(config))
    except Unavailable as exc:
        report.problem(
            "database",
            f"unreachable: {name} ({exc}); check that the database server runs and that "
            "[database] url points at it",
        )
        return
    except Exception as exc:  # a schema that is not there (yet) or is older than the code
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        report.problem(
            "database", f"{name} cannot be read ({first}); run imserver migrate, then again"
        )
        return
    report.add("database", f"ok: {name}")
    _backlog(report, backlog, link_up)
    _counts(report, counts)


def _backlog(report: Report, b: Backlog, link_up: bool) -> None:
    if b.outbox_local == 0:
        report.add("outbox", "no notification waiting")
    elif link_up and b.outbox_age > OUTBOX_STUCK_SECONDS:
        report.problem(
            "outbox",
            f"{b.outbox_local} notifications waiting, the oldest for {int(b.outbox_age)} s "
            "although the link is up; look for notification errors in the component's log",
        )
    else:
        report.add(
            "outbox",
            f"{b.outbox_local} notifications waiting, the oldest for {int(b.outbox_age)} s",
        )
    # Not a problem of ours: a remote server is down (the log names it once per outage).
    report.add(
        "remote",
        f"{b.outbox_retrying} notifications wait for an unreachable remote server; "
        f"{b.outbox_given_up} given up",
    )
    last = f"last payment settled {_ago(b.last_settled, b.at)}"
    if b.settlement_lag > SETTLEMENT_LATE_SECONDS:
        report.problem(
            "settlement",
            f"{last}; payments due for {int(b.settlement_lag) // 60} min are not settled: "
            "the settlement job is not running (is the component running?); "
            "imserver ledger settle settles them now",
        )
    else:
        report.add("settlement", f"{last}; none overdue")


def _counts(report: Report, c: Counts) -> None:
    active: dict[str, int] = {}
    for (role, status), n in sorted(c.members.items()):
        if status == "active":
            active[role] = active.get(role, 0) + n
    ended = sum(n for (_r, status), n in c.members.items() if status != "active")
    roles = ", ".join(f"{n} {role}s" for role, n in sorted(active.items())) or "none"
    report.add("members", f"{sum(active.values())} active ({roles}); {ended} ended")
    paid = "; ".join(
        f"{cur} {n} payments, {amount} paid, {refunded} refunded"
        for cur, (n, amount, refunded) in sorted(c.payments.items())
    )
    report.add("payments", paid or "none yet")


def status(config: Config) -> Report:
    """The whole report: the component first, then the database."""
    report = Report()
    page = component_status(config, report)
    database_status(config, report, link_up=bool(page and page["link"]["up"]))
    return report
