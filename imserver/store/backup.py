"""Online backups: a consistent copy of the database taken while the service writes.

- SQLite: the sqlite3 online-backup API copies every page in one step inside one read
  transaction, so the copy is a snapshot of one committed state; in WAL mode the
  service's writers are not blocked meanwhile. The copy is switched to a plain rollback
  journal (one self-contained file), checked with ``PRAGMA integrity_check``, written to
  ``DEST.part``, flushed to disk and only then renamed to ``DEST``.
- PostgreSQL: ``pg_dump --format=custom`` (a consistent snapshot by itself) into
  ``DEST.part``, renamed to ``DEST`` when it succeeded. ``pg_dump`` must be installed
  (Debian: ``postgresql-client``), of the server's major version or newer.

The restore is documented in README.md ("Backup and restore").
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url


class BackupError(Exception):
    """The backup could not be made; the message says why (nothing is left at DEST)."""


@dataclass(frozen=True)
class BackupResult:
    """What was written."""

    backend: str
    dest: Path
    size: int
    detail: str


def backup(database_url: str, dest: str | Path) -> BackupResult:
    """Write a consistent copy of the configured database to ``dest`` (a new file)."""
    url = make_url(database_url)
    target = Path(dest)
    if target.exists():
        raise BackupError(f"{target} exists already: choose a new file name")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    if url.get_backend_name() == "sqlite":
        return _sqlite_backup(url, target)
    if url.get_backend_name() == "postgresql":
        return _pg_dump(url, target)
    raise BackupError(f"no backup method for {url.get_backend_name()}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(part: Path, target: Path) -> None:
    """Make the finished ``part`` durable, then atomically give it its name."""
    _fsync(part)
    os.replace(part, target)
    _fsync(target.parent)


def _sqlite_backup(url: URL, target: Path) -> BackupResult:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    source = Path(url.database)
    if not source.is_file():
        raise BackupError(f"no SQLite database at {source}")
    part = target.with_name(target.name + ".part")
    part.unlink(missing_ok=True)
    try:
        # A writable connection, as reading a WAL database needs its shared-memory file;
        # it only reads. The busy timeout covers a checkpoint holding the file briefly.
        src = sqlite3.connect(source, timeout=30)
        dst = sqlite3.connect(part)
        try:
            # pages=-1: everything in one step, i.e. one read transaction, one snapshot.
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the copy failed its integrity check: {check}")
            tables = dst.execute("SELECT count(*) FROM sqlite_master WHERE type='table'")
            n_tables = tables.fetchone()[0]
        finally:
            dst.close()
            src.close()
        _publish(part, target)
    except sqlite3.Error as exc:
        part.unlink(missing_ok=True)
        raise BackupError(f"SQLite backup failed: {exc}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return BackupResult("sqlite", target, target.stat().st_size, f"{n_tables} tables, integrity ok")


def _pg_dump(url: URL, target: Path) -> BackupResult:
    exe = shutil.which("pg_dump")
    if exe is None:
        raise BackupError(
            "pg_dump is not installed (Debian: apt-get install postgresql-client); "
            "it is needed to back up a PostgreSQL database"
        )
    # libpq's URL without the password, which goes through the environment instead of
    # the command line (visible to every user in ps).
    libpq = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    part = target.with_name(target.name + ".part")
    part.unlink(missing_ok=True)
    try:
        result = subprocess.run(
            [exe, "--format=custom", "--no-password", f"--file={part}", f"--dbname={libpq}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if result.returncode != 0:
            raise BackupError(f"pg_dump failed: {result.stderr.strip() or result.returncode}")
        _publish(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return BackupResult(
        "postgresql", target, target.stat().st_size, "pg_dump custom format (pg_restore)"
    )
