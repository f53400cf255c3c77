"""The files of deploy/ are checked by the tools that will read them: Prosody's own config
check on a private main config that includes ours (never the system's), systemd's unit
verifier, and imserver's config loader."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imserver.config import load_config

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
