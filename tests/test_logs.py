"""The log an operator reads: one structured line per request, members' JIDs as the config
allows, never a secret. Read from the real output of ``imserver run``."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from imserver import cli
from imserver.config import LogConfig, load_config
from imserver.logs import (
    FORMATTERS,
    NOISY,
    REDACTED,
    STANZA_TRACE,
    configure,
    jid_view,
    reset,
    secrets_of,
)
from tests.support.clients import expect_error
from tests.support.private import SECRET
from tests.support.running import ADMIN, PAYER, SHOP, running_component


async def test_json_log_has_one_line_per_request_and_no_jid_or_secret(tmp_path: Path) -> None:
    async with running_component(tmp_path, {"IMSERVER_LOG__FORMAT": "json"}) as run:
        shop, _payer = await run.shop_and_payer()
        await shop.dist.pay(run.jid, "o-1", PAYER, 10000, "CNY", timeout=10)
        await expect_error(shop.dist.pay(run.jid, "o-2", PAYER, 100, "XXX", timeout=10),
                           "bad-request")  # fmt: skip
        await run.stop()
        text = run.log()

    lines = [json.loads(line) for line in text.splitlines()]  # every line is one object
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
    requests = [line for line in lines if line["logger"] == "imserver.requests"]
    hashed = jid_view(LogConfig(jids="hash"), SECRET)
    got = [(r["op"], r["sender"], r["outcome"]) for r in requests]
    assert got == [
        ("set merchant", hashed(ADMIN), "ok"),
        ("set register", hashed(PAYER), "ok"),
        ("set payment", hashed(SHOP), "ok"),
        ("set payment", hashed(SHOP), "bad-request"),
    ]
    assert all(r["level"] == "info" and r["msg"] == "request" for r in requests)
    assert all(isinstance(r["ms"], float) and 0 < r["ms"] < 10_000 for r in requests)
    for secret_or_jid in (SECRET, ADMIN, SHOP, PAYER):
        assert secret_or_jid not in text
    assert any("connected to" in line["msg"] for line in lines)


def test_secrets_are_redacted_in_every_format() -> None:
    """The component secret and a database password (URL-encoded in the DSN) never reach
    a line, not even through an exception's text."""
    config = load_config(
        None,
        env={
            "IMSERVER_XMPP__SECRET": "s3cret-of-the-component",
            "IMSERVER_DATABASE__URL": "postgresql+asyncpg://imserver:p%40ss-w0rd@db/imserver",
        },
    )
    assert set(secrets_of(config)) == {"s3cret-of-the-component", "p@ss-w0rd", "p%40ss-w0rd"}
    try:
        raise ConnectionError("cannot reach postgresql://imserver:p@ss-w0rd@db/imserver")
    except ConnectionError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "imserver.test", logging.ERROR, __file__, 1,
        "handshake with %s failed", ("s3cret-of-the-component",), exc_info,
    )  # fmt: skip
    record.fields = {"dsn": "postgresql+asyncpg://imserver:p%40ss-w0rd@db/imserver"}
    for name, formatter in FORMATTERS.items():
        line = formatter(secrets_of(config)).format(record)
        assert "s3cret" not in line and "w0rd" not in line, (name, line)
        assert line.count(REDACTED) >= 3, (name, line)  # message, field, exception


@pytest.mark.parametrize(
    ("mode", "expected"), [("full", "bob@example.org"), ("hidden", "-")]
)  # fmt: skip
def test_jid_modes(mode: str, expected: str) -> None:
    view = jid_view(LogConfig(jids=mode), "key")  # type: ignore[arg-type]
    assert view("bob@example.org") == expected
    assert view("") == ""


def test_the_cli_gives_back_the_logging_it_found(tmp_path: Path) -> None:
    """``cli.main`` called in a process that goes on (tests call it beside a running
    component) leaves no handler and no level of its own: its handler wrote to the stderr
    of its call, a test's capture that is closed when that test ends, so every later
    record printed "--- Logging error ---" into some other test's stderr; and the root
    at INFO passed the running component's request lines on."""
    names = ["", *NOISY, STANZA_TRACE, "imserver.batches"]
    levels = {n: logging.getLogger(n or None).level for n in names}
    handlers = list(logging.getLogger().handlers)
    argv = ["--config", str(tmp_path / "none.toml"), "--trace", "imserver.batches"]
    assert cli.main([*argv, "db", "copy", "mysql://u@h/db", "x"]) == 1
    assert logging.getLogger().handlers == handlers
    assert {n: logging.getLogger(n or None).level for n in names} == levels


def test_the_log_goes_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record goes to the stderr of the moment it is written, never to one replaced
    (and closed) since the log was configured."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure(None)
    try:
        logging.getLogger("imserver.test").warning("one")
        assert "one" in first.getvalue()
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("imserver.test").warning("two")
    finally:
        reset()
    assert second.getvalue().endswith("WARNING imserver.test: two\n"), second.getvalue()
