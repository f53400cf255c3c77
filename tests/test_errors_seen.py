"""Errors a person sees say what was wrong and what to do: the chat front-end while the
database is out of service, and the CLI facing an unreachable or unmigrated database."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from imserver.devserver.prosody import free_port
from imserver.xmpp.commands.chat import BRIEFLY_UNAVAILABLE
from tests.conftest import OTHER_DOMAIN, Service, _drop_pg_database, _fresh_pg_database
from tests.support.clients import expect_error
from tests.support.commands import say
from tests.support.faults import run_cli
from tests.support.private import private_config, private_prosody, start_service, stop_service
from tests.support.tcpproxy import TcpProxy

COMPONENT = "errors.localhost"


async def test_chat_says_briefly_unavailable_while_the_database_is_out(tmp_path: Path) -> None:
    """A `wait` error (the database unreachable) is not "something went wrong": the person
    is told the service is briefly unavailable and to send the command again."""
    name, url = await _fresh_pg_database()
    real = make_url(url)
    proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432)
    await proxy.mend()
    try:
        through = real.set(port=proxy.port).render_as_string(hide_password=False)
        async with private_prosody(tmp_path / "prosody", COMPONENT) as prosody:
            config = private_config(prosody, COMPONENT, through)
            svc = await start_service(prosody, config, backend="postgresql")
            try:
                person = await svc.client()
                assert "help" in await say(person, svc.jid, "help")
                await proxy.cut()
                answer = await say(person, svc.jid, "help")
                assert answer == BRIEFLY_UNAVAILABLE
                assert "briefly unavailable" in answer and "again" in answer
                await proxy.mend()
                assert "help" in await say(person, svc.jid, "help")
            finally:
                await proxy.mend()  # the component's stop writes nothing, but may read
                await stop_service(svc)
    finally:
        await proxy.cut()
        await _drop_pg_database(name)


def _cli(url: str, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSERVER_")}
    return run_cli({**env, "IMSERVER_DATABASE__URL": url}, *args)


async def test_cli_says_what_to_do_about_the_database(tmp_path: Path) -> None:
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/imserver"
    for args in (("migrate",), ("ledger", "check"), ("ledger", "settle")):
        rc, out = await asyncio.to_thread(_cli, nowhere, *args)
        assert rc == 5, (args, out)
        assert "database unavailable: " in out and "Traceback" not in out, (args, out)
        assert "check that the database server runs and that [database] url" in out

    empty = f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.sqlite3'}"
    rc, out = await asyncio.to_thread(_cli, empty, "ledger", "check")
    assert rc == 5 and "Traceback" not in out, out
    assert "the database has no imserver schema yet" in out and "run imserver migrate" in out


async def test_refusals_say_who_may_and_why(service: Service) -> None:
    user = await service.client()
    refused = await expect_error(user.dist.audit(service.jid), "forbidden")
    assert refused["error"]["text"] == f"{user.bare} may not do that: only admins may"
    far = await service.client(service.new_jid("far", OTHER_DOMAIN))
    refused = await expect_error(far.dist.register(service.jid, "x@localhost"), "forbidden")
    assert refused["error"]["text"] == f"members of {OTHER_DOMAIN} may not join this network"
