"""Prosody ``internal_hashed`` accounts written as files: many accounts in a moment.

``prosodyctl register`` starts a Lua interpreter per account (about a third of a second);
the benchmark and the demo create hundreds of accounts, so they write the files Prosody
reads on each login instead. Prosody reads them whether or not it is running.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable
from pathlib import Path

# Prosody's default internal_hashed iteration count is 10,000; 4,096 is RFC 5802's
# minimum (below it Prosody logs a warning on every login).
ITERATIONS = 4096


def escape_node(user: str) -> str:
    """A local part or host as Prosody's datamanager names its files (%xx for the rest)."""
    return "".join(
        chr(b) if chr(b).isascii() and chr(b).isalnum() else f"%{b:02x}"
        for b in user.encode("utf-8")
    )


def write_accounts(
    data_path: Path, host: str, users: Iterable[str], password: str, iterations: int = ITERATIONS
) -> int:
    """Create Prosody ``internal_hashed`` accounts by writing their files directly.

    ``data_path`` is Prosody's ``data_path``; ``users`` are local parts. Every account
    gets the same salt, so that a client logging in many of them hashes the password
    once (a benchmark's or a demo's accounts, never real ones). Returns the number written.
    """
    salt = str(uuid.uuid4())
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), iterations)
    client_key = hmac.new(salted, b"Client Key", "sha1").digest()
    stored_key = hashlib.sha1(client_key).hexdigest()
    server_key = hmac.new(salted, b"Server Key", "sha1").hexdigest()
    text = (
        "return {\n"
        f'\t["iteration_count"] = {iterations};\n'
        f'\t["salt"] = "{salt}";\n'
        f'\t["stored_key"] = "{stored_key}";\n'
        f'\t["server_key"] = "{server_key}";\n'
        "};\n"
    )
    folder = data_path / escape_node(host) / "accounts"
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for user in users:
        (folder / f"{escape_node(user)}.dat").write_text(text)
        n += 1
    return n


def account_exists(data_path: Path, jid: str) -> bool:
    """Whether ``user@host`` has an account file under Prosody's ``data_path``."""
    user, _, host = jid.partition("@")
    return (data_path / escape_node(host) / "accounts" / f"{escape_node(user)}.dat").exists()
