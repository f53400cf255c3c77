#!/usr/bin/env python3
"""A lean XMPP c2s load generator: raw asyncio sockets, no slixmpp, one JSON line out.

    python bench/loadgen.py --port 5222 --to dist.localhost --accounts bots.txt \\
        --password pw --connections 4 --window 64 --seconds 10 --template payment \\
        --picks payers.txt [--warmup 1] [--watch prosody=PID --watch component=PID,PID]
        [--watch-cmdline database=bench_1234]

Each connection logs in as one account (SCRAM-SHA-1, or PLAIN when that is all the
server offers), binds a resource and then keeps ``--window`` IQs in flight, each built
from a template with a counter, for ``--seconds`` (after ``--warmup``) or until each
connection has sent ``--count`` requests. ``--inflight`` caps the requests in flight
over all connections (registrations: many connections, one request each).

Responses are split out of the byte stream by a tiny tag scanner (no XML tree is
built): only the top-level stanza's ``id``/``type`` and, for errors, the condition
are read. The generator reports its own CPU time next to that of the processes given
with ``--watch`` (several pids under one name are summed: the component processes
behind ejabberd; or whose command line contains a text, ``--watch-cmdline``: the
PostgreSQL backends of one database), over the same measurement window, in % of a
core and in microseconds per answer, so that a reader can see it was never the
bottleneck.

Also importable: ``probe`` waits for a JID to answer; ``write_accounts`` (from
``imserver.devserver.accounts``) creates Prosody ``internal_hashed`` accounts as files.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import hmac
import json
import os
import random
import re
import resource
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NS = "https://imserver.dev/protocol/distribution/0"
TEMPLATES = {
    # A payment reported by a merchant's bot; {pick} is the payer.
    "payment": (
        "<iq type='set' to='{to}' id='{id}'><payment xmlns='" + NS + "' id='{tag}-{seq}' "
        "payer='{pick}' amount='10000' currency='CNY'/></iq>"
    ),
    # Joining through a referrer; {pick} is the referrer.
    "register": (
        "<iq type='set' to='{to}' id='{id}'><register xmlns='" + NS + "' referrer='{pick}'/></iq>"
    ),
    "ping": "<iq type='get' to='{to}' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>",
}
STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
)
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"

# One tag: <name ...>, </name> or <name .../>. Prosody escapes '>' inside attribute
# values and text, and sends no comments or CDATA, so a tag never contains '>'.
_TAG = re.compile(rb"<[^>]*>")
_HEADER = re.compile(rb"<stream:stream\b[^>]*>")
_ID = re.compile(rb"""\sid=(?:'([^']*)'|"([^"]*)")""")
_TYPE = re.compile(rb"""\stype=['"]([a-z]+)['"]""")
_CONDITION = re.compile(rb"""<([a-z-]+)\s+xmlns=['"]urn:ietf:params:xml:ns:xmpp-stanzas['"]""")
_TEXT = re.compile(rb">([^<]*)<")
_SLASH = ord("/")


class LoginError(RuntimeError):
    """The server refused or broke off the stream set-up of a connection."""


class Splitter:
    """Cuts a c2s byte stream into top-level stanzas (bytes), after the stream header.

    Incremental: a stanza split across reads is kept until its end arrives; tags
    already scanned are not scanned again.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Expect a new stream header (at start and after SASL success)."""
        self.buf = b""
        self.header: bytes | None = None
        self.depth = 0
        self.scan = 0
        self.closed = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the stanzas they completed."""
        buf = self.buf + data if self.buf else data
        if self.header is None:
            m = _HEADER.search(buf)
            if m is None:
                self.buf = buf
                return []
            self.header = m.group(0)
            buf = buf[m.end() :]
            self.scan = 0
        out: list[bytes] = []
        depth, start, pos = self.depth, 0, self.scan
        for m in _TAG.finditer(buf, pos):
            a, b = m.span()
            if buf[a + 1] == _SLASH:  # </name>
                depth -= 1
                if depth == 0:
                    out.append(buf[start:b])
                elif depth < 0:  # </stream:stream>
                    self.closed = True
                    break
            elif buf[b - 2] == _SLASH:  # <name/>
                if depth == 0:
                    out.append(buf[a:b])
            else:
                if depth == 0:
                    start = a
                depth += 1
            pos = b
        # Keep only the unfinished stanza (or the unscanned tail).
        if depth > 0:
            self.buf, self.scan = buf[start:], pos - start
        else:
            self.buf, self.scan = buf[pos:], 0
        self.depth = depth
        return out


def parse_reply(stanza: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(id, type, error condition or b"") of an <iq/>; None for other stanzas."""
    if not stanza.startswith(b"<iq"):
        return None
    head = stanza[: stanza.index(b">") + 1]
    m = _ID.search(head)
    t = _TYPE.search(head)
    if m is None or t is None:
        return None
    ident = m.group(1) if m.group(1) is not None else m.group(2)
    kind = t.group(1)
    condition = b""
    if kind == b"error":
        names = [n for n in _CONDITION.findall(stanza) if n != b"text"]
        condition = names[0] if names else b"undefined-condition"
    return ident, kind, condition


_SALTED: dict[tuple[str, bytes, int], bytes] = {}


def _salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    # Accounts written by write_accounts share a salt: one PBKDF2 for all logins.
    key = (password, salt, iterations)
    if key not in _SALTED:
        _SALTED[key] = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
    return _SALTED[key]


def _element_text(stanza: bytes) -> bytes:
    m = _TEXT.search(stanza)
    return m.group(1).strip() if m else b""


class Connection(asyncio.Protocol):
    """One c2s stream. Set-up reads stanzas from a queue; the run reads them in a callback."""

    def __init__(self, index: int, jid: str, password: str, resource_name: str) -> None:
        self.index = index
        self.jid = jid
        self.user, _, self.domain = jid.partition("@")
        self.password = password
        self.resource_name = resource_name
        self.transport: asyncio.Transport | None = None
        self.splitter = Splitter()
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.on_stanzas: Callable[[Connection, list[bytes]], None] | None = None
        self.lost = False
        self.on_lost: Callable[[Connection], None] | None = None
        # Run state (owned by Runner).
        self.pending: dict[bytes, int] = {}
        self.remaining = -1  # requests left to send; -1: no count limit
        self.queued = False

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        stanzas = self.splitter.feed(data)
        if self.on_stanzas is not None:
            self.on_stanzas(self, stanzas)
        else:
            for s in stanzas:
                self.inbox.put_nowait(s)
        if self.splitter.closed and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.inbox.put_nowait(None)
        if self.on_lost is not None:
            self.on_lost(self)

    # -- set-up --------------------------------------------------------------

    def write(self, text: str) -> None:
        """Send raw XML text."""
        assert self.transport is not None
        self.transport.write(text.encode())

    async def next_stanza(self, timeout: float) -> bytes:
        """The next stanza of the set-up phase."""
        s = await asyncio.wait_for(self.inbox.get(), timeout)
        if s is None:
            raise LoginError(f"{self.jid}: connection closed during set-up")
        return s

    async def _open_stream(self, timeout: float) -> bytes:
        self.splitter.reset()
        self.write(STREAM_HEADER.format(domain=self.domain))
        features = await self.next_stanza(timeout)
        if not features.startswith(b"<stream:features"):
            raise LoginError(f"{self.jid}: expected stream features, got {features[:200]!r}")
        return features

    async def login(self, host: str, port: int, timeout: float = 30.0) -> None:
        """Connect, authenticate, restart the stream and bind a resource."""
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        features = await self._open_stream(timeout)
        if b"<mechanism>SCRAM-SHA-1</mechanism>" in features:
            await self._scram(timeout)
        elif b"<mechanism>PLAIN</mechanism>" in features:
            await self._plain(timeout)
        else:
            raise LoginError(f"{self.jid}: no usable SASL mechanism in {features[:300]!r}")
        await self._open_stream(timeout)
        self.write(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{self.resource_name}</resource></bind></iq>"
        )
        reply = await self.next_stanza(timeout)
        parsed = parse_reply(reply)
        if parsed is None or parsed[1] != b"result":
            raise LoginError(f"{self.jid}: bind failed: {reply[:300]!r}")

    async def _plain(self, timeout: float) -> None:
        token = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        self.write(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>")
        answer = await self.next_stanza(timeout)
        if not answer.startswith(b"<success"):
            raise LoginError(f"{self.jid}: PLAIN refused: {answer[:300]!r}")

    async def _scram(self, timeout: float) -> None:
        cnonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={self.user},r={cnonce}"
        token = base64.b64encode(f"n,,{first_bare}".encode()).decode()
        self.write(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-1'>{token}</auth>")
        challenge = await self.next_stanza(timeout)
        if not challenge.startswith(b"<challenge"):
            raise LoginError(f"{self.jid}: SCRAM refused: {challenge[:300]!r}")
        server_first = base64.b64decode(_element_text(challenge)).decode()
        fields = dict(part.split("=", 1) for part in server_first.split(","))
        nonce, salt, iterations = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
        if not nonce.startswith(cnonce):
            raise LoginError(f"{self.jid}: server nonce does not extend ours")
        salted = _salted_password(self.password, salt, iterations)
        final_bare = f"c=biws,r={nonce}"
        auth_message = f"{first_bare},{server_first},{final_bare}".encode()
        client_key = hmac.new(salted, b"Client Key", "sha1").digest()
        signature = hmac.new(hashlib.sha1(client_key).digest(), auth_message, "sha1").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        final = f"{final_bare},p={base64.b64encode(proof).decode()}"
        self.write(
            f"<response xmlns='{SASL_NS}'>{base64.b64encode(final.encode()).decode()}</response>"
        )
        answer = await self.next_stanza(timeout)
        if not answer.startswith(b"<success"):
            raise LoginError(f"{self.jid}: SCRAM failed: {answer[:300]!r}")

    def close(self) -> None:
        """End the stream politely and close the socket."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"</stream:stream>")
            self.transport.close()


async def probe(conn: Connection, to: str, timeout: float) -> float:
    """Ping ``to`` through ``conn`` until it answers with a result; seconds waited.

    The XMPP server answers for a component that is not connected (an error), so
    only a result proves that the component itself is there.
    """
    start = time.monotonic()
    n = 0
    while True:
        n += 1
        ident = f"probe-{n}"
        conn.write(TEMPLATES["ping"].format(to=to, id=ident))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                s = await conn.next_stanza(max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                break
            parsed = parse_reply(s)
            if parsed and parsed[0] == ident.encode():
                if parsed[1] == b"result":
                    return time.monotonic() - start
                break
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{to} did not answer a ping within {timeout}s")
        await asyncio.sleep(0.2)


def _proc_cpu(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    # After the ")" ending the command name: field 3 is index 0, utime is 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _watched(pids: dict[str, list[int]], cmdlines: dict[str, str]) -> dict[str, dict[int, float]]:
    """CPU seconds per pid of each watched name (pids, or a command-line text)."""
    out: dict[str, dict[int, float]] = {}
    for name, some in pids.items():
        times = ((pid, _proc_cpu(pid)) for pid in some)
        out[name] = {pid: t for pid, t in times if t is not None}
    if cmdlines:
        found: dict[str, dict[int, float]] = {name: {} for name in cmdlines}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    cmdline = fh.read().decode(errors="replace")
            except OSError:
                continue
            for name, text in cmdlines.items():
                if text in cmdline:
                    t = _proc_cpu(int(entry.name))
                    if t is not None:
                        found[name][int(entry.name)] = t
        out.update(found)
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat's first line."""
    with open("/proc/stat", "rb") as fh:
        values = [int(v) for v in fh.readline().split()[1:9]]
    # user nice system idle iowait irq softirq steal; guest time is already inside user
    # and nice, and steal is time the hypervisor gave to someone else.
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return float(busy), float(busy + idle + iowait + steal)


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Sample:
    """CPU counters at one instant."""

    at: float
    own: float
    watched: dict[str, dict[int, float]]
    machine: tuple[float, float]


@dataclass
class Plan:
    """What to send: the template, the picks and the shape of the load."""

    template: str
    picks: list[str]
    pick_random: bool
    window: int
    count: int  # per connection; 0: until time is up
    inflight: int  # over all connections; 0: no global cap
    seconds: float
    warmup: float
    timeout: float
    watch: dict[str, list[int]] = field(default_factory=dict)
    watch_cmdline: dict[str, str] = field(default_factory=dict)
    progress: bool = False
    label: str = "load"


class Runner:
    """Keeps the requests in flight and records their answers."""

    def __init__(self, conns: list[Connection], plan: Plan) -> None:
        self.conns = conns
        self.plan = plan
        self.limit = plan.inflight or 1 << 60
        self.inflight = 0
        self.seq = 0
        self.sent = 0
        self.results = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.lost_requests = 0
        self.latencies: list[int] = []  # ns, of requests sent inside the window
        self.window_answers = 0
        self.sending = True
        self.ready: collections.deque[Connection] = collections.deque()
        self.t_start = 0
        self.t_measure = 0  # ns; requests sent from here on are measured
        self.t_end = 1 << 62  # ns; answers after this are not counted in the rate
        self.t_last = 0
        self.first: Sample | None = None
        self.last: Sample | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rng = random.Random(1)
        self._pick_i = 0

    def sample(self) -> Sample:
        """The CPU counters of this process, the watched ones and the machine, now."""
        return Sample(
            time.perf_counter(),
            _self_cpu(),
            _watched(self.plan.watch, self.plan.watch_cmdline),
            machine_cpu(),
        )

    def _pick(self) -> str:
        picks = self.plan.picks
        if not picks:
            return ""
        if self.plan.pick_random:
            return picks[self._rng.randrange(len(picks))]
        self._pick_i += 1
        return picks[self._pick_i % len(picks)]

    def _fill(self, conn: Connection) -> None:
        """Send as many requests on ``conn`` as its window and the global cap allow."""
        if conn.lost or conn.transport is None:
            return
        room = min(self.plan.window - len(conn.pending), self.limit - self.inflight)
        if conn.remaining >= 0:
            room = min(room, conn.remaining)
        if room <= 0:
            return
        chunks = []
        now = time.perf_counter_ns()
        template, pending = self.plan.template, conn.pending
        for _ in range(room):
            self.seq += 1
            seq = self.seq
            chunks.append(template.format(id=seq, seq=seq, pick=self._pick()))
            pending[b"%d" % seq] = now
        conn.transport.write("".join(chunks).encode())
        self.sent += room
        self.inflight += room
        if conn.remaining >= 0:
            conn.remaining -= room

    def _pump(self) -> None:
        while self.sending and self.ready and self.inflight < self.limit:
            conn = self.ready.popleft()
            conn.queued = False
            self._fill(conn)
        if self.sending and self.plan.count and not self.ready and self.inflight == 0:
            self._stop_sending()
        self._check_done()

    def _requeue(self, conn: Connection) -> None:
        if not conn.queued and not conn.lost and conn.remaining != 0:
            conn.queued = True
            self.ready.append(conn)

    def on_stanzas(self, conn: Connection, stanzas: list[bytes]) -> None:
        """Account for every answer in ``stanzas`` (other stanzas are ignored)."""
        now = time.perf_counter_ns()
        pending = conn.pending
        for s in stanzas:
            parsed = parse_reply(s)
            if parsed is None:
                continue
            ident, kind, condition = parsed
            sent_at = pending.pop(ident, None)
            if sent_at is None:
                continue
            self.inflight -= 1
            if kind == b"result":
                self.results += 1
            else:
                self.errors[condition.decode()] += 1
            if sent_at >= self.t_measure:
                self.latencies.append(now - sent_at)
            if self.t_measure <= now <= self.t_end:
                self.window_answers += 1
            self.t_last = now
        self._requeue(conn)
        self._pump()

    def on_lost(self, conn: Connection) -> None:
        """A dropped connection: its requests in flight are lost, it sends no more."""
        n = len(conn.pending)
        if n:
            self.lost_requests += n
            self.inflight -= n
            conn.pending.clear()
        self._pump()

    def _stop_sending(self) -> None:
        if not self.sending:
            return
        self.sending = False
        if self.plan.count:
            # Count mode: the window runs from the first send to the last answer.
            self.t_end = time.perf_counter_ns()
        self.last = self.sample()
        asyncio.get_running_loop().call_later(self.plan.timeout, self._give_up)

    def _begin_window(self) -> None:
        self.t_measure = time.perf_counter_ns()
        self.first = self.sample()

    def _check_done(self) -> None:
        if not self.sending and self.inflight == 0 and not self.done.done():
            self.done.set_result(None)

    def _give_up(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    async def run(self) -> dict[str, Any]:
        """Start the load, wait until it is over, return the report."""
        loop = asyncio.get_running_loop()
        plan = self.plan
        for conn in self.conns:
            conn.on_stanzas = self.on_stanzas
            conn.on_lost = self.on_lost
            conn.remaining = plan.count if plan.count else -1
            self._requeue(conn)
        self.t_start = time.perf_counter_ns()
        if plan.count:
            self._begin_window()
        else:
            self.t_measure = self.t_start + int(plan.warmup * 1e9)
            self.t_end = self.t_measure + int(plan.seconds * 1e9)
            loop.call_later(plan.warmup, self._begin_window)
            loop.call_later(plan.warmup + plan.seconds, self._stop_sending)
        ticker = asyncio.create_task(self._progress()) if plan.progress else None
        watchdog = asyncio.create_task(self._watchdog())
        self._pump()
        await self.done
        watchdog.cancel()
        if ticker is not None:
            ticker.cancel()
            print(file=sys.stderr)
        if plan.count:
            # The window ends with the last answer.
            self.t_end = self.t_last or time.perf_counter_ns()
            self.last = self.sample()
        elif self.last is None:  # the watchdog gave up before the end
            self.t_end = min(self.t_end, time.perf_counter_ns())
            self.last = self.sample()
        return self.report()

    async def _watchdog(self) -> None:
        # Requests nobody answers must not hang the run: give up after --timeout
        # seconds without any answer while requests are in flight.
        while True:
            await asyncio.sleep(1.0)
            quiet = (time.perf_counter_ns() - max(self.t_last, self.t_start)) / 1e9
            if self.inflight > 0 and quiet > self.plan.timeout:
                self.sending = False
                self._give_up()
                return

    async def _progress(self) -> None:
        total = self.plan.warmup + self.plan.seconds
        start = time.monotonic()
        tty = sys.stderr.isatty()
        previous = 0
        while True:
            await asyncio.sleep(1.0)
            answered = self.results + sum(self.errors.values())
            done = time.monotonic() - start
            what = f"{done:4.0f}/{total:.0f}s" if not self.plan.count else f"{done:4.0f}s"
            line = (
                f"  {self.plan.label}: {what} sent {self.sent} answered {answered} "
                f"({answered - previous}/s) in flight {self.inflight}"
            )
            previous = answered
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr)

    def report(self) -> dict[str, Any]:
        """The run's figures as a JSON-able dict."""
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(len(lat) * p))] / 1e6, 2)

        seconds = max(self.t_end - self.t_measure, 1) / 1e9
        timeouts = sum(len(c.pending) for c in self.conns)
        cpu: dict[str, Any] = {}
        first, last = self.first, self.last
        if first is not None and last is not None:
            wall = max(last.at - first.at, 1e-9)
            spent = {"generator": last.own - first.own}
            # The names watched with several pids (component processes): each one's.
            each: dict[str, dict[str, float]] = {}
            for name in (*self.plan.watch, *self.plan.watch_cmdline):
                a, b = first.watched.get(name, {}), last.watched.get(name, {})
                if b:
                    # A process born inside the window counts from zero; one that died
                    # inside it is lost (rare: pools keep their connections).
                    per_pid = {pid: t - a.get(pid, 0.0) for pid, t in b.items()}
                    spent[name] = sum(per_pid.values())
                    if len(self.plan.watch.get(name, ())) > 1:
                        each[name] = {str(pid): v for pid, v in per_pid.items()}
            total = sum(spent.values()) or 1e-9
            answers = max(self.window_answers, 1)
            busy_jiffies = last.machine[0] - first.machine[0]
            busy = busy_jiffies / max(last.machine[1] - first.machine[1], 1.0)
            # What the machine spent beyond the processes we know: a busy neighbour
            # (another test run) makes the figures of this run doubtful.
            others = max(busy_jiffies / os.sysconf("SC_CLK_TCK") - total, 0.0)
            cpu = {
                "wall_seconds": round(wall, 3),
                "seconds": {k: round(v, 3) for k, v in spent.items()},
                "pct_of_core": {k: round(100 * v / wall, 1) for k, v in spent.items()},
                "share": {k: round(v / total, 3) for k, v in spent.items()},
                "seconds_each": {k: _rounded(v, 3) for k, v in each.items()},
                # CPU per answer: comparable between runs that a busy machine slowed.
                "us_per_answer": {k: round(1e6 * v / answers, 1) for k, v in spent.items()},
                "us_per_answer_each": {
                    k: _rounded({p: 1e6 * s / answers for p, s in v.items()}, 1)
                    for k, v in each.items()
                },
                "machine_busy_pct": round(100 * busy, 1),
                "other_processes_pct_of_core": round(100 * others / wall, 1),
                "nproc": os.cpu_count(),
            }
        return {
            "label": self.plan.label,
            "connections": len(self.conns),
            "window": self.plan.window,
            "inflight_cap": self.plan.inflight or None,
            "sent": self.sent,
            "results": self.results,
            "errors": dict(self.errors),
            "timeouts": timeouts,
            "lost": self.lost_requests,
            "seconds": round(seconds, 3),
            "answered_in_window": self.window_answers,
            "rate": round(self.window_answers / seconds, 1),
            "latency_ms": {
                "samples": len(lat),
                "p50": pct(0.50),
                "p90": pct(0.90),
                "p99": pct(0.99),
                "max": round(lat[-1] / 1e6, 2) if lat else None,
            },
            "cpu": cpu,
            "generator_cpu_seconds_total": round(_self_cpu(), 3),
        }


def _rounded(values: dict[str, float], digits: int) -> dict[str, float]:
    return {k: round(v, digits) for k, v in values.items()}


async def open_connections(
    jids: list[str],
    password: str,
    host: str,
    port: int,
    concurrency: int = 64,
    timeout: float = 60.0,
) -> list[Connection]:
    """Log in one connection per JID (a JID may repeat: each gets its own resource)."""
    sem = asyncio.Semaphore(concurrency)
    conns = [Connection(i, jid, password, f"lg{i}") for i, jid in enumerate(jids)]

    async def one(conn: Connection) -> None:
        async with sem:
            await conn.login(host, port, timeout)

    results = await asyncio.gather(*(one(c) for c in conns), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for c in conns:
            c.close()
        raise LoginError(f"{len(failures)} of {len(conns)} logins failed; first: {failures[0]}")
    return conns


def _lines(path: str | None) -> list[str]:
    if not path:
        return []
    return [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Log in, optionally wait for the target, run the load, close."""
    accounts = _lines(args.accounts) or args.jid
    if not accounts:
        raise SystemExit("give --accounts FILE or --jid JID")
    n = args.connections or len(accounts)
    # More connections than accounts: the accounts are reused with other resources.
    jids = [accounts[i % len(accounts)] for i in range(n)]
    template = TEMPLATES.get(args.template, args.template)
    template = template.replace("{to}", args.to).replace("{tag}", args.tag)
    plan = Plan(
        template=template,
        picks=_lines(args.picks) or args.pick,
        pick_random=args.pick_mode == "random",
        window=args.window,
        count=args.count,
        inflight=args.inflight,
        seconds=args.seconds,
        warmup=args.warmup,
        timeout=args.timeout,
        watch={name: [int(p) for p in pids.split(",")] for name, pids in map(_pair, args.watch)},
        watch_cmdline=dict(map(_pair, args.watch_cmdline)),
        progress=args.progress,
        label=args.label,
    )
    t0 = time.perf_counter()
    conns = await open_connections(
        jids, args.password, args.host, args.port, args.login_concurrency
    )
    login_seconds = time.perf_counter() - t0
    try:
        waited = await probe(conns[0], args.to, args.wait_ready) if args.wait_ready else 0.0
        report = await Runner(conns, plan).run()
    finally:
        for c in conns:
            c.close()
        await asyncio.sleep(0.05)  # let the stream closes go out
    report["login_seconds"] = round(login_seconds, 3)
    report["ready_wait_seconds"] = round(waited, 3)
    return report


def _pair(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5222, help="c2s port")
    p.add_argument("--to", required=True, help="the JID the requests go to")
    p.add_argument("--accounts", help="file: one JID per line (one connection each)")
    p.add_argument("--jid", action="append", default=[], help="an account (repeatable)")
    p.add_argument("--password", default="bench")
    p.add_argument(
        "--connections", type=int, default=0, help="default: one per account; more reuse them"
    )
    p.add_argument("--window", type=int, default=64, help="requests in flight per connection")
    p.add_argument("--inflight", type=int, default=0, help="cap over all connections (0: none)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load not measured")
    p.add_argument(
        "--count", type=int, default=0, help="requests per connection (instead of --seconds)"
    )
    p.add_argument(
        "--template",
        default="payment",
        help=f"{', '.join(TEMPLATES)} or raw XML with {{id}} {{seq}} {{pick}} {{to}} {{tag}}",
    )
    p.add_argument("--picks", help="file: values for {pick}, one per line")
    p.add_argument("--pick", action="append", default=[], help="a value for {pick}")
    p.add_argument("--pick-mode", choices=("round-robin", "random"), default="round-robin")
    p.add_argument("--tag", default=f"lg{os.getpid()}", help="makes payment ids unique per run")
    p.add_argument("--timeout", type=float, default=30.0, help="wait this long for stragglers")
    p.add_argument("--wait-ready", type=float, default=0.0, help="ping --to first (seconds)")
    p.add_argument("--login-concurrency", type=int, default=64)
    p.add_argument(
        "--watch",
        action="append",
        default=[],
        help="NAME=PID[,PID...]: report their CPU, summed (repeatable)",
    )
    p.add_argument(
        "--watch-cmdline",
        action="append",
        default=[],
        help="NAME=TEXT: report the CPU of every process whose command line contains TEXT",
    )
    p.add_argument("--progress", action="store_true", help="a progress line per second")
    p.add_argument("--label", default="load")
    return p


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(build_parser().parse_args()))))
