"""The README's quick start, run as written, so that the README cannot fall out of date.

From README.md's "Next: talk to it from a chat client": ``make run`` (here with its
install steps taken as done, on free ports and a private data dir), the account commands
of its code block, then the walk-through's chat messages (``as `JID`, `text```) and
``help``, sent by real clients with the password the commands set.
"""

from __future__ import annotations

import asyncio
import random
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from imserver.devserver.server import free_port
from tests.support.clients import Client
from tests.support.commands import say
from tests.test_stop_anytime import Rig

ROOT = Path(__file__).parents[1]
SECTION = "## Next: talk to it from a chat client"


def quick_start() -> tuple[list[list[str]], list[tuple[str, str]], str]:
    """(the account commands, the walk-through's (JID, chat text) in order, the
    component's JID), read from the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(SECTION) : text.index("\n## ", text.index(SECTION) + 1)]
    commands = [
        shlex.split(line.split("#")[0])
        for line in section.splitlines()
        if line.strip().startswith(".venv/bin/imserver ")
    ]
    component = re.search(r"The component answers at `([^`]+)`", section)
    assert component, "the README no longer says where the component answers"
    walk = section[section.index("A first walk through") :]
    steps: list[tuple[str, str]] = []
    who = ""
    for match in re.finditer(r"as\s+`([^`]+)`,|`([^`]+)`", walk):
        if match.group(1):
            who = match.group(1)
        elif who and "@" not in match.group(2).split()[0]:
            steps.append((who, match.group(2).replace("\n", " ")))
    return commands, steps, component.group(1)


def test_the_readme_states_a_runnable_quick_start() -> None:
    commands, steps, component = quick_start()
    assert [c[:3] for c in commands] == [[".venv/bin/imserver", "accounts", "add"]] * 2
    assert [who for who, _ in steps] == ["admin@localhost", "alice@localhost", "alice@localhost"]
    assert component == "dist.localhost"


async def test_the_readme_quick_start_works(tmp_path: Path) -> None:
    commands, steps, component = quick_start()
    rig = Rig(tmp_path, client_port=free_port(), component_port=free_port(), rng=random.Random(1))
    run = rig.launch(via_make=True)  # `make run`
    try:
        await asyncio.to_thread(rig.wait_connected, run)
        passwords = {}
        for argv in commands:
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "imserver.cli", "--config", str(ROOT / "config.toml"),
                 *argv[1:]],
                cwd=ROOT, env=rig.env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            passwords[argv[3]] = argv[4]
        clients = {
            jid: await Client(jid, password).open(rig.client_port, 30)
            for jid, password in passwords.items()
        }
        try:
            admin = clients["admin@localhost"]
            assert (await say(admin, component, "help")).startswith("You can say:")
            answers = [await say(clients[who], component, text) for who, text in steps]
        finally:
            await asyncio.gather(*(c.close() for c in clients.values()))
        merchant, joined, chain = answers
        assert "shop@localhost" in merchant and "Tea House" in merchant, merchant
        assert re.search(r"440305-U\d{8}", joined), joined
        assert "alice@localhost" in chain and "shop@localhost" in chain, chain
    finally:
        # Ctrl-C's way: the signal to the whole group, make included (make itself then
        # dies of it; imserver dev stops in order).
        run.signal(signal.SIGTERM, group=True)
        run.wait()
        assert "stopped on SIGTERM; prosody and the component are down" in run.output()

