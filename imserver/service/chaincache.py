"""What payments read on every request, kept in memory: the policy in force, the merchant
each sender reports for, and each payer's chains.

Correctness does not depend on this process being the only writer. Triggers bump a
counter in the database (the chain epoch, migration 0003) on every change of members,
uplines, agency links, agents, bots or policies (and the trust service bumps it when
an admin changes a remote domain's trust); a batch reads the counter in its own
transaction before it reads the cache, and a moved counter empties the cache. So a
payment pays the chains in force when its batch commits, whichever process changed them.
Only what was found is cached: a member that joins later is read on first use.
"""

from __future__ import annotations

from collections.abc import Iterable

from imserver.domain.policy import Policy
from imserver.store import domains, epoch, members, policies
from imserver.store.db import Conn
from imserver.store.records import MemberRecord, PayerChain


class ChainCache:
    """Per process; every method runs inside the caller's transaction."""

    def __init__(self, max_payers: int) -> None:
        self.max_payers = max_payers
        self._epoch: int | None = None
        self._policy: tuple[int, Policy] | None = None
        self._trusts: dict[str, str] | None = None
        self._merchants: dict[str, MemberRecord] = {}
        self._payers: dict[str, PayerChain] = {}
        # Figures for benchmarks and tests.
        self.hits = 0
        self.misses = 0
        self.resets = 0

    async def sync(self, conn: Conn) -> None:
        """Read the epoch (held until commit on PostgreSQL); drop everything if it moved."""
        now = await epoch.read(conn)
        if now != self._epoch:
            if self._epoch is not None:
                self.resets += 1
            self._policy = None
            self._trusts = None
            self._merchants.clear()
            self._payers.clear()
            self._epoch = now

    async def policy(self, conn: Conn) -> tuple[int, Policy]:
        """The newest policy and its version."""
        if self._policy is None:
            found = await policies.latest(conn)
            if found is None:
                raise RuntimeError("no policy stored: run `imserver migrate` and start the service")
            self._policy = found
        return self._policy

    async def trusts(self, conn: Conn) -> dict[str, str]:
        """The remote domains' trusts that admins set (domain -> trust)."""
        if self._trusts is None:
            self._trusts = await domains.stored_trusts(conn)
        return self._trusts

    def merchant_of(self, sender: str) -> MemberRecord | None:
        """The active merchant a sender was found to report for, if known."""
        return self._merchants.get(sender)

    def remember_merchant(self, sender: str, merchant: MemberRecord) -> None:
        """Keep what the authorisation found (only ever an allowed sender)."""
        self._merchants[sender] = merchant

    async def payers(self, conn: Conn, jids: Iterable[str], levels: int) -> dict[str, PayerChain]:
        """The payers among these JIDs that are members, with their chains."""
        out: dict[str, PayerChain] = {}
        missing: list[str] = []
        for jid in jids:
            chain = self._payers.get(jid)
            if chain is None:
                missing.append(jid)
            else:
                out[jid] = chain
        self.hits += len(out)
        if missing:
            self.misses += len(missing)
            loaded = await members.payer_chains(conn, missing, levels)
            out.update(loaded)
            if self.max_payers:
                self._keep(loaded)
        return out

    def _keep(self, loaded: dict[str, PayerChain]) -> None:
        if len(self._payers) + len(loaded) > self.max_payers:
            # Drop the oldest half at once: cheaper than ordering every hit (an LRU).
            for jid in list(self._payers)[: max(len(self._payers) // 2, len(loaded))]:
                del self._payers[jid]
        for jid, chain in list(loaded.items())[: self.max_payers]:
            self._payers[jid] = chain
