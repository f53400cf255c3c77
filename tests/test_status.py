"""``imserver status`` as a health check, against a real ``imserver run``: exit 0 when all
is well; non-zero, saying what is wrong and what to do, when the database is unreachable,
the XMPP server is gone or the component is stopped."""

from __future__ import annotations

import asyncio
from pathlib import Path

from imserver.devserver.prosody import free_port
from tests.support.running import PAYER, Running, http_on, running_component


async def status_until(run: Running, text: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run ``imserver status`` until its output holds ``text``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rc, out = await run.cli("status")
        if text in out or loop.time() > deadline:
            return rc, out
        await asyncio.sleep(0.5)


async def test_status_is_a_health_check(tmp_path: Path) -> None:
    env, base = http_on()
    async with running_component(tmp_path, env) as run:
        shop, _payer = await run.shop_and_payer()
        await shop.dist.pay(run.jid, "o-1", PAYER, 10000, "CNY", timeout=10)

        rc, out = await run.cli("status")
        assert rc == 0, out
        lines = dict(line.split(None, 1) for line in out.splitlines())
        pid = run.component.process.pid  # type: ignore[union-attr]
        assert lines["component"].startswith(f"{run.jid} running, pid {pid}")
        assert lines["link"].startswith(f"up to 127.0.0.1:{run.prosody.component_port} since")
        assert lines["database"].startswith("ok: sqlite+aiosqlite:///")
        assert lines["remote"] == (
            "0 notifications wait for an unreachable remote server; 0 given up"
        )
        assert lines["settlement"] == "last payment settled never; none overdue"
        assert lines["members"] == "2 active (1 merchants, 1 users); 0 ended"
        assert lines["payments"] == "CNY 1 payments, 10000 paid, 0 refunded"
        assert lines["status:"] == "OK"

        # The database unreachable (a PostgreSQL port where nothing listens).
        nowhere = f"postgresql+asyncpg://imserver:pw-never-shown@127.0.0.1:{free_port()}/imserver"
        rc, out = await run.cli("status", env={"IMSERVER_DATABASE__URL": nowhere})
        assert rc == 1, out
        assert "database   PROBLEM: unreachable: postgresql+asyncpg://imserver:***@127.0.0.1" in out
        assert "check that the database server runs and that [database] url points at it" in out
        assert "pw-never-shown" not in out
        assert out.rstrip().endswith("status: 1 PROBLEM(S): database")

        # The XMPP server gone: the component runs, its link is down.
        await run.prosody.astop()
        rc, out = await status_until(run, "link       PROBLEM: down since")
        assert rc == 1, out
        assert "check that it runs and that [xmpp] component and secret match" in out
        await run.prosody.astart()

        # The component stopped: nothing answers; the database is still read.
        await run.stop()
        rc, out = await run.cli("status")
        assert rc == 1, out
        assert f"component  PROBLEM: not running: nothing answers at {base}" in out
        assert "start it (systemctl start imserver, or imserver run)" in out
        assert "database   ok:" in out
        assert out.rstrip().endswith("status: 1 PROBLEM(S): component")
