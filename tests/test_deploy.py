"""The files of deploy/ are checked by the tools that will read them: Prosody's own config
check on a private main config that includes ours (never the system's), a private
ejabberd that includes ours and takes a component through it, systemd's unit verifier,
promtool (config, rules and the alerts' unit tests), a running component's /metrics for
the names the rules use, and imserver's config loader."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from imserver.config import load_config
from imserver.devserver.ejabberd import EjabberdError, EjabberdInstance
from imserver.devserver.server import free_port
from imserver.store.migrate import upgrade
from tests.conftest import DOMAIN
from tests.support.clients import PASSWORD, Client
from tests.support.ejabberd import loopback_ejabberd
from tests.support.faults import ComponentProcess, component_env, load_shipped_regions
from tests.support.network import add_merchant
from tests.support.running import http_get, http_on, running_component

DEPLOY = Path(__file__).parents[1] / "deploy"
PROSODY_SNIPPET = DEPLOY / "prosody" / "imserver.cfg.lua"
UNIT = DEPLOY / "systemd" / "imserver.service"
INSTALLED = "/opt/imserver/.venv/bin/imserver"  # where the unit expects the checkout

# A private main config as Debian's would be, with everything in a temporary folder and
# the snippet included at its end, as Debian includes conf.d/*.cfg.lua.
MAIN = """\
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}/certs"
run_as_root = true
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{d}/prosody.log" }} }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "posix" }}
c2s_require_encryption = false
s2s_require_encryption = false
VirtualHost "example.org"
Include "{snippet}"
"""


def prosody_check(tmp: Path, snippet: Path) -> subprocess.CompletedProcess[str]:
    for sub in ("data", "certs"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    config = tmp / "prosody.cfg.lua"
    config.write_text(MAIN.format(d=tmp, snippet=snippet))
    return subprocess.run(
        ["prosodyctl", "--config", str(config), "check", "config"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_prosody_component_config_passes_prosodyctl_check(tmp_path: Path) -> None:
    done = prosody_check(tmp_path / "ok", PROSODY_SNIPPET)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All checks passed" in done.stdout
    # The check is worth something: the same lines in the plain (non-table) Component
    # form leave the listener options under the component, and it says so.
    plain = tmp_path / "plain.cfg.lua"
    text = PROSODY_SNIPPET.read_text()
    plain.write_text(re.sub(r"\{\n(\s+--.*\n)*\s+(component_secret = .*);\n\}", r"\2", text))
    assert plain.read_text() != text
    done = prosody_check(tmp_path / "plain", plain)
    assert done.returncode != 0 and "component_ports" in done.stdout, done.stdout


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (no systemd on this machine)")
    # The unit names the checkout's place; verify it against this checkout's venv.
    unit = tmp_path / "imserver.service"
    here = Path(sys.executable).with_name("imserver")
    assert here.exists()
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(here)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # Unknown or misspelt keys are only warnings: any output at all is a finding.
    assert done.returncode == 0 and not done.stdout + done.stderr, done.stdout + done.stderr
    text = UNIT.read_text()
    for option in ("User=imserver", "ProtectSystem=strict", "NoNewPrivileges=yes",
                   "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service"):  # fmt: skip
        assert option in text


def test_deploy_config_loads_and_matches_the_scrape_target() -> None:
    config = load_config(
        DEPLOY / "config.toml",
        env={
            "IMSERVER_XMPP__SECRET": "a-long-random-secret-from-imserver.env",
            "IMSERVER_DATABASE__URL": "postgresql+asyncpg://imserver:pw@db.internal/imserver",
        },
    )
    assert config.log.format == "json" and config.metrics.address == ("127.0.0.1", 9464)
    scrape = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert f'targets: ["{config.metrics.listen}"]' in scrape
    assert f'Component "{config.xmpp.component}"' in PROSODY_SNIPPET.read_text()
    assert f'"{config.xmpp.component}":' in (DEPLOY / "ejabberd" / "imserver.yml").read_text()
    # ejabberd caps the component's stanzas where imserver caps its own.
    cap = f"max_stanza_size: {config.limits.max_stanza_bytes}\n"
    assert cap in (DEPLOY / "ejabberd" / "imserver.yml").read_text()


# -- ejabberd: the listener file included into a private node, as an operator includes it

EJABBERD_SNIPPET = DEPLOY / "ejabberd" / "imserver.yml"
EJABBERD_NAME = "dist.localhost"
EJABBERD_SECRET = "a-test-secret-instead-of-openssl-rand"
ADMIN, SHOP = f"admin@{DOMAIN}", f"shop@{DOMAIN}"
# What ejabberd logs about a config that has something wrong or out of date.
CONFIG_FINDING = re.compile(r"^\S+ \S+ \[(?:warning|error|critical)\] .*$", re.M)


def replaced(text: str, old: str, new: str) -> str:
    """``text`` with its one occurrence of ``old`` replaced: a file that no longer has it
    exactly once has changed shape, and the test that relies on it must be looked at."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times, not once"
    return text.replace(old, new)


def ejabberd_snippet(port: int) -> str:
    """deploy/ejabberd/imserver.yml with what an operator replaces (and a test must: the
    port, the component name, the password) replaced, and nothing else."""
    text = replaced(EJABBERD_SNIPPET.read_text(), "    port: 5347\n", f"    port: {port}\n")
    text = replaced(text, '"dist.example.org":', f'"{EJABBERD_NAME}":')
    return replaced(
        text, 'password: "CHANGE-ME-openssl-rand-hex-32"', f'password: "{EJABBERD_SECRET}"'
    )


def ejabberd_including(data_dir: Path, snippet: Path) -> EjabberdInstance:
    """A private ejabberd whose main config ends with ``include_config_file: snippet``.
    Its own component listener takes no name: only the included one can accept ours."""
    return loopback_ejabberd(data_dir, extra=f"include_config_file: {json.dumps(str(snippet))}")


def config_findings(log: str) -> list[str]:
    """The warnings and errors in ejabberd's log up to the end of its start (where it
    reports unknown, invalid and renamed options); all of it if it never started."""
    started = re.search(r" is started in the node ", log)
    return CONFIG_FINDING.findall(log[: started.start()] if started else log)


def read_until(sock: socket.socket, pattern: bytes, timeout: float = 10.0) -> str:
    """What ``sock`` receives until it matches ``pattern`` or the peer closes."""
    sock.settimeout(timeout)
    got = b""
    while not re.search(pattern, got):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got.decode(errors="replace")


def raw_component(port: int, secret: str) -> tuple[socket.socket, str]:
    """A XEP-0114 handshake on the listener by hand: the socket, and the answer to the
    handshake (``<handshake/>``, or a stream error)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
        b"xmlns:stream='http://etherx.jabber.org/streams' to='%s'>" % EJABBERD_NAME.encode()
    )
    header = read_until(sock, rb"<stream:stream[^>]*>")
    stream_id = re.search(r"id=['\"]([^'\"]+)", header)
    assert stream_id, header
    digest = hashlib.sha1((stream_id[1] + secret).encode()).hexdigest()
    sock.sendall(f"<handshake>{digest}</handshake>".encode())
    return sock, read_until(sock, rb"<handshake/>|</stream:stream>")


def check_listener_options(port: int) -> None:
    """What the listener's options do, seen from a component's side: the password is
    this name's secret, and a stanza over max_stanza_size (512 KiB; ejabberd's default
    for components is no limit) closes the stream while a smaller one goes through."""
    sock, answer = raw_component(port, "not-the-secret")
    sock.close()
    assert "<not-authorized" in answer, answer
    sock, answer = raw_component(port, EJABBERD_SECRET)
    with sock:
        assert answer.endswith("<handshake/>"), answer
        for size, passes in ((400_000, True), (600_000, False)):
            # A message (bounced: nobody has that name) and a ping behind it.
            sock.sendall(
                f"<message from='{EJABBERD_NAME}' to='nobody@{DOMAIN}'><body>{'x' * size}"
                f"</body></message><iq type='get' id='ping{size}' from='{EJABBERD_NAME}' "
                f"to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>".encode()
            )
            answer = read_until(sock, rb"id='ping%d'|</stream:stream>" % size)
            assert ("</stream:stream>" not in answer) == passes, answer[-300:]
        assert "<policy-violation" in answer and "stanza is too big" in answer, answer[-300:]


async def test_ejabberd_listener_file_takes_the_component(tmp_path: Path) -> None:
    port = free_port()
    snippet = tmp_path / "imserver.yml"
    snippet.write_text(ejabberd_snippet(port))
    ejabberd = ejabberd_including(tmp_path / "ejabberd", snippet)
    # From the main thread, so that the node dies with the test run however it ends.
    ejabberd.start(timeout=30)
    try:
        # `imserver run` as deployed, on the included listener with that name and secret.
        url = f"sqlite+aiosqlite:///{tmp_path / 'imserver.sqlite3'}"
        env = component_env(ejabberd, EJABBERD_NAME, EJABBERD_SECRET, url, ADMIN)
        env["IMSERVER_XMPP__COMPONENT_PORT"] = str(port)
        await asyncio.to_thread(upgrade, url)
        await load_shipped_regions(env, url)
        component = ComponentProcess(env, tmp_path / "imserver.log")
        component.start()
        try:
            await component.wait_connection(0, 30)
            # One request through the listener and back: the admin makes a merchant.
            await asyncio.to_thread(ejabberd.add_accounts, [(ADMIN, PASSWORD)])
            admin = await Client(ADMIN).open(ejabberd.client_port, 30)
            try:
                answer = await add_merchant(admin, EJABBERD_NAME, SHOP)
                assert answer["type"] == "result"
            finally:
                await admin.close()
        finally:
            await asyncio.to_thread(component.stop)
        await asyncio.to_thread(check_listener_options, port)
        # Read last: ejabberd writes its log in the background, after it is ready.
        log = ejabberd.log_path.read_text()
        assert f"TCP connections at 127.0.0.1:{port} for ejabberd_service" in log
        assert " is started in the node " in log
        assert config_findings(log) == [], "\n".join(config_findings(log))
    finally:
        ejabberd.stop()


def test_ejabberd_refuses_and_flags_bad_listener_options(tmp_path: Path) -> None:
    # The log check is worth something: a misspelt option stops ejabberd, and the
    # pre-23.01 name of an option (still accepted) is a finding too.
    text = replaced(ejabberd_snippet(free_port()), "max_fsm_queue:", "max_fsm_queu:")
    snippet = tmp_path / "imserver.yml"
    snippet.write_text(replaced(text, "    shaper: none\n", "    shaper_rule: none\n"))
    ejabberd = ejabberd_including(tmp_path / "ejabberd", snippet)
    with pytest.raises(EjabberdError, match="Unknown option: max_fsm_queu"):
        ejabberd.start(timeout=30)
    findings = "\n".join(config_findings(ejabberd.log_path.read_text()))
    assert "'shaper_rule' of module ejabberd_service is renamed" in findings, findings
    assert "[critical]" in findings and "max_fsm_queu" in findings, findings


# -- Prometheus: promtool on the scrape job and the rules; the rules' metrics exist

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "imserver-rules.yml"
RULES_TEST = Path(__file__).parent / "deploy" / "imserver-rules_test.yml"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS`` (`make test` installs it first: no skip when it is missing)."""
    assert shutil.which("promtool"), "promtool is not installed: make promtool"
    return subprocess.run(
        ["promtool", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_prometheus_files_pass_promtool(tmp_path: Path) -> None:
    alerts = RULES.read_text().count("- alert: ")
    done = promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {alerts} rules found" in done.stdout
    # The scrape file names the rules by a path relative to itself: check them side by
    # side, as they are deployed.
    for f in (PROMETHEUS / "prometheus.yml", RULES):
        shutil.copy(f, tmp_path / f.name)
    done = promtool("check", "config", tmp_path / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout
    assert f"SUCCESS: {alerts} rules found" in done.stdout


def test_alert_rules_fire_when_they_should(tmp_path: Path) -> None:
    done = promtool("test", "rules", RULES_TEST)
    assert done.returncode == 0, done.stdout + done.stderr
    # The unit tests are worth something: without its "link up" condition the outbox
    # alert fires while the link is down, and they say so.
    (tmp_path / RULES.name).write_text(
        replaced(RULES.read_text(), " and imserver_xmpp_link_up == 1", "")
    )
    rules_at = "../../deploy/prometheus/imserver-rules.yml"
    (tmp_path / "test.yml").write_text(replaced(RULES_TEST.read_text(), rules_at, RULES.name))
    done = promtool("test", "rules", tmp_path / "test.yml")
    assert done.returncode != 0, done.stdout
    assert "alertname: ImserverOutboxStuck, time: 14m" in done.stdout + done.stderr


async def test_alert_rules_use_metrics_the_component_serves(tmp_path: Path) -> None:
    exprs = re.findall(r"^\s+expr: (.+)$", RULES.read_text(), re.M)
    assert len(exprs) == RULES.read_text().count("- alert: ")
    # Every selector of an imserver metric: its name and the label names it matches on.
    selectors = re.findall(r"\b(imserver_\w+)(?:\{([^}]*)\})?", " ".join(exprs))
    env, base = http_on()
    async with running_component(tmp_path, env) as run:
        await run.shop_and_payer()  # a request, so that labelled counters have samples
        status, _, body = await asyncio.to_thread(http_get, f"{base}/metrics")
    assert status == 200
    served: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:  # named as exposed: _total, _bucket, ...
            served.setdefault(sample.name, set()).update(sample.labels)
    for name, matchers in selectors:
        assert name in served, f"{name} is not served at /metrics"
        labels = set(re.findall(r"(\w+)\s*(?:=|!=|=~|!~)", matchers))
        assert labels <= served[name], f"{name} has no label {labels - served[name]}"
    # The rules' `up{job=...}` is the scrape job of prometheus.yml.
    job = re.search(r'up\{job="([^"]+)"\}', " ".join(exprs))
    assert job and f"job_name: {job[1]}\n" in (PROMETHEUS / "prometheus.yml").read_text()
