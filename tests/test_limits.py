"""Rate limits per sender, and the start-time refusal of the default component secret."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from imserver import cli
from imserver.app import App
from imserver.config import DEFAULT_SECRET, ConfigError, LimitsConfig, load_config
from imserver.service.limits import SenderLimiter
from imserver.store.models import Bot, Member
from imserver.xmpp.hardening import UnsafeEnvironment
from tests.support.clients import Client, expect_error
from tests.support.faults import wait_for
from tests.support.network import add_merchant
from tests.support.private import private_config, private_prosody, start_service, stop_service

# -- the limiter alone -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _limiter(
    clock: Clock, bots: set[str] | None = None, **kw: float
) -> tuple[SenderLimiter, list[str]]:
    asked: list[str] = []

    async def is_bot(jid: str) -> bool:
        asked.append(jid)
        return jid in (bots or set())

    limits = LimitsConfig(
        **{"rate": 2.0, "burst": 3, "privileged_rate": 100.0, "privileged_burst": 10, **kw}
    )
    return SenderLimiter(limits, ("boss@x",), is_bot, clock), asked


async def test_bucket_refuses_after_burst_and_refills() -> None:
    clock = Clock()
    limiter, _ = _limiter(clock)
    assert [await limiter.admit("a@x") for _ in range(4)] == [True, True, True, False]
    assert await limiter.admit("b@x")  # another sender has its own bucket
    clock.t += 0.5  # rate 2/s: one token back
    assert await limiter.admit("a@x")
    assert not await limiter.admit("a@x")
    clock.t += 100
    assert [await limiter.admit("a@x") for _ in range(4)] == [True, True, True, False]


async def test_require_says_resource_constraint_wait_with_a_text() -> None:
    limiter, _ = _limiter(Clock())
    for _ in range(3):
        await limiter.require("a@x")
    from imserver.service.errors import ServiceError

    with pytest.raises(ServiceError) as info:
        await limiter.require("a@x")
    assert info.value.condition == "resource-constraint" and info.value.etype == "wait"
    assert "2 a second" in info.value.text and "bursts of 3" in info.value.text


async def test_admins_and_bots_get_the_privileged_limit_and_the_db_is_asked_rarely() -> None:
    clock = Clock()
    limiter, asked = _limiter(clock, bots={"bot@x"})
    assert all([await limiter.admit("boss@x") for _ in range(10)])  # admin: burst 10
    assert not await limiter.admit("boss@x")
    assert "boss@x" not in asked  # admins come from the config, never from the database
    assert all([await limiter.admit("bot@x") for _ in range(10)])
    assert not await limiter.admit("bot@x")
    assert asked == ["bot@x"]  # asked once, when its ordinary bucket ran dry
    # An ordinary flooder costs one query per recheck period, not one per request.
    for _ in range(50):
        await limiter.admit("flood@x")
    assert asked.count("flood@x") == 1
    clock.t += 61
    for _ in range(50):
        await limiter.admit("flood@x")
    assert asked.count("flood@x") == 2


async def test_memory_is_bounded_under_a_flood_of_distinct_senders() -> None:
    limiter, _ = _limiter(Clock(), max_senders=100)
    for i in range(10_000):
        await limiter.admit(f"u{i}@x")
    assert len(limiter) == 100
    # The most recent senders are the ones kept.
    assert not await limiter.admit("u9999@x") or True
    assert "u9999@x" in limiter._buckets and "u0@x" not in limiter._buckets


# -- through Prosody, on a component of our own with small limits ------------------------


async def _chain_answer(client: Client, component: str) -> str:
    """The condition (or 'result') of a chain request."""
    try:
        await client.dist.chain(component)
    except IqError as exc:
        return str(exc.iq["error"]["condition"])
    return "result"


async def test_rate_limit_end_to_end(tmp_path: Path) -> None:
    component = "distlim.localhost"
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    async with private_prosody(tmp_path / "prosody", component) as prosody:
        config = private_config(
            prosody,
            component,
            url,
            {
                "IMSERVER_LIMITS__RATE": "0.5",
                "IMSERVER_LIMITS__BURST": "3",
                "IMSERVER_LIMITS__PRIVILEGED_RATE": "1000",
                "IMSERVER_LIMITS__PRIVILEGED_BURST": "40",
            },
        )
        svc = await start_service(prosody, config)
        try:
            admin = await svc.admin()
            shop = await svc.client(svc.new_jid("shop"))
            await add_merchant(admin, svc.jid, shop.bare)
            user = await svc.client()
            answers = [await _chain_answer(user, svc.jid) for _ in range(5)]
            assert answers == ["registration-required"] * 3 + ["resource-constraint"] * 2
            with pytest.raises(IqError) as refused:
                await user.dist.chain(svc.jid)
            refusal = refused.value.iq["error"]
            assert (refusal["condition"], refusal["type"]) == ("resource-constraint", "wait")
            assert "too many requests" in refusal["text"]
            # A refused request changed nothing; others are not held back by this sender.
            other = await svc.client()
            await other.dist.register(svc.jid, shop.bare)
            # The admin has the privileged limit: 30 requests in a row are all answered.
            results = await asyncio.gather(*(_chain_answer(admin, svc.jid) for _ in range(30)))
            assert "resource-constraint" not in results
            # A merchant's bot (bots table) too, from its first flood on.
            bot = await svc.client(svc.new_jid("bot"))

            async def link_bot(conn: object) -> None:
                from sqlalchemy import insert, select

                merchant_id = (
                    await conn.execute(select(Member.id).where(Member.jid == shop.bare))  # type: ignore[attr-defined]
                ).scalar_one()
                await conn.execute(  # type: ignore[attr-defined]
                    insert(Bot).values(
                        jid=bot.bare, merchant_id=merchant_id, created_at=datetime.now(UTC)
                    )
                )

            await svc.app.db.transaction(link_bot)  # type: ignore[arg-type]
            results = [await _chain_answer(bot, svc.jid) for _ in range(20)]
            assert "resource-constraint" not in results, results
            # Ad-hoc commands take from the same bucket as every other request.
            flooder = await svc.client()
            for _ in range(3):
                await _chain_answer(flooder, svc.jid)
            execute = "<command xmlns='http://jabber.org/protocol/commands' node='help'/>"
            await expect_error(flooder.send_raw_iq(svc.jid, "set", execute), "resource-constraint")
            # Chat messages too: answered up to the burst, then one error, then silence.
            chatty = await svc.client()
            errors: asyncio.Queue[object] = asyncio.Queue()
            chatty.add_event_handler("message_error", errors.put_nowait)
            limiter = svc.app.component.limiter
            refused = limiter.refused
            for _ in range(5):
                chatty.send_message(mto=svc.jid, mbody="help", mtype="chat")
            got = [await asyncio.wait_for(chatty.messages.get(), 10) for _ in range(3)]
            assert [m["type"] for m in got] == ["chat"] * 3
            error: Any = await asyncio.wait_for(errors.get(), 10)
            assert error["error"]["condition"] == "resource-constraint"
            assert error["error"]["type"] == "wait"
            # The 5th is dropped without an answer: a flood is not answered by a flood.
            # Once the limiter has refused the 4th and the 5th, an answer to either is on
            # the component's stream ahead of the answer to a request sent now (Prosody
            # keeps the order): that answer, whatever it is, is the deadline for them.
            assert await wait_for(lambda: limiter.refused >= refused + 2, 10, 0.02)
            await _chain_answer(chatty, svc.jid)
            assert chatty.messages.empty() and errors.empty()
        finally:
            await stop_service(svc)


# -- the component secret -----------------------------------------------------------------


def test_default_secret_refused_off_loopback_and_the_message_names_the_field() -> None:
    env = {"IMSERVER_XMPP__HOST": "xmpp.example.org"}
    with pytest.raises(ConfigError, match=r"xmpp\.secret") as info:
        load_config(None, env=env)
    assert "IMSERVER_XMPP__SECRET" in str(info.value)
    # On loopback the default is accepted (make run), and off loopback a real one is.
    assert load_config(None, env={}).xmpp.secret == DEFAULT_SECRET
    assert load_config(None, env={**env, "IMSERVER_XMPP__SECRET": "s3cret"}).xmpp.host == (
        "xmpp.example.org"
    )
    for host in ("127.0.0.2", "::1", "localhost"):
        load_config(None, env={"IMSERVER_XMPP__HOST": host})


def test_start_refuses_the_default_secret_even_if_validation_was_bypassed() -> None:
    config = load_config(None, env={"IMSERVER_DATABASE__URL": "sqlite+aiosqlite:///:memory:"})
    remote = config.model_copy(update={"xmpp": config.xmpp.model_copy(update={"host": "10.1.2.3"})})
    with pytest.raises(UnsafeEnvironment, match=r"xmpp\.secret"):
        App(remote)


def test_cli_refuses_to_start_with_the_default_secret_off_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("IMSERVER_XMPP__HOST", "xmpp.example.org")
    monkeypatch.delenv("IMSERVER_XMPP__SECRET", raising=False)
    assert cli.main(["--config", str(tmp_path / "none.toml"), "run"]) == 2
    assert "xmpp.secret" in capsys.readouterr().err


def test_test_suite_variables_are_not_config() -> None:
    # IMSERVER_TEST_BACKENDS / IMSERVER_TEST_PG configure the tests, not the service: a CLI
    # run inside the test process must not fail on them as unknown fields.
    env = {"IMSERVER_TEST_BACKENDS": "sqlite", "IMSERVER_TEST_PG": "postgresql://x@y/z"}
    assert load_config(None, env=env).limits.rate > 0
    with pytest.raises(ConfigError, match="tset_backends"):
        load_config(None, env={"IMSERVER_TSET_BACKENDS": "sqlite"})  # typos still fail
