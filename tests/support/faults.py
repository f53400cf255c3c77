"""Process control and bookkeeping for the fault tests (tests/test_faults.py).

The component runs as a real child process (``imserver run``, configured through
``IMSERVER_*`` environment variables) so that it can be killed with SIGKILL; Prosody is a
private ``ProsodyInstance`` that can be restarted; merchant bots and earners are real
slixmpp clients that reconnect by themselves. What was sent, answered and received is
counted here and compared with the database afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slixmpp import Message
from slixmpp.exceptions import IqError, IqTimeout
from sqlalchemy import func, select

from imserver.config import load_config
from imserver.devserver.server import PrivateServer, terminate
from imserver.geo.regions import load_regions_csv
from imserver.service.context import Context
from imserver.service.regions import load_regions
from imserver.store.db import Database
from imserver.store.models import LedgerTxn, Member, OutboxMessage, Payment, PaymentShare
from plugins.distribution import NS
from tests.support.clients import Client

REPO = Path(__file__).parents[2]
CONFIG = REPO / "config.toml"
CONNECTED_MARK = " connected to "  # the component's log line on every session_start
# The lines of ``--trace imserver.batches``: a batch's transaction begins / has committed.
BATCH_BEGINS = re.compile(rb"imserver\.batches: batch \w+ of \d+ begins$")
BATCH_COMMITTED = re.compile(rb"imserver\.batches: batch \w+ committed$")
# Answers that mean "not handled, nothing changed": Prosody 0.12 answers
# remote-server-timeout ("Component unavailable") for a component that is not connected;
# the component answers internal-server-error for a request that failed (rolled back).
RETRYABLE = {
    "remote-server-timeout",
    "service-unavailable",
    "internal-server-error",
    "resource-constraint",
}
Earning = tuple[str, str, str, str]  # (recipient, payment, role, level or scope)


def _imserver() -> list[str]:
    """The installed console script, as an operator runs it."""
    script = Path(sys.executable).with_name("imserver")
    return [str(script)] if script.exists() else [sys.executable, "-m", "imserver.cli"]


def component_env(
    prosody: PrivateServer, component: str, secret: str, url: str, admin: str
) -> dict[str, str]:
    """The environment of a child ``imserver``: this process's, minus any IMSERVER_* of
    its own, plus the config of a component on ``prosody`` (or ejabberd) and database
    ``url``.

    The reconnect cap is left at the shipped default (config.toml) on purpose: the
    Prosody-restart test measures the back-off that operators get.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSERVER_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "IMSERVER_ADMINS": json.dumps([admin]),
            "IMSERVER_XMPP__COMPONENT": component,
            "IMSERVER_XMPP__SECRET": secret,
            "IMSERVER_XMPP__COMPONENT_PORT": str(prosody.component_port),
            "IMSERVER_XMPP__CLIENT_PORT": str(prosody.client_port),
            "IMSERVER_DATABASE__URL": url,
            # Short digests: the checks wait for every notification after each fault.
            "IMSERVER_NOTIFICATIONS__WINDOW": "0.05",
        }
    )
    return env


async def load_shipped_regions(env: Mapping[str, str], url: str) -> None:
    """Load the shipped region data into the (migrated) database at ``url``."""
    config = load_config(CONFIG, env={k: v for k, v in env.items() if k.startswith("IMSERVER_")})
    db = Database(url)
    try:
        await load_regions(Context(db, config), load_regions_csv())
    finally:
        await db.dispose()


def run_cli(env: Mapping[str, str], *args: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``imserver --config config.toml ARGS`` in a child; (exit code, output)."""
    result = subprocess.run(
        [*_imserver(), "--config", str(CONFIG), *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


class ComponentProcess:
    """``imserver run`` as a child process: start, SIGKILL, stop, and wait for the link.

    Every incarnation appends to one log file; each ``session_start`` of the component
    writes one "connected to" line, which is how the tests see it (re)connect.
    """

    def __init__(
        self, env: Mapping[str, str], log_path: Path, trace: tuple[str, ...] = ()
    ) -> None:
        self.env = dict(env)
        self.log_path = log_path
        # Loggers at DEBUG besides imserver.batches (its lines are read by batch_open).
        self.trace = ("imserver.batches", *trace)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._offset = 0
        self._connections = 0
        self._batch_offset = 0
        self._batch_open = False

    def start(self) -> None:
        """Spawn a new incarnation (the previous one must be gone)."""
        assert self.process is None or self.process.poll() is not None
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *_imserver(),
                    "--config",
                    str(CONFIG),
                    *(arg for name in self.trace for arg in ("--trace", name)),
                    "run",
                ],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: a kill never reaches the test runner.
                start_new_session=True,
            )
        self.starts += 1
        self.batch_open()  # skip the previous incarnation's lines: its batch died with it
        self._batch_open = False

    def batch_open(self) -> bool:
        """Whether the newest batch line of the log says a transaction is under way.

        Read right after a SIGKILL, it tells whether the kill landed inside a commit: the
        component writes its "begins" line before the transaction and its "committed"
        line after the commit returned, each flushed before it goes on.
        """
        with self.log_path.open("rb") as f:
            f.seek(self._batch_offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        for line in reversed(chunk[:end].splitlines()):
            if BATCH_BEGINS.search(line):
                self._batch_open = True
                break
            if BATCH_COMMITTED.search(line):
                self._batch_open = False
                break
        self._batch_offset += end
        return self._batch_open

    async def kill_inside_batch(self, timeout: float = 5.0) -> bool:
        """SIGKILL as soon as the log shows a batch under way (or at ``timeout``);
        returns whether the kill landed inside it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.batch_open():
                break
            await asyncio.sleep(0.001)
        self.kill()
        return self.batch_open()

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when the machine's OOM killer strikes."""
        proc = self.process
        assert proc is not None and proc.poll() is None, "the component died on its own"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self.kills += 1

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the graceful stop of ``imserver run``), then SIGKILL if it hangs."""
        if self.process is not None:
            terminate(self.process, timeout)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def connections(self) -> int:
        """How many times any incarnation has completed its handshake with Prosody."""
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        # Count whole lines only; a partial last line is read again next time.
        end = chunk.rfind(b"\n") + 1
        self._connections += chunk[:end].decode(errors="replace").count(CONNECTED_MARK)
        self._offset += end
        return self._connections

    async def wait_connection(self, after: int, timeout: float) -> float:
        """Wait until more than ``after`` handshakes happened; returns the seconds waited."""
        t0 = time.monotonic()
        while self.connections() <= after:
            if not self.alive:
                raise AssertionError(f"imserver run exited: {self.tail()}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"no handshake within {timeout}s: {self.tail()}")
            await asyncio.sleep(0.02)
        return time.monotonic() - t0

    def tail(self, lines: int = 30) -> str:
        """The end of the log, for failure messages."""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class FaultClient(Client):
    """A test client that reconnects by itself (capped back-off) and counts earnings.

    Prosody drops every client when it restarts; like a real chat client this one logs
    in again, and its initial presence makes Prosody deliver what was stored offline.
    """

    def __init__(self, jid: str) -> None:
        super().__init__(jid)
        self.port = 0
        self.closing = False
        self.reconnects = 0
        self.earned: Counter[Earning] = Counter()
        # The ids (message id, XEP-0359 origin-id) of every message that carried each.
        self.carried_by: dict[Earning, list[tuple[str, str]]] = {}
        self.add_event_handler("disconnected", self._on_disconnected)

    def _message(self, msg: Message) -> None:
        # Count, don't queue: the fault runs receive thousands of messages.
        if msg["type"] != "chat":
            return
        origin = msg.xml.find("{urn:xmpp:sid:0}origin-id")
        ids = (msg["id"], "" if origin is None else origin.get("id", ""))
        for el in msg.xml.findall(f"{{{NS}}}earning"):
            a = el.attrib
            if "refund" in a:
                continue
            key = (self.bare, a.get("payment", ""), a.get("role", ""))
            earning = (*key, a.get("level") or a.get("scope") or "")
            self.earned[earning] += 1
            self.carried_by.setdefault(earning, []).append(ids)

    async def open(self, port: int, timeout: float = 20.0) -> FaultClient:
        self.port = port
        await super().open(port, timeout)
        return self

    def _on_disconnected(self, _event: Any) -> None:
        self.ready.clear()
        if self.closing:
            return
        self.reconnects += 1
        # connect() without an address would forget the loopback one (DNS lookup instead).
        self.loop.call_later(random.uniform(0.1, 0.4), self.connect, "127.0.0.1", self.port)

    def reschedule_connection_attempt(self) -> asyncio.Future[Any] | None:
        """Retry a refused connection every 0.3 s (slixmpp's own back-off grows to 300 s)."""
        if self._current_connection_attempt is None:
            return None
        self._connect_loop_wait = 0.3
        self._current_connection_attempt = asyncio.ensure_future(self._connect_loop())
        return self._current_connection_attempt

    async def close(self) -> None:
        self.closing = True
        await super().close()


@dataclass
class LoadStats:
    """What the merchant bots did: one request per attempt, one answer per payment id."""

    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    sent: set[tuple[str, str]] = field(default_factory=set)  # (merchant, ref)
    # (merchant, ref) -> the shares of the first answer: (role, level/scope, jid, amount)
    answers: dict[tuple[str, str], list[tuple[str, str, str, int]]] = field(default_factory=dict)
    unanswered: set[tuple[str, str]] = field(default_factory=set)
    changed_answers: int = 0  # a later answer to the same id that differs (must stay 0)


def shares_of(iq: Any) -> list[tuple[str, str, str, int]]:
    """(role, level or scope, jid, amount) of each share of a distribution answer."""
    return [
        (s["role"], s["level"] or s["scope"], s["jid"], int(s["amount"]))
        for s in iq["distribution"]["shares"]
    ]


@dataclass
class Bot:
    """A merchant's bot client and what it reports payments for."""

    client: FaultClient
    merchant: str
    payers: list[str]


async def pay_until_answered(
    bot: Bot,
    component: str,
    ref: str,
    payer: str,
    amount: int,
    stats: LoadStats,
    *,
    timeout: float,
    deadline: float,
) -> None:
    """Send one payment and resend *the same id* until it is answered (or the deadline)."""
    key = (bot.merchant, ref)
    stats.sent.add(key)
    first = True
    while True:
        if time.monotonic() > deadline:
            stats.unanswered.add(key)
            return
        if not first:
            stats.retries += 1
            await asyncio.sleep(random.uniform(0.1, 0.3))
        first = False
        with contextlib.suppress(asyncio.TimeoutError):
            # While Prosody is down the bot is too: send once it is back.
            await asyncio.wait_for(bot.client.ready.wait(), max(0.0, deadline - time.monotonic()))
        if not bot.client.ready.is_set():
            continue
        stats.requests += 1
        try:
            iq = await bot.client.dist.pay(component, ref, payer, amount, "CNY", timeout=timeout)
        except IqTimeout:
            stats.timeouts += 1
            continue
        except IqError as exc:
            condition = exc.iq["error"]["condition"]
            stats.errors[condition] += 1
            if condition in RETRYABLE:
                continue
            raise AssertionError(f"payment {ref}: {condition}: {exc.iq['error']['text']}") from None
        got = shares_of(iq)
        if key in stats.answers:
            stats.changed_answers += got != stats.answers[key]
        else:
            stats.answers[key] = got
        return


async def payment_load(
    bots: list[Bot],
    component: str,
    stats: LoadStats,
    stop: asyncio.Event,
    *,
    prefix: str,
    workers_per_bot: int = 2,
    pause: float = 0.03,
    timeout: float = 3.0,
    drain_seconds: float = 90.0,
) -> None:
    """Bots report payments until ``stop``; each worker then finishes its payment.

    ``timeout`` is the bot's wait for an answer before it resends the same id. After
    ``stop`` the workers have ``drain_seconds`` to get their last payment answered.
    """
    rng = random.Random(prefix)
    deadline_box = [float("inf")]

    async def worker(bot: Bot, w: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            ref = f"{prefix}-{bot.client.bare.split('@')[0]}-{w}-{n}"
            payer = rng.choice(bot.payers)
            amount = rng.randrange(100, 100_000)
            await pay_until_answered(
                bot, component, ref, payer, amount, stats, timeout=timeout, deadline=deadline_box[0]
            )
            await asyncio.sleep(pause)

    async def set_deadline() -> None:
        await stop.wait()
        deadline_box[0] = time.monotonic() + drain_seconds

    setter = asyncio.ensure_future(set_deadline())
    try:
        await asyncio.gather(*(worker(b, w) for b in bots for w in range(workers_per_bot)))
    finally:
        setter.cancel()


# -- the database after the run ---------------------------------------------------------


@dataclass
class StoredPayment:
    merchant: str
    ref: str
    rows: int  # payment rows with this (merchant, ref): the unique key keeps it at 1
    movements: int  # ledger movements of kind 'payment' for it: exactly 1
    shares: list[tuple[str, str, str, int]]


async def stored_payments(url: str, prefix: str) -> dict[tuple[str, str], StoredPayment]:
    """Every payment whose id starts with ``prefix``, with its shares and movements."""
    db = Database(url)
    try:

        async def read(conn: Any) -> dict[tuple[str, str], StoredPayment]:
            merchant = Member.__table__.alias("merchant")
            rows = (
                await conn.execute(
                    select(Payment.id, merchant.c.jid, Payment.ref)
                    .join(merchant, merchant.c.id == Payment.merchant_id)
                    .where(Payment.ref.startswith(prefix))
                )
            ).all()
            moves = dict(
                (
                    await conn.execute(
                        select(LedgerTxn.payment_id, func.count())
                        .where(LedgerTxn.kind == "payment", LedgerTxn.payment_id.is_not(None))
                        .group_by(LedgerTxn.payment_id)
                    )
                ).all()
            )
            shares: dict[int, list[tuple[str, str, str, int]]] = {}
            share_rows = await conn.execute(
                select(
                    PaymentShare.payment_id,
                    PaymentShare.role,
                    PaymentShare.level,
                    PaymentShare.scope,
                    Member.jid,
                    PaymentShare.amount,
                )
                .outerjoin(Member, Member.id == PaymentShare.member_id)
                .join(Payment, Payment.id == PaymentShare.payment_id)
                .where(Payment.ref.startswith(prefix))
                .order_by(PaymentShare.payment_id, PaymentShare.seq)
            )
            for pid, role, level, scope, jid, amount in share_rows:
                level_or_scope = str(level) if level is not None else (scope or "")
                shares.setdefault(pid, []).append((role, level_or_scope, jid or "", int(amount)))
            found: dict[tuple[str, str], StoredPayment] = {}
            for pid, mjid, ref in rows:
                key = (mjid, ref)
                if key in found:
                    found[key].rows += 1
                    continue
                found[key] = StoredPayment(
                    mjid, ref, 1, int(moves.get(pid, 0)), shares.get(pid, [])
                )
            return found

        return await db.transaction(read)
    finally:
        await db.dispose()


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    earning: Earning
    sent_at: datetime | None
    created_at: datetime | None = None
    message_id: int | None = None  # the message it was (first) sent in


async def outbox_entries(url: str, prefix: str) -> list[OutboxEntry]:
    """The earning notifications (not refunds) of payments whose id starts with ``prefix``."""
    db = Database(url)
    try:

        async def read(conn: Any) -> list[OutboxEntry]:
            rows = await conn.execute(
                select(
                    OutboxMessage.id,
                    OutboxMessage.recipient,
                    OutboxMessage.payload,
                    OutboxMessage.sent_at,
                    OutboxMessage.created_at,
                    OutboxMessage.message_id,
                )
            )
            found = []
            for oid, recipient, payload, sent_at, created_at, message_id in rows:
                p = json.loads(payload)
                if "refund" in p or not str(p.get("payment", "")).startswith(prefix):
                    continue
                level_or_scope = p.get("level") or p.get("scope") or ""
                found.append(
                    OutboxEntry(
                        int(oid),
                        (recipient, p["payment"], p["role"], level_or_scope),
                        _utc(sent_at),
                        _utc(created_at),
                        None if message_id is None else int(message_id),
                    )
                )
            return found

        return await db.transaction(read)
    finally:
        await db.dispose()


def message_ids(entries: list[OutboxEntry]) -> dict[int, str]:
    """Outbox row id -> the id of the chat message that carried it (stored at the claim,
    kept when the message is sent again)."""
    return {e.id: f"earning-{e.message_id}" for e in entries if e.message_id is not None}


def accepted_by_prosody(log_path: Path) -> set[str]:
    """Ids of the earning messages that Prosody read from the component (debug log)."""
    pattern = re.compile(r"Received\[component\]: <message [^>]*\bid='(earning-\d+)'")
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return set(pattern.findall(text))


def _utc(at: datetime | None) -> datetime | None:
    # SQLite gives naive datetimes back (stored as UTC); PostgreSQL aware ones.
    if at is None:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def utc_at(wall: float) -> datetime:
    """A ``time.time()`` value as an aware UTC datetime (to compare with ``sent_at``)."""
    return datetime.fromtimestamp(wall, UTC)


async def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> bool:
    """Poll an (async or plain) predicate until true or ``timeout``; returns the last value."""
    t0 = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() - t0 > timeout:
            return bool(value)
        await asyncio.sleep(interval)
