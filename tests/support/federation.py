"""Two private Prosody servers with a server-to-server link between them, on loopback.

Their domains are IP literals, so no DNS and no /etc/hosts entry is involved: Prosody
0.12 connects to a peer whose domain is an IP address at that address, port 5269 (with
no SRV lookup), so each server listens for s2s on its own loopback address. Server A
also serves the component, whose name is an IP literal too (a remote server must reach
it: it is a host of A, on A's second address). Dialback without TLS, loopback only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from imserver.devserver.prosody import ProsodyInstance, free_port
from tests.support.clients import PASSWORD, Client

A_DOMAIN = "127.0.0.2"  # the home server: the component's
B_DOMAIN = "127.0.0.3"  # the remote server: its users are remote members
COMPONENT = "127.0.0.4"  # the component, a host of A
SECRET = "federation-secret"


@dataclass
class Federation:
    """Server A (with the component) and server B, linked by s2s."""

    a: ProsodyInstance
    b: ProsodyInstance

    def server_of(self, jid: str) -> ProsodyInstance:
        """The server that holds the account ``jid``."""
        domain = jid.partition("@")[2]
        return {A_DOMAIN: self.a, B_DOMAIN: self.b}[domain]

    async def client(self, jid: str) -> Client:
        """A logged-in client of ``jid`` on its own server (account created if new)."""
        server = self.server_of(jid)
        server.add_account(jid, PASSWORD)
        return await Client(jid).open(server.client_port, 30)


def federation_servers(root: pytest.TempPathFactory) -> Federation:
    """The two servers, configured and not started."""
    a = ProsodyInstance(
        root.mktemp("prosody-a"),
        domain=A_DOMAIN,
        client_port=free_port(),
        component_port=free_port(),
        components={COMPONENT: SECRET},
        s2s_interfaces=(A_DOMAIN, COMPONENT),
        log_level="debug",
    )
    b = ProsodyInstance(
        root.mktemp("prosody-b"),
        domain=B_DOMAIN,
        client_port=free_port(),
        component_port=free_port(),
        s2s_interfaces=(B_DOMAIN,),
        log_level="debug",
    )
    return Federation(a, b)


@pytest.fixture(scope="module", name="federation")
def federation_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """Servers A and B running, for one test module."""
    fed = federation_servers(tmp_path_factory)
    fed.a.start()
    try:
        fed.b.start()
        yield fed
    finally:
        fed.b.stop()
        fed.a.stop()
