"""The migrations build exactly the schema of ``store/models.py``, on both backends, and
every migration can be undone and done again.

The code reads and writes through the models; a column or index that a migration
forgot (or that only a model has) would fail at run time on a deployed database that
the tests' fresh ones do not show. Alembic's own comparison reads the migrated schema
back and lists what differs from the models.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from imserver.store.migrate import alembic_config, heads, upgrade
from imserver.store.models import Base
from tests.conftest import BACKENDS, empty_database


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with empty_database(request.param, tmp_path) as new:
        yield new


async def _differences(url: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
    finally:
        await engine.dispose()


async def test_migrations_build_the_models_schema_and_undo_cleanly(url: str) -> None:
    assert await asyncio.to_thread(upgrade, url) == ",".join(heads())
    assert await _differences(url) == []
    cfg = alembic_config(url)
    await asyncio.to_thread(command.downgrade, cfg, "base")
    await asyncio.to_thread(command.upgrade, cfg, "heads")
    assert await _differences(url) == []
