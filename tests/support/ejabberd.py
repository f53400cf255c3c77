"""Several ``imserver run`` processes behind one ejabberd, on one fresh PostgreSQL database.

Each process logs one line per request it answered (``[log] requests``, on by default:
``imserver.requests: request op=... sender=... outcome=...``), with members' JIDs in full
here (``[log] jids = "full"``), which is how a test tells which process answered what.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from imserver.devserver.ejabberd import EjabberdInstance
from imserver.devserver.server import alive, free_port, listening, parent_of
from imserver.store.migrate import upgrade
from tests.conftest import DOMAIN, _drop_pg_database, _fresh_pg_database
from tests.support.faults import ComponentProcess, component_env, load_shipped_regions

# op and sender as imserver.logs writes a value: bare, or JSON-quoted when it must be.
REQUEST_LINE = re.compile(r'imserver\.requests: request op=("[^"]*"|\S+) sender=("[^"]*"|\S+)')


def _unquoted(value: str) -> str:
    return str(json.loads(value)) if value.startswith('"') else value


def loopback_ejabberd(
    data_dir: Path, components: Mapping[str, str] | None = None, extra: str = ""
) -> EjabberdInstance:
    """A private ejabberd for DOMAIN on free loopback ports (clients, components, account
    API); ``components``: name -> secret, ``extra``: lines added to its main config."""
    return EjabberdInstance(
        data_dir,
        domain=DOMAIN,
        client_port=free_port(),
        component_port=free_port(),
        http_port=free_port(),
        components=dict(components or {}),
        extra=extra,
    )


@dataclass
class Cluster:
    """The component processes sharing one component name and one database."""

    url: str
    env: dict[str, str]
    processes: list[ComponentProcess]

    def answered(self, index: int) -> Counter[tuple[str, str]]:
        """(operation, sender's bare JID) -> requests that process ``index`` answered."""
        text = self.processes[index].log_path.read_text(errors="replace")
        # Whole lines only: a process may be writing the last one.
        text = text[: text.rfind("\n") + 1]
        return Counter(
            (_unquoted(m[1]), _unquoted(m[2]).partition("/")[0])
            for m in REQUEST_LINE.finditer(text)
        )

    def answered_for(self, index: int, senders: set[str]) -> int:
        """How many requests of ``senders`` process ``index`` answered."""
        return sum(n for (_, who), n in self.answered(index).items() if who in senders)

    async def wait_answered(
        self,
        senders: set[str],
        total: int,
        among: tuple[int, ...] | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Wait until the logs of the processes ``among`` (default: all) account for
        ``total`` requests of ``senders``; a process logs a request just after answering."""
        indices = range(len(self.processes)) if among is None else among
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = sum(self.answered_for(i, senders) for i in indices)
            if got >= total or loop.time() > deadline:
                assert got == total, f"the logs account for {got} requests, not {total}"
                return
            await asyncio.sleep(0.05)


@asynccontextmanager
async def component_cluster(
    ejabberd: EjabberdInstance,
    component: str,
    secret: str,
    admin: str,
    tmp: Path,
    processes: int = 2,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    """``processes`` x ``imserver run`` connected to ``ejabberd`` as ``component``, on a
    fresh, migrated PostgreSQL database with the shipped regions; all stopped after.
    ``extra_env``: more ``IMSERVER_*`` settings for every process."""
    pg_name, url = await _fresh_pg_database()
    env = {
        **component_env(ejabberd, component, secret, url, admin),
        "IMSERVER_LOG__JIDS": "full",
        **(extra_env or {}),
    }
    started: list[ComponentProcess] = []
    try:
        await asyncio.to_thread(upgrade, url)
        await load_shipped_regions(env, url)
        for i in range(processes):
            proc = ComponentProcess(env, tmp / f"imserver-{i}.log")
            proc.start()
            started.append(proc)
        for proc in started:
            await proc.wait_connection(0, 60)
        yield Cluster(url, env, started)
    finally:
        for proc in started:
            await asyncio.to_thread(proc.stop)
        await _drop_pg_database(pg_name)


def process_tree(pid: int) -> set[int]:
    """``pid`` and all its descendants that run now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        parent = parent_of(int(entry.name))
        if parent is not None:
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo.extend(children.get(p, ()))
    return tree


def leftovers(instance: EjabberdInstance, pids: set[int]) -> list[str]:
    """What of a stopped ejabberd is still there: live processes among ``pids``, ports
    that still listen (client, component, HTTP API, Erlang distribution)."""
    left = [f"process {p} still runs" for p in sorted(pids) if alive(p)]
    ports = (*instance.ports(), instance.dist_port)
    left += [f"port {p} still listens" for p in ports if listening(p)]
    return left


def new_lasting_epmd(before: set[int], settle: float = 5.0) -> set[int]:
    """The epmd processes started since ``before`` that are still there after ``settle``
    seconds. Other Erlang nodes on the machine start a short-lived ``epmd -daemon`` now
    and then (RabbitMQ's epmd monitor does): it exits at once when one is running."""
    new = epmd_pids() - before
    deadline = time.monotonic() + settle
    while new and time.monotonic() < deadline:
        time.sleep(0.2)
        new = {p for p in new if Path(f"/proc/{p}").exists()}
    return new


def epmd_pids() -> set[int]:
    """The epmd daemons running on this machine (ours must add none)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip() == "epmd":
                found.add(int(stat.parent.name))
        except OSError:
            continue
    return found
