#!/usr/bin/env python3
"""End-to-end benchmark against the ceiling; prints one JSON object.

    python bench/bench_e2e.py [--part ceiling|payments|registrations|all]
        [--db sqlite|postgresql] [--population single|realistic] [--members N]
        [--bulk | --no-bulk] [--connections 4] [--window 64] [--latency-window 16]
        [--seconds 10] [--reg-accounts 2000] [--server prosody|ejabberd] [--processes N]

One private XMPP server (Prosody by default, or ejabberd with ``--server ejabberd``;
free loopback ports, a temporary data dir) declares two components:
``bare.localhost``, a bare slixmpp component that answers every IQ with an empty
result (``bench/bare_component.py``: the ceiling), and ``dist.localhost``, imserver
started exactly as deployed (``.venv/bin/imserver run``, configured by environment
variables). The load comes from ``bench/loadgen.py``, a raw-socket client in its own
process. Each part runs in order, on the same server, with the same generator,
connections and window.

With ejabberd, ``--processes N`` connects N ``imserver run`` processes under the one
component name, on the one database (ejabberd spreads the stanzas among them at
random), and the ceiling runs are made by N bare components the same way. The answers
all come back over the generator's own client connections, whichever process wrote
them, so the generator counts them as with one process. CPU figures of the components
are summed over the processes, and also given per process.

- ceiling: payment IQs to the bare component (connections x window in flight);
  then again with each result carrying a ``<distribution/>`` as large as imserver's
  (``ceiling_payment``: the XMPP server's cost of the protocol's own bytes, with no
  work behind them; every run's ratio to both ceilings is reported);
- payments: the same IQs to imserver, as merchant bots (connections x window), then
  again with ``--latency-window`` in flight per connection (the latency figure);
  afterwards the payments table must hold every answered payment and
  ``imserver ledger check`` must pass;
- registrations: ``--reg-accounts`` accounts, each logged in on its own connection,
  each sending one ``<register/>`` (connections x window in flight over all of them).

The database (a SQLite file, or a fresh PostgreSQL database dropped at the end) is
migrated, loaded with the region data and seeded through the service layer in this
process before the component starts: ``single`` is one merchant in 440305 with its
district, city and province agents and a chain of three users (the payer has two
referral levels: five earners per payment); ``realistic`` is ``--members`` members
under 20 merchants in 20 districts with agents at every level, payers drawn at random.
With ``--bulk`` (the default above ``BULK_ABOVE`` members) the realistic population's
users are written straight into the tables by ``bench/bulkload.py`` (rows identical to
what registration writes; about 200 registrations/s through the service layer would take
hours at a million), the rest of the network still through the service layer.

The generator reports the CPU of itself, the server and the component(s) over each
measured window, in % of a core and in microseconds per answer (so a reader can see
which one was the bottleneck, and judge a run on a busy machine by its CPU per answer
rather than its rate); the machine's load average is recorded before and after each
run; the components' resident memory is read at the end. Progress goes to stderr with a table at the
end; the JSON also goes to ``bench/results/e2e-<db>-<population>[-ejabberd-<N>p]-<UTC
time>.json``.
Everything started here is stopped at the end, on errors and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]  # run from a checkout; loadgen.py sits next to us

import asyncpg  # noqa: E402
import bulkload  # noqa: E402
from loadgen import LoginError, machine_cpu, open_connections, probe  # noqa: E402

from imserver.config import Config, load_config  # noqa: E402
from imserver.devserver.accounts import write_accounts  # noqa: E402
from imserver.devserver.ejabberd import EjabberdInstance, erl_libs  # noqa: E402
from imserver.devserver.prosody import PROSODYCTL, ProsodyInstance, free_port  # noqa: E402
from imserver.devserver.server import PrivateServer  # noqa: E402

DOMAIN = "localhost"
COMPONENT = "dist.localhost"
BARE = "bare.localhost"
SECRET = "bench-e2e-secret"
PASSWORD = "bench"
ADMIN = f"admin@{DOMAIN}"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
LIFTED = "1000000000"  # rate-limit figures high enough never to refuse a request
RESULTS = BENCH / "results"
# Above this many members the realistic population is bulk-loaded unless --no-bulk.
BULK_ABOVE = 20_000
# The log lines that say a component's handshake is done (imserver's, the bare one's).
COMPONENT_CONNECTED = " connected to "
BARE_CONNECTED = "bare component "


def say(text: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- processes -------------------------------------------------------------------


@dataclass
class Processes:
    """Everything this run started; ``stop_all`` ends them (process groups)."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        """Start a child in its own session, so Ctrl-C reaches only us and we stop it."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(argv, start_new_session=True, **kw)
        self.started.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """SIGTERM its group, then SIGKILL if it lingers."""
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def stop_all(self) -> None:
        """Stop every child still running, newest first."""
        for proc in reversed(self.started):
            self.stop(proc)


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (VmRSS), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def proc_cpu(pid: int) -> float | None:
    """utime + stime of a process in seconds (all threads); None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_version(server: PrivateServer) -> str:
    """The server's version: Prosody's from ``prosodyctl about`` (``prosody --version``
    starts a server), ejabberd's from its application file (``{vsn,"23.01-1"}``)."""
    if isinstance(server, EjabberdInstance):
        found = sorted(Path(erl_libs()).glob("ejabberd-*/ebin/ejabberd.app"))
        text = found[-1].read_text(errors="replace") if found else ""
        vsn = text.split("vsn,", 1)[1].split('"')[1] if "vsn," in text else "unknown"
        return f"ejabberd {vsn}"
    try:
        out = subprocess.run(
            [PROSODYCTL, "--config", str(server.config_path), "about"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    for line in out.splitlines():
        if line.startswith("Prosody "):
            return line.removeprefix("Prosody ").strip()
    return "unknown"


# -- database --------------------------------------------------------------------


@dataclass
class Db:
    """The benchmark's database: its URL, and for PostgreSQL the name to drop."""

    kind: str
    url: str
    pg_name: str | None = None
    sqlite_path: Path | None = None

    @classmethod
    def create(cls, kind: str, tmp: Path, admin_dsn: str) -> Db:
        """A fresh, empty database."""
        if kind == "sqlite":
            path = tmp / "imserver.sqlite3"
            return cls(kind, f"sqlite+aiosqlite:///{path}", sqlite_path=path)
        name = f"bench_{os.getpid()}"

        async def create() -> None:
            conn = await asyncpg.connect(admin_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        host = admin_dsn.split("://", 1)[1].rsplit("/", 1)[0]
        return cls(kind, f"postgresql+asyncpg://{host}/{name}", pg_name=name)

    def drop(self, admin_dsn: str) -> None:
        """Drop a PostgreSQL database made by ``create`` (SQLite: the temp dir goes)."""
        if self.pg_name is None:
            return

        async def drop() -> None:
            conn = await asyncpg.connect(admin_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(drop())

    def count(self, table: str) -> int:
        """Rows of a table, read straight from the database (not through imserver)."""
        if self.sqlite_path is not None:
            with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=30)) as conn:
                return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

        async def count() -> int:
            conn = await asyncpg.connect(self.url.replace("postgresql+asyncpg", "postgresql"))
            try:
                return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            finally:
                await conn.close()

        return asyncio.run(count())


def component_env(server: PrivateServer, url: str) -> dict[str, str]:
    """The environment of ``imserver run`` for this benchmark (see imserver/config.py)."""
    return {
        "IMSERVER_ADMINS": json.dumps([ADMIN]),
        "IMSERVER_XMPP__COMPONENT": COMPONENT,
        "IMSERVER_XMPP__DOMAIN": DOMAIN,
        "IMSERVER_XMPP__MEMBER_DOMAINS": json.dumps([DOMAIN]),
        "IMSERVER_XMPP__HOST": "127.0.0.1",
        "IMSERVER_XMPP__SECRET": SECRET,
        "IMSERVER_XMPP__COMPONENT_PORT": str(server.component_port),
        "IMSERVER_XMPP__CLIENT_PORT": str(server.client_port),
        "IMSERVER_DATABASE__URL": url,
        # The benchmark measures the request path, not the rate limiter.
        "IMSERVER_LIMITS__RATE": LIFTED,
        "IMSERVER_LIMITS__BURST": LIFTED,
        "IMSERVER_LIMITS__PRIVILEGED_RATE": LIFTED,
        "IMSERVER_LIMITS__PRIVILEGED_BURST": LIFTED,
    }


def clean_environ(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without stray IMSERVER_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSERVER_")}
    # The children run the code of this checkout, whichever one the venv was built on.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def code_version() -> dict[str, Any]:
    """The commit measured and whether the product's code differs from it."""

    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *argv], capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:
            return ""

    changed = git("status", "--porcelain", "--", "imserver", "plugins", "migrations")
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "uncommitted": bool(changed)}


def make_server(kind: str, data_dir: Path) -> PrivateServer:
    """The run's private XMPP server on free loopback ports, declaring both components
    (ejabberd accepts several connections for each; Prosody one)."""
    kinds: dict[str, type[ProsodyInstance | EjabberdInstance]] = {
        "prosody": ProsodyInstance,
        "ejabberd": EjabberdInstance,
    }
    server = kinds[kind](
        data_dir,
        domain=DOMAIN,
        client_port=free_port(),
        component_port=free_port(),
        components={COMPONENT: SECRET, BARE: SECRET},
    )
    if isinstance(server, EjabberdInstance):
        server.http_port = free_port()  # its account API; the default 5280 may be taken
    return server


def start_server(server: PrivateServer, users: Sequence[str]) -> int:
    """Start the server with an account (password ``PASSWORD``) for each of ``users``
    (local parts): Prosody's written as files before it starts, ejabberd's created
    through its loopback API once it runs. Returns how many."""
    if isinstance(server, EjabberdInstance):
        server.start(timeout=60.0)  # an Erlang VM boots in a few seconds on a busy machine
        for user in users:
            server.add_account(f"{user}@{DOMAIN}", PASSWORD)
        return len(users)
    written = write_accounts(server.data_dir / "data", DOMAIN, users, PASSWORD)
    server.start()
    return written


# -- the population ----------------------------------------------------------------


@dataclass
class Population:
    """Who sends what: bot accounts (one per connection), payers and referrers."""

    bots: list[str]
    payers: list[str]
    referrers: list[str]
    merchants: list[str]
    members: int
    # How the users were written, when bulk-loaded (bulkload.LoadReport.as_dict).
    load: dict[str, Any] = field(default_factory=dict)


def _district_lines(count: int) -> list[list[str]]:
    """``count`` live districts spread over the country, 440305 first, each with its
    line of region codes up to the province."""
    from imserver.geo.regions import load_regions_csv

    regions = {r.code: r for r in load_regions_csv()}
    districts = sorted(c for c, r in regions.items() if r.level == 3 and not r.retired)
    step = max(len(districts) // count, 1)
    chosen = ["440305", *[d for d in districts[::step] if d != "440305"]][:count]
    lines = []
    for code in chosen:
        line: list[str] = []
        region = regions.get(code)
        while region is not None:
            line.append(region.code)
            region = regions.get(region.parent) if region.parent else None
        lines.append(line)
    return lines


async def seed(
    config: Config,
    population: str,
    members: int,
    connections: int,
    concurrency: int = 32,
    *,
    bulk: bool = False,
) -> Population:
    """Migrated database -> regions, policy and the network, through the service layer;
    with ``bulk``, the realistic population's users by ``bulkload`` instead (the same
    referrer draws, so the same trees)."""
    from imserver.geo.regions import load_regions_csv
    from imserver.service.context import Context
    from imserver.service.membership import Location
    from imserver.service.policies import seed_policy
    from imserver.service.regions import load_regions
    from imserver.service.registry import Services
    from imserver.store.db import Database

    db = Database(config.database.url)
    try:
        ctx = Context(db, config)
        services = Services.build(ctx)
        await load_regions(ctx, load_regions_csv())
        await seed_policy(ctx)
        membership = services.membership
        rng = random.Random(9)
        n_merchants = 1 if population == "single" else 20
        merchants: list[str] = []
        agents: set[str] = set()
        for i, line in enumerate(_district_lines(n_merchants)):
            for code in line:
                agent = f"agent-{code}@{DOMAIN}"
                if agent not in agents:
                    await membership.assign_agent(ADMIN, agent, code)
                    agents.add(agent)
            merchant = f"shop{i}@{DOMAIN}"
            await membership.add_merchant(
                ADMIN, merchant, f"Shop {i}", None, Location(region=line[0])
            )
            merchants.append(merchant)
        # One bot per connection, the connections spread over the merchants.
        bots = [f"bot{i}@{DOMAIN}" for i in range(connections)]
        for i, bot in enumerate(bots):
            await services.bots.change(ADMIN, bot, merchants[i % len(merchants)], "link")
        if population == "single":
            # alice <- merchant, bob <- alice, carol <- bob: carol's payments pay
            # two referral levels and three agents.
            chain = [f"{n}@{DOMAIN}" for n in ("alice", "bob", "carol")]
            referrer = merchants[0]
            for user in chain:
                await membership.register(user, referrer)
                referrer = user
            return Population(bots, [chain[-1]], [chain[-1]], merchants, 3)
        # Realistic: users join in waves under anyone already in (merchants or users),
        # which makes random trees; ``concurrency`` registrations at a time.
        users: list[str] = []
        total = max(members - len(merchants) - len(agents), 0)
        if bulk:
            # The loader writes with its own connection: nothing of ours may hold the
            # SQLite file open (it changes the journal mode for the load).
            await db.dispose()
            say(f"  bulk-loading {total} users (bench/bulkload.py)")
            users, load = await bulkload.load_users(
                config.database.url, merchants, total, rng=rng, wave=concurrency, domain=DOMAIN
            )
            report = load.as_dict()
            say(f"  bulk-loaded {len(users)} users: {report['seconds']} s")
            return Population(bots, users, merchants + users, merchants, len(users), report)
        started = time.monotonic()
        while len(users) < total:
            wave = [
                f"u{len(users) + k}@{DOMAIN}" for k in range(min(concurrency, total - len(users)))
            ]
            pool = merchants + users
            await asyncio.gather(
                *(membership.register(u, pool[rng.randrange(len(pool))]) for u in wave)
            )
            users.extend(wave)
            if len(users) % 2000 < concurrency:
                rate = len(users) / max(time.monotonic() - started, 1e-9)
                say(f"  seeded {len(users)}/{total} users ({rate:.0f}/s)")
        return Population(bots, users, merchants + users, merchants, len(users))
    finally:
        await db.dispose()


# -- the load ----------------------------------------------------------------------


@dataclass
class Bench:
    """One benchmark run: its server, its children, its files."""

    args: argparse.Namespace
    tmp: Path
    procs: Processes
    server: PrivateServer
    # The processes whose CPU the generator reports, by name: the server, the component
    # (one pid per process: their CPU is summed), the generator itself.
    watch: dict[str, list[int]] = field(default_factory=dict)
    # PostgreSQL's backends of our database: its name is in their process title.
    watch_cmdline: dict[str, str] = field(default_factory=dict)

    def write_lines(self, name: str, lines: Sequence[str]) -> Path:
        """A file of one value per line (accounts, picks) for the generator."""
        path = self.tmp / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def settle(self, limit: float = 60.0) -> float:
        """Wait until the components are idle (each under 10% of a core for half a
        second); seconds waited. Work left over from the previous run (notifications
        still being sent) would otherwise be charged to the next one."""
        pids = self.watch.get("component", [])
        start = time.monotonic()
        while pids and time.monotonic() - start < limit:
            before = [proc_cpu(pid) for pid in pids]
            time.sleep(0.5)
            after = [proc_cpu(pid) for pid in pids]
            if all(
                a is None or b is None or b - a < 0.05 for a, b in zip(before, after, strict=True)
            ):
                break
        return round(time.monotonic() - start, 1)

    def machine_idle(self, quiet_seconds: int = 3) -> tuple[float, float]:
        """(busy % of the machine over the last second, seconds waited): with --wait-idle,
        wait up to that long for other work on the machine (a test run) to end, since
        it competes with the processes measured. Ours are idle when this is called.
        Quiet means ``quiet_seconds`` seconds in a row under 20%: a test suite pauses
        for a second here and there (between test files), which one sample took for
        its end."""
        start = time.monotonic()
        quiet = 0
        while True:
            a = machine_cpu()
            time.sleep(1.0)
            b = machine_cpu()
            busy = 100 * (b[0] - a[0]) / max(b[1] - a[1], 1.0)
            quiet = quiet + 1 if busy < 20 else 0
            waited = time.monotonic() - start
            if quiet >= quiet_seconds or waited >= self.args.wait_idle:
                return round(busy, 1), round(waited, 1)

    def loadgen(
        self, label: str, to: str, accounts: Path, picks: Path, *extra: str
    ) -> dict[str, Any]:
        """Run bench/loadgen.py in its own process, once the component is idle; its report."""
        settled = self.settle()
        busy, waited = self.machine_idle()
        loadavg_before = list(os.getloadavg())
        if busy >= 20:
            say(f"{label}: the machine is {busy:.0f}% busy with other work; figures will suffer")
        argv = [
            sys.executable,
            str(BENCH / "loadgen.py"),
            "--port",
            str(self.server.client_port),
            "--to",
            to,
            "--accounts",
            str(accounts),
            "--password",
            PASSWORD,
            "--picks",
            str(picks),
            "--tag",
            f"{label}-{os.getpid()}",
            "--label",
            label,
            "--wait-ready",
            "30",
            *(f"--watch={name}={','.join(map(str, pids))}" for name, pids in self.watch.items()),
            *(f"--watch-cmdline={name}={text}" for name, text in self.watch_cmdline.items()),
            *extra,
        ]
        if not self.args.quiet:
            argv.append("--progress")
        proc = self.procs.popen(argv, stdout=subprocess.PIPE)
        try:
            out, _ = proc.communicate()
        finally:
            self.procs.stop(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen {label} exited with {proc.returncode}")
        report: dict[str, Any] = json.loads(out)
        report["settle_seconds_before"] = settled
        report["machine_busy_pct_before"] = busy
        report["waited_for_idle_seconds"] = waited
        # The machine is shared: its load says how far the figures can be trusted.
        report["loadavg_before"] = loadavg_before
        report["loadavg_after"] = list(os.getloadavg())
        return report

    def pipelined(
        self, label: str, to: str, bots: Path, picks: Path, window: int, pick_mode: str
    ) -> dict[str, Any]:
        """connections x window payment IQs in flight for --seconds after --warmup."""
        a = self.args
        say(
            f"{label}: {a.connections} connections x {window} in flight, "
            f"{a.warmup:g} s warm-up + {a.seconds:g} s"
        )
        return self.loadgen(
            label, to, bots, picks,
            f"--connections={a.connections}", f"--window={window}",
            f"--seconds={a.seconds}", f"--warmup={a.warmup}",
            "--template=payment", f"--pick-mode={pick_mode}",
        )  # fmt: skip


def start_components(bench: Bench, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """``--processes`` x ``imserver run`` as deployed, one log each; returns once every
    one has connected and the component answers."""
    exe = Path(sys.executable).parent / "imserver"
    if not exe.exists():
        exe = ROOT / ".venv" / "bin" / "imserver"
    started = []
    for i in range(bench.args.processes):
        log_path = bench.tmp / f"component-{i}.log"
        started.append(start_logged(
            bench, [str(exe), "--config", str(ROOT / "config.toml"), "run"], log_path,
            cwd=bench.tmp, env=clean_environ(env),
        ))  # fmt: skip
    wait_ready(bench, started, "imserver", COMPONENT, COMPONENT_CONNECTED, timeout=60)
    return [proc for proc, _, _ in started]


def start_bare(bench: Bench, answer: Path | None = None) -> list[subprocess.Popen[bytes]]:
    """The ceiling's bare components, as many as imserver processes; returns once they
    are connected. With ``answer``, every result carries that payload (the
    payment-shaped ceiling)."""
    extra = ["--answer", str(answer)] if answer is not None else []
    argv = [sys.executable, str(BENCH / "bare_component.py"), BARE, SECRET, "127.0.0.1",
            str(bench.server.component_port), *extra]  # fmt: skip
    started = [
        start_logged(bench, argv, bench.tmp / f"bare-{i}.log") for i in range(bench.args.processes)
    ]
    wait_ready(bench, started, "bare component", BARE, BARE_CONNECTED, timeout=30)
    return [proc for proc, _, _ in started]


def start_logged(
    bench: Bench, argv: Sequence[str], log_path: Path, **kw: Any
) -> tuple[subprocess.Popen[bytes], Path, int]:
    """A child writing to ``log_path`` (appended); (the child, its log, where its part
    of the log begins)."""
    with open(log_path, "ab") as log:
        offset = log.tell()
        proc = bench.procs.popen(argv, stdout=log, stderr=subprocess.STDOUT, **kw)
    return proc, log_path, offset


def payment_answer() -> str:
    """A ``<distribution/>`` as large as imserver's answer to a payment of the single
    population (two referrers, three agents, platform, merchant), written by the
    product's own serialiser (the bare component stamps each with the payment's id)."""
    from imserver.service.money_views import DistributionView, ShareView
    from imserver.xmpp.requests.payments import distribution_xml

    shares = [
        ShareView("referrer", 300, f"user-l1@{DOMAIN}", 1),
        ShareView("referrer", 150, f"user-l2@{DOMAIN}", 2),
        ShareView("agent", 100, f"district-agent@{DOMAIN}", scope="district"),
        ShareView("agent", 60, f"city-agent@{DOMAIN}", scope="city"),
        ShareView("agent", 40, f"province-agent@{DOMAIN}", scope="province"),
        ShareView("platform", 200),
        ShareView("merchant", 9150, f"merchant@{DOMAIN}"),
    ]
    view = DistributionView("", f"merchant@{DOMAIN}", 10000, "CNY", 1, shares)
    return distribution_xml(view)


def wait_ready(
    bench: Bench,
    started: Sequence[tuple[subprocess.Popen[bytes], Path, int]],
    what: str,
    jid: str,
    connected: str,
    timeout: float,
) -> None:
    """Wait until every child's log says ``connected`` (its handshake is done: with
    several processes behind ejabberd a ping reaches only one of them), then until
    ``jid`` answers a ping through the server (proof that the stanzas reach a
    component); fail with a log if a child exits or never gets there."""
    port = bench.server.client_port

    async def ping() -> None:
        conns = await open_connections([f"bot0@{DOMAIN}"], PASSWORD, "127.0.0.1", port)
        try:
            await probe(conns[0], jid, 1.0)
        finally:
            conns[0].close()

    def tail(log_path: Path) -> str:
        return log_path.read_text(errors="replace")[-3000:]

    deadline = time.monotonic() + timeout
    waiting = list(started)
    while time.monotonic() < deadline:
        for proc, log_path, _ in started:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log_path)}")
        waiting = [
            (proc, log_path, offset)
            for proc, log_path, offset in waiting
            if connected.encode() not in log_path.read_bytes()[offset:]
        ]
        if not waiting:
            try:
                asyncio.run(ping())
                return
            except (TimeoutError, LoginError, OSError):
                pass
        time.sleep(0.2)
    log_path = (waiting or started)[0][1]
    raise RuntimeError(f"{what} did not connect and answer within {timeout}s:\n{tail(log_path)}")


def ledger_check(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """``imserver ledger check`` against the benchmark's database."""
    exe = Path(sys.executable).parent / "imserver"
    result = subprocess.run(
        [str(exe), "--config", str(ROOT / "config.toml"), "ledger", "check"],
        cwd=cwd,
        env=clean_environ(env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    return {"ok": result.returncode == 0, "exit": result.returncode, "output": lines[-5:]}


def run(args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    """Every part asked for; the report."""
    parts = {"ceiling", "payments", "registrations"} if args.part == "all" else {args.part}
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    report: dict[str, Any] = {
        "benchmark": f"end to end through {args.server}: ceiling, payments, registrations",
        "server": args.server,
        "processes": args.processes,
        "db": args.db,
        "population": args.population,
        "connections": args.connections,
        "window": args.window,
        "latency_window": args.latency_window,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": code_version(),
        "machine": {
            "nproc": os.cpu_count(),
            "loadavg_before": list(os.getloadavg()),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "runs": {},
        "checks": {},
    }
    db: Db | None = None
    server = make_server(args.server, tmp / args.server)
    try:
        # Accounts: one per connection (the merchant bots; the ceiling logs in the same
        # ones) and one per registration.
        bots = [f"bot{i}" for i in range(args.connections)]
        registrants = [f"reg{i:06d}" for i in range(args.reg_accounts)]
        warm_registrants = [f"regwarm{i:04d}" for i in range(args.reg_warmup)]
        want_reg = "registrations" in parts
        say(f"{args.server}: starting on :{server.client_port}")
        written = start_server(server, bots + (registrants + warm_registrants if want_reg else []))
        say(f"{args.server}: {written} accounts")
        assert server.process is not None
        report["machine"][args.server] = server_version(server)
        bench = Bench(args, tmp, procs, server, {args.server: [server.process.pid]})
        bot_file = bench.write_lines("bots.txt", [f"{b}@{DOMAIN}" for b in bots])
        runs: dict[str, Any] = report["runs"]

        if "ceiling" in parts:
            bare = start_bare(bench)
            bench.watch["component"] = [b.pid for b in bare]
            picks = bench.write_lines("ceiling-picks.txt", [f"payer@{DOMAIN}"])
            runs["ceiling"] = bench.pipelined("ceiling", BARE, bot_file, picks, args.window,
                                              "round-robin")  # fmt: skip
            runs["ceiling"].update(rss_fields("component", bare))
            stop_each(procs, bare)
            say(f"ceiling: {runs['ceiling']['rate']:.0f} IQ/s")
            # The same with answers as large as a distribution: what the XMPP server
            # costs for the payment protocol's own bytes, with no work behind them.
            answer = tmp / "payment-answer.xml"
            answer.write_text(payment_answer())
            bare = start_bare(bench, answer)
            bench.watch["component"] = [b.pid for b in bare]
            runs["ceiling_payment"] = bench.pipelined(
                "ceiling_payment", BARE, bot_file, picks, args.window, "round-robin"
            )
            stop_each(procs, bare)
            say(f"payment-shaped ceiling: {runs['ceiling_payment']['rate']:.0f} IQ/s")

        if parts & {"payments", "registrations"}:
            db = Db.create(args.db, tmp, args.pg_admin_dsn)
            env = component_env(server, db.url)
            config = load_config(ROOT / "config.toml", env=env)
            say(f"database: {args.db}, migrating")
            from imserver.store.migrate import upgrade

            upgrade(db.url)
            bulk = args.population == "realistic" and (
                args.bulk if args.bulk is not None else args.members > BULK_ABOVE
            )
            how = "users bulk-loaded" if bulk else "through the service layer"
            say(f"seeding the {args.population} population ({how})")
            t0 = time.monotonic()
            pop = asyncio.run(
                seed(config, args.population, args.members, args.connections, bulk=bulk)
            )
            report["seed"] = {
                "method": "bulk" if bulk else "service",
                "members": db.count("members"),
                "merchants": len(pop.merchants),
                "users": pop.members,
                "seconds": round(time.monotonic() - t0, 1),
            }
            if bulk:
                report["seed"]["bulk"] = pop.load
                say("checking the loaded rows (keys, rule counters)")
                report["checks"]["bulk_load"] = asyncio.run(bulkload.cheap_checks(db.url))
                if not report["checks"]["bulk_load"]["ok"]:
                    raise RuntimeError(f"bulk load is wrong: {report['checks']['bulk_load']}")
            say(f"seeded {report['seed']['members']} members in {report['seed']['seconds']} s")
            if db.pg_name is not None:
                bench.watch_cmdline["database"] = f" {db.pg_name} "
            components = start_components(bench, env)
            bench.watch["component"] = [c.pid for c in components]
            say(f"imserver run: pid {', '.join(str(c.pid) for c in components)}, connected")
            pick_mode = "random" if args.population == "realistic" else "round-robin"

            if "payments" in parts:
                payers = bench.write_lines("payers.txt", pop.payers)
                runs["payments"] = bench.pipelined("payments", COMPONENT, bot_file, payers,
                                                   args.window, pick_mode)  # fmt: skip
                say(f"payments: {runs['payments']['rate']:.1f}/s")
                runs["payments_latency"] = bench.pipelined(
                    "payments_latency", COMPONENT, bot_file, payers, args.latency_window,
                    pick_mode,
                )  # fmt: skip
                say(f"payments_latency: p99 {runs['payments_latency']['latency_ms']['p99']} ms")
                report["checks"]["payments"] = check_payments(
                    db, [runs["payments"], runs["payments_latency"]]
                )
                say("ledger check")
                report["checks"]["ledger"] = ledger_check(env, tmp)

            if want_reg:
                referrers = bench.write_lines("referrers.txt", pop.referrers)
                before = db.count("members")
                inflight = args.connections * args.window
                common = ["--count=1", "--window=1", f"--inflight={inflight}",
                          "--template=register", f"--pick-mode={pick_mode}"]  # fmt: skip
                if warm_registrants:
                    warm = bench.write_lines(
                        "reg-warm.txt", [f"{r}@{DOMAIN}" for r in warm_registrants]
                    )
                    say(f"registrations warm-up: {len(warm_registrants)} accounts")
                    runs["registrations_warmup"] = bench.loadgen(
                        "registrations_warmup", COMPONENT, warm, referrers, *common
                    )
                accounts = bench.write_lines(
                    "registrants.txt", [f"{r}@{DOMAIN}" for r in registrants]
                )
                say(f"registrations: {len(registrants)} accounts, one connection and one "
                    f"<register/> each, {inflight} in flight")  # fmt: skip
                runs["registrations"] = bench.loadgen(
                    "registrations", COMPONENT, accounts, referrers, *common
                )
                say(f"registrations: {runs['registrations']['rate']:.1f}/s")
                if runs["registrations"]["seconds"] < 3:
                    say("registrations took under 3 s: raise --reg-accounts for a steadier figure")
                results = sum(
                    runs[k]["results"]
                    for k in ("registrations", "registrations_warmup")
                    if k in runs
                )
                added = db.count("members") - before
                report["checks"]["registrations"] = {"ok": added == results, "results": results,
                                                     "members_added": added}  # fmt: skip
            report.update(rss_fields("component", components))
            report[f"{args.server}_rss_mb"] = rss_mb(server.process.pid)
            stop_each(procs, components)
    finally:
        procs.stop_all()
        server.stop()
        if db is not None:
            try:
                db.drop(args.pg_admin_dsn)
            except Exception as exc:  # the report matters more than the clean-up
                say(f"could not drop {db.pg_name}: {exc}")
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report["machine"]["loadavg_after"] = list(os.getloadavg())
    for r in report["runs"].values():
        r["busiest_process"] = bottleneck(r)
    report["ratios_to_ceiling"] = ratios(report["runs"])
    report["ratios_to_payment_ceiling"] = ratios(report["runs"], "ceiling_payment")
    return report


def rss_fields(name: str, processes: Sequence[subprocess.Popen[bytes]]) -> dict[str, Any]:
    """``<name>_rss_mb``: the resident memory of the processes, summed (and each one's
    as ``<name>_rss_mb_each`` when there are several)."""
    each = [rss_mb(p.pid) for p in processes]
    fields: dict[str, Any] = {f"{name}_rss_mb": round(sum(m or 0.0 for m in each), 1)}
    if len(each) > 1:
        fields[f"{name}_rss_mb_each"] = each
    return fields


def stop_each(procs: Processes, processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Stop these children (SIGTERM, then SIGKILL)."""
    for proc in processes:
        procs.stop(proc)


def check_payments(db: Db, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every answered payment is stored; unanswered ones may or may not be."""
    results = sum(r["results"] for r in runs)
    unanswered = sum(r["timeouts"] + r["lost"] for r in runs)
    rows = db.count("payments")
    return {
        "ok": results <= rows <= results + unanswered,
        "rows": rows,
        "results": results,
        "unanswered": unanswered,
        "errors": sum(sum(r["errors"].values()) for r in runs),
    }


def bottleneck(run: dict[str, Any]) -> str | None:
    """The process that used the most CPU in a run (the generator must never be it)."""
    pct: dict[str, float] = run.get("cpu", {}).get("pct_of_core", {})
    return max(pct, key=lambda k: pct[k]) if pct else None


def ratios(runs: dict[str, Any], ceiling_run: str = "ceiling") -> dict[str, float]:
    """Each rate over a ceiling's (``ceiling``: empty answers; ``ceiling_payment``:
    answers as large as a distribution)."""
    ceiling = runs.get(ceiling_run, {}).get("rate")
    if not ceiling:
        return {}
    return {
        k: round(v["rate"] / ceiling, 4) for k, v in runs.items() if not k.startswith("ceiling")
    }


def table(report: dict[str, Any]) -> str:
    """The figures as a text table: a line per run, and under it the CPU per answer of
    each process (per component process when there are several) and the load average."""
    server = report.get("server", "prosody")
    names = ("generator", server, "component", "database")
    head = (
        f"{'run':<22}{'rate/s':>10}{'x ceiling':>11}{'x pay-ceil':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}  cpu % of a core: generator / {server} / component [/ postgres] (rest)"
    )
    lines = [head, "-" * len(head)]
    ratio = report.get("ratios_to_ceiling", {})
    pay_ratio = report.get("ratios_to_payment_ceiling", {})
    for name, r in report["runs"].items():
        cpu = r.get("cpu", {}).get("pct_of_core", {})
        other = r.get("cpu", {}).get("other_processes_pct_of_core")
        cpus = " / ".join(f"{cpu[k]:.0f}" for k in names if k in cpu)
        lat = r["latency_ms"]
        x = 1.0 if name == "ceiling" else ratio.get(name)
        if name == "ceiling_payment" and "ceiling" in report["runs"]:
            x = r["rate"] / report["runs"]["ceiling"]["rate"]
        y = 1.0 if name == "ceiling_payment" else pay_ratio.get(name)
        lines.append(
            f"{name:<22}{r['rate']:>10.1f}{'-' if x is None else f'{x:.4f}':>11}"
            f"{'-' if y is None else f'{y:.4f}':>11}"
            f"{lat['p50'] or 0:>9.1f}{lat['p99'] or 0:>9.1f}"
            f"{sum(r['errors'].values()) + r['timeouts']:>8}  {cpus} ({other})"
        )
        lines.append(f"{'':<4}{cpu_per_answer(r, names)}")
    if "seed" in report:
        seed = report["seed"]
        lines.append(f"seeded: {seed['members']} members ({seed['method']}, {seed['seconds']} s)")
    if "component_rss_mb" in report:
        lines.append(f"component RSS at the end: {report['component_rss_mb']} MB")
    for name, check in report.get("checks", {}).items():
        lines.append(f"check {name}: {'OK' if check.get('ok') else 'FAILED'} {check}")
    return "\n".join(lines)


def cpu_per_answer(run: dict[str, Any], names: Sequence[str]) -> str:
    """``us/answer: generator 80 / ejabberd 240 / component 610 (300 + 310); loadavg
    1.2 -> 2.0``: what each process spent per answer in the run's window."""
    cpu = run.get("cpu", {})
    per_answer: dict[str, float] = cpu.get("us_per_answer", {})
    each: dict[str, dict[str, float]] = cpu.get("us_per_answer_each", {})
    parts = []
    for k in names:
        if k in per_answer:
            split = " + ".join(f"{v:.0f}" for v in each.get(k, {}).values())
            parts.append(f"{k} {per_answer[k]:.0f}" + (f" ({split})" if split else ""))
    load = ""
    if "loadavg_before" in run:
        load = f"; loadavg {run['loadavg_before'][0]:.2f} -> {run['loadavg_after'][0]:.2f}"
    return f"us/answer: {' / '.join(parts) or '-'}{load}"


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM as Ctrl-C: unwinds through the finally blocks that stop the children.
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    # SIGINT too: a shell starting us in the background would have it ignored.
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _interrupt),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--part", choices=("ceiling", "payments", "registrations", "all"), default="all")
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--server", choices=("prosody", "ejabberd"), default="prosody")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="component processes (and bare components for the ceiling); ejabberd only",
    )
    p.add_argument("--population", choices=("single", "realistic"), default="single")
    p.add_argument("--members", type=int, default=10_000, help="realistic population size")
    p.add_argument(
        "--bulk",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"bulk-load the realistic users (default: above {BULK_ABOVE:,} members)",
    )
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--window", type=int, default=64, help="in flight per connection")
    p.add_argument("--latency-window", type=int, default=16, help="for the latency run")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each")
    p.add_argument("--reg-accounts", type=int, default=2000, help="registrations measured")
    p.add_argument("--reg-warmup", type=int, default=64, help="registrations before them")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="before each run, wait up to this many seconds for a busy machine to calm down",
    )
    p.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    p.add_argument("--quiet", action="store_true", help="no per-second progress lines")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    p.add_argument("--results-tag", default="", help="added to the results file name")
    return p


def main() -> int:
    """Run, print the table (stderr) and the JSON (stdout), save the JSON."""
    parser = build_parser()
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.processes > 1 and args.server != "ejabberd":
        parser.error("--processes above 1 needs --server ejabberd: Prosody accepts one "
                     "connection per component name")  # fmt: skip
    procs = Processes()
    with _signals():
        try:
            report = run(args, procs)
        except KeyboardInterrupt:
            say("interrupted: everything started was stopped")
            return 130
        finally:
            procs.stop_all()
    print(table(report), file=sys.stderr)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        tag = f"-{args.results_tag}" if args.results_tag else ""
        # Prosody's runs keep their old names; ejabberd's say so, and how many processes.
        where = f"-ejabberd-{args.processes}p" if args.server == "ejabberd" else ""
        path = RESULTS / f"e2e-{args.db}-{args.population}{where}{tag}-{stamp}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        say(f"written {path.relative_to(ROOT)}")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
