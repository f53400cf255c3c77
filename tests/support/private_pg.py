"""A private PostgreSQL server for the outage tests: ``initdb`` in a temporary folder,
run as the ``postgres`` user on a free loopback port, stopped and started at will.

The shared server (port 5432) is never touched: stopping it would fail every other test
that runs at the same time.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from imserver.devserver.prosody import free_port

PG_USER = "postgres"


def pg_bin(name: str) -> str | None:
    """The newest installed Debian PostgreSQL binary ``name``, or None."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return found[-1] if found else None


def why_not_available() -> str | None:
    """Why a private server cannot run here (None when it can)."""
    if pg_bin("initdb") is None or pg_bin("pg_ctl") is None:
        return "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin"
    if shutil.which("runuser") is None:
        return "runuser is missing"
    if os.geteuid() != 0:
        return "running as the postgres user needs root"
    return None


class PrivatePostgres:
    """One private cluster: ``start``, ``stop(mode)``, ``url``; ``close`` removes it."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: the postgres user must be able to reach it, and
        # /tmp's sticky, world-traversable folder is.
        self.dir = Path(tempfile.mkdtemp(prefix="imserver-pg-"))
        shutil.chown(self.dir, PG_USER, PG_USER)
        self.dir.chmod(0o700)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self._as_postgres(pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", PG_USER)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of database ``postgres`` on this server."""
        return f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *argv: str | None, timeout: float = 60.0) -> str:
        cmd = ["runuser", "-u", PG_USER, "--", *(a for a in argv if a is not None)]
        done = subprocess.run(
            cmd, cwd=self.dir, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        """Start and wait until it accepts connections (``pg_ctl -w``)."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE``: ``fast`` ends sessions and checkpoints, ``immediate``
        kills every process without a checkpoint (recovery on the next start)."""
        self._as_postgres(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        """Whether a postmaster runs on the data folder."""
        ctl = pg_bin("pg_ctl")
        assert ctl is not None
        done = subprocess.run(
            ["runuser", "-u", PG_USER, "--", ctl, "-D", str(self.data), "status"],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def close(self) -> None:
        """Stop it if it runs and remove its folder."""
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
