"""Run Alembic migrations programmatically (``imserver migrate``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from imserver.store.db import PG_CONNECT_TIMEOUT, Unavailable, ensure_sqlite_dir, is_unavailable

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


class MigrationError(RuntimeError):
    """The database is newer than this code, or migrations are missing."""


def alembic_config(url: str) -> AlembicConfig:
    """An Alembic config pointing at the project's migrations and this database."""
    if not (MIGRATIONS / "env.py").exists():
        raise MigrationError(f"migrations not found at {MIGRATIONS}")
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


async def current_revisions(url: str) -> tuple[str, ...]:
    """The database's revisions (empty for an empty database)."""
    # A PostgreSQL host that does not answer fails in seconds, as for Database.
    pg = make_url(url).get_backend_name() == "postgresql"
    engine = create_async_engine(url, connect_args={"timeout": PG_CONNECT_TIMEOUT} if pg else {})
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: tuple(MigrationContext.configure(c).get_current_heads())
            )
    finally:
        await engine.dispose()


def heads() -> tuple[str, ...]:
    """The newest revisions this code knows (a database at these has the schema of models.py)."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return tuple(sorted(script.get_heads()))


def upgrade(url: str) -> str:
    """Bring the database to the newest schema; refuse a database that is newer than the code."""
    ensure_sqlite_dir(url)
    cfg = alembic_config(url)
    script = ScriptDirectory.from_config(cfg)
    known = {rev.revision for rev in script.walk_revisions()}
    try:
        currents = asyncio.run(current_revisions(url))
    except (OSError, DBAPIError) as exc:
        # The first statement: a database that cannot be reached fails here, and says so.
        if is_unavailable(exc, make_url(url).get_backend_name() == "sqlite"):
            raise Unavailable((str(exc).splitlines() or [type(exc).__name__])[0]) from exc
        raise
    for current in currents:
        if current not in known:
            raise MigrationError(f"database revision {current} is newer than this code")
    # "heads": features may add migrations on parallel branches until they are merged.
    command.upgrade(cfg, "heads")
    return ",".join(sorted(script.get_heads()))
